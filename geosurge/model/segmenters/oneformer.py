"""OneFormer (ADE20K, semantic task) through ``transformers``: the paper's segmenter."""
from __future__ import annotations

from typing import TYPE_CHECKING

import threading
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ._registry import Segmenter, SegmenterUnavailable, register_segmenter

if TYPE_CHECKING:  # annotations only: config.py checks names against this registry, so no runtime import back
    from ..config import SegmenterConfig

PAPER_ONEFORMER = "shi-labs/oneformer_ade20k_swin_large"


@register_segmenter("oneformer")
class OneFormerADE20K(Segmenter):
    name = "oneformer"

    def __init__(self, cfg: SegmenterConfig, device: str | torch.device | None = None):
        from transformers import OneFormerForUniversalSegmentation, OneFormerProcessor

        if cfg.input_size is not None:
            raise ValueError("segmenter input_size applies to deeplab-ade20k; OneFormer resizes as its processor config says")
        source = cfg.path or PAPER_ONEFORMER
        try:
            self.processor = OneFormerProcessor.from_pretrained(source)
            self.model = OneFormerForUniversalSegmentation.from_pretrained(source).eval()
        except (OSError, ValueError) as e:  # ValueError: huggingface_hub rejects a malformed repo id
            raise SegmenterUnavailable(
                f"could not load OneFormer from {source!r} ({e}); without internet access pass a local "
                "directory holding the model and processor (save_pretrained)"
            ) from None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self._lock = threading.Lock()

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.segment_batch([image])[0]

    @torch.no_grad()
    def segment_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """One forward per group of photos that the processor brings to the same size (no padding, so
        each label map is the one the photo gets alone; tested), in order."""
        images = [im.convert("RGB") for im in images]
        inputs = [self.processor(images=[im], task_inputs=["semantic"], return_tensors="pt") for im in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(tuple(x["pixel_values"].shape[-2:]), []).append(i)
        out: list[np.ndarray] = [None] * len(images)  # type: ignore[list-item]
        for members in groups.values():
            batch = {k: torch.cat([inputs[i][k] for i in members]).to(self.device) for k in inputs[members[0]]}
            with self._lock:
                res = self.model(**batch)
            for j, i in enumerate(members):
                out[i] = _labels(res.class_queries_logits[j : j + 1], res.masks_queries_logits[j : j + 1], images[i].size)
        return out


def _labels(class_logits: torch.Tensor, mask_logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(H, W) labels of one photo of ``size`` (W, H). Same arithmetic as OneFormer's
    post_process_semantic_segmentation (which needs torchvision): class probabilities (null class dropped)
    weight the sigmoid masks."""
    classes = class_logits.softmax(dim=-1)[..., :-1]
    masks = mask_logits.sigmoid()
    seg = torch.einsum("bqc,bqhw->bchw", classes, masks)
    seg = F.interpolate(seg, size=(size[1], size[0]), mode="bilinear", align_corners=False)
    # OneFormer's ADE20K ids are 0..149 (wall = 0); ours keep 0 for "other".
    return (seg[0].argmax(dim=0) + 1).to(torch.uint8).cpu().numpy()
