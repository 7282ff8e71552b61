"""OneFormer (ADE20K, semantic task) through ``transformers``: the paper's segmenter."""
from __future__ import annotations

from typing import TYPE_CHECKING

import threading

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

    @torch.no_grad()
    def __call__(self, image: Image.Image) -> np.ndarray:
        inputs = self.processor(images=[image.convert("RGB")], task_inputs=["semantic"], return_tensors="pt")
        with self._lock:
            out = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
        # Same arithmetic as OneFormer's post_process_semantic_segmentation (which needs torchvision):
        # class probabilities (null class dropped) weight the sigmoid masks.
        classes = out.class_queries_logits.softmax(dim=-1)[..., :-1]
        masks = out.masks_queries_logits.sigmoid()
        seg = torch.einsum("bqc,bqhw->bchw", classes, masks)
        seg = F.interpolate(seg, size=(image.height, image.width), mode="bilinear", align_corners=False)
        # OneFormer's ADE20K ids are 0..149 (wall = 0); ours keep 0 for "other".
        return (seg[0].argmax(dim=0) + 1).to(torch.uint8).cpu().numpy()
