"""The two Gradio components the demo adapts: a photo input that lets bad uploads reach the handler, and an
output image that is safe to serve while the same picture is being produced again.

Imported only by ``build_demo``, so the rest of the app package stays free of Gradio.
"""
from __future__ import annotations

import os
from pathlib import Path

import gradio as gr
from gradio.processing_utils import encode_pil_to_bytes, hash_bytes
from PIL import Image

from ..files import atomic_write
from .uploads import UploadStore


def write_once(data: bytes, cache_dir: str | Path, name: str) -> str:
    """Store ``data`` content-addressed under ``cache_dir`` and return its path, never exposing a partial file.

    Gradio's own ``save_pil_to_cache`` rewrites ``<hash>/image.<fmt>`` in place on every request. Two users
    sending the same photo get the same hash, so the second request truncates the file while the first
    user's browser or client is still downloading it ("peer closed connection without sending complete
    message body"). Here an existing file is left alone (same hash, same bytes) and a new one is written
    under a temporary name and renamed into place, which readers see as all or nothing.
    """
    folder = Path(cache_dir) / hash_bytes(data)  # the folder Gradio would pick, so it finds the file as cached
    path = folder / name
    try:
        os.utime(path)  # Gradio's delete_cache ages files by time; this one was just handed out again
        return str(path.resolve())
    except FileNotFoundError:
        pass  # not there yet (or just aged out): write it
    folder.mkdir(parents=True, exist_ok=True)
    return str(atomic_write(path, data).resolve())


class PhotoInput(gr.Image):
    """gr.Image that hands every upload to the handler as an :class:`~geosurge.app.uploads.Upload`: the
    original bytes in memory, its EXIF GPS, the file on disk scrubbed of metadata. A ``data:`` URL obeys
    the same size limit as a file (Gradio's own path decodes it whatever its size), and unreadable files
    reach the handler, which explains them."""

    is_template = True  # rendered by the stock Image front end
    #: A class attribute, set by ``build_demo``: not an ``__init__`` argument (Gradio serializes those into the
    #: page's config) and not an instance attribute (an example click is preprocessed by a copy of the
    #: component rebuilt from its config, which would not have it). One demo per process.
    store: UploadStore | None = None

    def preprocess(self, payload):
        if payload is None:
            return None
        if self.store is None:
            raise RuntimeError("PhotoInput.store is not set (build_demo sets it)")
        if payload.url and payload.url.startswith("data:"):
            return self.store.from_data_url(payload.url, self.GRADIO_CACHE)
        if not payload.path:
            return None
        return self.store.from_file(payload.path, within=self.GRADIO_CACHE)  # never a file elsewhere


class ResultImage(gr.Image):
    """Output gr.Image whose PIL results are cached with :func:`write_once` (see there for the race it avoids)."""

    is_template = True

    def postprocess(self, value):
        if isinstance(value, Image.Image):
            try:
                data, fmt = encode_pil_to_bytes(value, self.format), self.format
            except (KeyError, ValueError):  # a format PIL cannot write: the fallback Gradio uses
                data, fmt = encode_pil_to_bytes(value, "png"), "png"
            value = write_once(data, self.GRADIO_CACHE, f"image.{fmt}")
        return super().postprocess(value)
