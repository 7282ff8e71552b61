"""Segmenter registry: each produces an ADE20K label map (0 = other, k = class k) at image resolution."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..registry import Registry

if TYPE_CHECKING:  # annotations only: config.py checks names against this registry, so no runtime import back
    from ..config import SegmenterConfig


class SegmenterUnavailable(RuntimeError):
    """The segmenter cannot run here (model file or package missing); the message says why."""


class Segmenter:
    name: str = ""
    #: environment variable naming the model file; it wins over the checkpoint's own (see ``path_from_env``)
    env_var: str | None = None

    def __call__(self, image: Image.Image) -> np.ndarray:
        """(H, W) uint8 labels in [0, 150] for an RGB image of size (W, H)."""
        raise NotImplementedError

    def segment_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Label maps of several images, the same as one at a time; segmenters that run a batch per
        forward override it (``geosurge segment --batch-size``)."""
        return [self(im) for im in images]


SEGMENTERS: Registry[Segmenter] = Registry("segmenter")
#: class decorator: ``@register_segmenter("deeplab-ade20k")``; the class takes ``(cfg: SegmenterConfig)``
register_segmenter = SEGMENTERS.register
list_segmenters = SEGMENTERS.names


def path_from_env(name: str) -> str | None:
    """The model path the named segmenter's environment variable gives (e.g. ``$GEOSURGE_DEEPLAB``), or None."""
    import os

    var = getattr(SEGMENTERS.find(name), "env_var", None)
    return os.environ.get(var) or None if var else None


def create_segmenter(cfg: SegmenterConfig) -> Segmenter:
    """Build the named segmenter; raises :class:`SegmenterUnavailable` with the reason when it cannot run."""
    return SEGMENTERS.get(cfg.name)(cfg)
