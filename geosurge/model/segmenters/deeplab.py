"""DeepLabV3 + MobileNetV2 trained on ADE20K, as a TFLite model run by ``ai-edge-litert`` (offline default)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ...data.transforms import resize_label_map
from ._registry import Segmenter, SegmenterUnavailable, register_segmenter
from ._tflite import fuse_dilated_convolutions, set_input_size

if TYPE_CHECKING:  # annotations only: config.py checks names against this registry, so no runtime import back
    from ..config import SegmenterConfig

ENV_VAR = "GEOSURGE_DEEPLAB"
_RELATIVE = Path("models/deeplabv3-mobilenetv2-ade20k/model.tflite")


def default_path() -> Path | None:
    """``$GEOSURGE_DEEPLAB``, else ``shared/`` beside the repository or the working directory."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    here = Path(__file__).resolve()
    candidates = [p.parent / "shared" / _RELATIVE for p in here.parents[:5]]
    candidates += [Path.cwd().parent / "shared" / _RELATIVE, Path.cwd() / "shared" / _RELATIVE]
    return next((c for c in candidates if c.is_file()), None)


@register_segmenter("deeplab-ade20k")
class DeepLabADE20K(Segmenter):
    """Labels at image resolution. The photo is resized to a square of ``cfg.input_size`` (default the
    file's 513) without keeping its aspect, as the model was exported to expect."""

    name = "deeplab-ade20k"
    env_var = ENV_VAR

    def __init__(self, cfg: SegmenterConfig, num_threads: int | None = None, fuse: bool = True):
        """``fuse=False`` runs the file's own atrous-convolution chains (for benchmarks and tests)."""
        path = Path(cfg.path) if cfg.path else default_path()
        if path is None or not path.is_file():
            raise SegmenterUnavailable(
                f"the DeepLab ADE20K model file was not found ({path or 'shared/' + str(_RELATIVE)}); "
                f"set ${ENV_VAR} or the segmenter path to model.tflite"
            )
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise SegmenterUnavailable("the DeepLab segmenter needs the ai-edge-litert package (pip install ai-edge-litert)") from None
        self.path = path
        if cfg.input_size is not None and not 65 <= cfg.input_size <= 2049:
            raise ValueError(f"segmenter input_size must be in [65, 2049] (8k + 1 is best, e.g. 385 or 513); got {cfg.input_size}")
        raw = path.read_bytes()
        self._model, self.fused_convolutions = raw, 0
        if fuse:
            try:
                self._model, self.fused_convolutions = fuse_dilated_convolutions(raw)
            except Exception:  # an unfamiliar graph: run it as it is
                pass
        if cfg.input_size is not None:
            # Not caught: labels at a size other than the one asked for would not match the checkpoint's.
            self._model = set_input_size(self._model, cfg.input_size)
        # model_content is not copied by the interpreter: self._model keeps it alive
        self.num_threads = num_threads or min(4, os.cpu_count() or 1)
        self._interp = Interpreter(model_content=self._model, num_threads=self.num_threads)
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]["index"]
        self.input_size = int(self._interp.get_input_details()[0]["shape"][1])
        self._out = self._interp.get_output_details()[0]["index"]
        self._lock = threading.Lock()  # one interpreter, not re-entrant: serialize concurrent callers
        self._batched = None  # (batch size, interpreter) of segment_batch

    def _pixels(self, image: Image.Image) -> np.ndarray:
        x = np.asarray(image.convert("RGB").resize((self.input_size, self.input_size), Image.BILINEAR), np.float32)
        return x / 127.5 - 1.0

    def __call__(self, image: Image.Image) -> np.ndarray:
        x = self._pixels(image)
        with self._lock:
            self._interp.set_tensor(self._in, x[None])
            self._interp.invoke()
            # tensor() is a view of the interpreter's buffer: get_tensor() would copy 159 MB of
            # logits (513 x 513 x 151 floats) per image; the argmax is taken before the lock is released.
            labels = self._interp.tensor(self._out)()[0].argmax(-1).astype(np.uint8)
        return resize_label_map(labels, image.size)

    def segment_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """One invoke for all ``images`` (the input's batch dimension resized): the same label maps as one
        at a time (tested). Logits take 90 MB per photo at 385 px (159 MB at 513): callers keep batches small."""
        if len(images) <= 1:
            return [self(im) for im in images]
        x = np.stack([self._pixels(im) for im in images])
        with self._lock:
            interp = self._batch_interpreter(len(images))
            interp.set_tensor(self._in, x)
            interp.invoke()
            logits = interp.tensor(self._out)()
            labels = [logits[i].argmax(-1).astype(np.uint8) for i in range(len(images))]
        return [resize_label_map(lab, im.size) for lab, im in zip(labels, images)]

    def _batch_interpreter(self, batch: int):
        """An interpreter whose input takes ``batch`` photos; the last one is kept (a run uses one size)."""
        if self._batched is None or self._batched[0] != batch:
            from ai_edge_litert.interpreter import Interpreter

            self._batched = None  # free the previous buffers first
            interp = Interpreter(model_content=self._model, num_threads=self.num_threads)
            interp.resize_tensor_input(self._in, [batch, self.input_size, self.input_size, 3], strict=False)
            interp.allocate_tensors()
            self._batched = (batch, interp)
        return self._batched[1]
