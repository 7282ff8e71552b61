"""DeepLab's own scene features: the label map and the pooled encoder output of one segmentation pass.

DeepLabV3's image-pooling branch already averages MobileNetV2's last feature map (320 channels, trained on
ADE20K scenes) over the whole photo. The file computes that vector on every call and throws it away with
everything but the label map; here it is made a second output of the graph (in memory, the file is never
changed), so the fusion's segmentation pass yields a scene vector at no extra cost.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ...data.transforms import resize_label_map
from ..config import SegmenterConfig
from ._tflite import _pack
from .deeplab import DeepLabADE20K

#: the global average of MobileNetV2's output (the ASPP image-pooling branch's input): (1, 1, 1, 320)
SCENE_TENSOR = "AvgPool2D/AvgPool"


def expose_tensor(model: bytes, name: str) -> bytes:
    """The same graph with the tensor called ``name`` appended to the graph's outputs (existing outputs keep
    their order, so output 0 is still the logits)."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(model, 0)
    sg = m.subgraphs[0]
    found = [i for i, t in enumerate(sg.tensors) if (t.name.decode() if isinstance(t.name, bytes) else t.name) == name]
    if len(found) != 1:
        raise ValueError(f"expected one tensor named {name!r} in the segmenter graph, found {len(found)}")
    if found[0] not in list(sg.outputs):
        sg.outputs = np.append(np.asarray(sg.outputs, np.int32), np.int32(found[0]))
    return _pack(m, len(model))


class DeepLabScene(DeepLabADE20K):
    """:class:`DeepLabADE20K` whose pass also returns the pooled encoder vector (``scene_dim`` floats)."""

    def __init__(self, cfg: SegmenterConfig, num_threads: int | None = None):
        super().__init__(cfg, num_threads)
        from ai_edge_litert.interpreter import Interpreter

        self._model = expose_tensor(self._model, SCENE_TENSOR)
        self._interp = Interpreter(model_content=self._model, num_threads=self.num_threads)
        self._interp.allocate_tensors()
        outputs = self._interp.get_output_details()
        self._out = outputs[0]["index"]
        [scene] = [o for o in outputs if o["name"] == SCENE_TENSOR]
        self._scene = scene["index"]
        self.scene_dim = int(scene["shape"][-1])

    def labels_and_scene(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) uint8 labels, as ``__call__`` gives them, and the (scene_dim,) float32 scene vector."""
        x = np.asarray(image.convert("RGB").resize((self.input_size, self.input_size), Image.BILINEAR), np.float32)
        with self._lock:
            self._interp.set_tensor(self._in, (x / 127.5 - 1.0)[None])
            self._interp.invoke()
            labels = self._interp.tensor(self._out)()[0].argmax(-1).astype(np.uint8)
            scene = self._interp.get_tensor(self._scene).reshape(-1).copy()
        return resize_label_map(labels, image.size), scene
