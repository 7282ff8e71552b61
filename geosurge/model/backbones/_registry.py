"""Backbone registry: one family per module, each registering its names."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ...data.transforms import Preprocess
from ..registry import Registry

if TYPE_CHECKING:  # annotations only: config.py checks names against this registry, so no runtime import back
    from ..config import BackboneConfig


class Backbone(nn.Module):
    """An image encoder that returns a token sequence ``(B, 1 + N, hidden_size)``, CLS first.

    Subclasses set ``hidden_size``, ``patch_size`` (pixels per token side), ``preprocess`` and
    ``trainable_blocks`` (from the config) in their constructor, and implement ``trainable_modules``,
    ``forward_frozen`` and ``forward_trainable``; :meth:`freeze` then freezes everything else.
    The split lets training cache the frozen part's output once per view.
    """

    hidden_size: int
    patch_size: int
    preprocess: Preprocess
    #: encoder blocks / stages above the frozen/trainable split (the config's ``trainable_blocks``)
    trainable_blocks: int

    @property
    def image_size(self) -> int:
        return self.preprocess.image_size

    @property
    def grid_size(self) -> int:
        """Tokens per image side (N = grid_size ** 2)."""
        return self.image_size // self.patch_size

    def trainable_modules(self, n_blocks: int) -> list[nn.Module]:
        raise NotImplementedError

    def forward_frozen(self, pixels: torch.Tensor) -> torch.Tensor:
        """The frozen bottom of the network: its output depends on no trainable parameter."""
        raise NotImplementedError

    def forward_trainable(self, hidden: torch.Tensor) -> torch.Tensor:
        """The trainable top: ``forward_frozen`` output -> tokens ``(B, 1 + N, hidden_size)``."""
        raise NotImplementedError

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.forward_trainable(self.forward_frozen(pixels))

    #: the frozen part exported to a faster runtime (``onnx_runtime.attach_onnx``), used by ``infer_frozen``
    frozen_runtime = None

    def runtime_parts(self) -> list["Backbone"]:
        """The backbones whose frozen parts are exported to another runtime for this one: itself, unless it
        wraps others (a feature stack runs each member's export)."""
        return [self]

    def infer_frozen(self, pixels: torch.Tensor) -> torch.Tensor:
        """``forward_frozen`` at inference: through ``frozen_runtime`` when one is attached, the pixels are on
        the CPU and no gradient is wanted; torch (the reference) otherwise."""
        if self.frozen_runtime is not None and pixels.device.type == "cpu" and not torch.is_grad_enabled():
            return self.frozen_runtime(pixels)
        return self.forward_frozen(pixels)

    def freeze(self, n_blocks: int) -> None:
        """Freeze all parameters but those of the top ``n_blocks`` blocks/stages."""
        self.requires_grad_(False)
        self._frozen_eval = True
        self.trainable_blocks = n_blocks
        for m in self.trainable_modules(n_blocks):
            m.requires_grad_(True)

    def train(self, mode: bool = True) -> "Backbone":
        # Frozen parts behave as at inference (normalization statistics, no drop-connect): every module
        # whose parameters are all frozen stays in eval mode, so cached frozen outputs stay exact.
        super().train(mode)
        if mode and getattr(self, "_frozen_eval", False):
            for m in self.modules():
                params = list(m.parameters())
                if params and not any(p.requires_grad for p in params):
                    m.eval()
        return self


BACKBONES: Registry[Backbone] = Registry("backbone")
#: class decorator: ``@register_backbone("efficientnet-lite0", ...)``; the class takes ``(cfg, pretrained)``
register_backbone = BACKBONES.register
list_backbones = BACKBONES.names


def create_backbone(cfg: BackboneConfig, pretrained: bool = True) -> Backbone:
    """Build the backbone named by ``cfg`` (``pretrained=False``: random weights, same architecture)."""
    bb = BACKBONES.get(cfg.name)(cfg, pretrained)
    bb.freeze(cfg.trainable_blocks)
    return bb
