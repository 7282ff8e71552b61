"""CLIP vision transformer through ``transformers`` (the paper's backbone: ViT-L/14 at 336 px)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ...data.transforms import Preprocess
from ._registry import Backbone, register_backbone

if TYPE_CHECKING:  # annotations only: config.py checks names against this registry, so no runtime import back
    from ..config import BackboneConfig

PAPER_CLIP = "openai/clip-vit-large-patch14-336"
# OpenAI CLIP normalization (what CLIPImageProcessor uses for every OpenAI checkpoint).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Architecture of the paper's checkpoint, so that random-weight runs (benchmarks, tests) need no download.
_KNOWN_CONFIGS = {
    PAPER_CLIP: dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, hidden_act="quick_gelu", projection_dim=768,
    ),
}


@register_backbone("clip")
class CLIPBackbone(Backbone):
    """Tokens: the encoder output (CLS + patches), without post-layernorm or projection."""

    def __init__(self, cfg: BackboneConfig, pretrained: bool = True):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        self.trainable_blocks = cfg.trainable_blocks

        source = cfg.pretrained or PAPER_CLIP
        if pretrained:
            try:
                self.model = CLIPVisionModel.from_pretrained(source)
            except (OSError, ValueError) as e:  # ValueError: huggingface_hub rejects a malformed repo id
                raise OSError(
                    f"could not load CLIP weights from {source!r} ({e}). Without internet access, pass a local "
                    "directory saved with save_pretrained() as backbone.pretrained."
                ) from None
        else:
            if source in _KNOWN_CONFIGS:
                vcfg = CLIPVisionConfig(**_KNOWN_CONFIGS[source])
            else:
                vcfg = CLIPVisionConfig.from_pretrained(source)
            self.model = CLIPVisionModel(vcfg)
        vcfg = self.model.config
        if cfg.image_size not in (None, vcfg.image_size):
            raise ValueError(f"CLIP {source} takes {vcfg.image_size} px images, not {cfg.image_size}")
        self.hidden_size = vcfg.hidden_size
        self.patch_size = vcfg.patch_size
        mean, std = _processor_stats(source) if pretrained else (CLIP_MEAN, CLIP_STD)
        self.preprocess = Preprocess(vcfg.image_size, mean, std)

    @property
    def _vision(self) -> nn.Module:
        # transformers 4 wraps the transformer in .vision_model; 5 does not
        return getattr(self.model, "vision_model", self.model)

    def trainable_modules(self, n_blocks: int) -> list[nn.Module]:
        layers = list(self._vision.encoder.layers)
        return layers[len(layers) - n_blocks :] if n_blocks > 0 else []

    def _split(self) -> int:
        return len(self._vision.encoder.layers) - max(0, self.trainable_blocks)

    def _run_layers(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for layer in self._vision.encoder.layers[start:stop]:
            out = layer(x, None)
            x = out[0] if isinstance(out, tuple) else out  # transformers 4 returns a tuple
        return x

    def forward_frozen(self, pixels: torch.Tensor) -> torch.Tensor:
        vm = self._vision
        x = vm.pre_layrnorm(vm.embeddings(pixels))
        return self._run_layers(x, 0, self._split())

    def forward_trainable(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._run_layers(hidden, self._split(), len(self._vision.encoder.layers))


def _processor_stats(source: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalization from the checkpoint's image processor config when it has one."""
    try:
        from transformers import CLIPImageProcessor

        proc = CLIPImageProcessor.from_pretrained(source)
        return tuple(proc.image_mean), tuple(proc.image_std)
    except (OSError, ValueError):
        return CLIP_MEAN, CLIP_STD
