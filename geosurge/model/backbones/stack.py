"""Feature stack: several backbones' final feature maps, pooled to one grid and concatenated channel-wise.

One registered backbone that wraps others, so the fusion module and the heads see a single wider backbone.
The stack takes crops at its largest member's size; each member sees them resized to its own native size
(its ImageNet resolution), and its stride-32 map is average-pooled to the smallest member's grid.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ...data.transforms import Preprocess
from ._registry import Backbone, create_backbone, register_backbone

if TYPE_CHECKING:  # annotations only: config.py checks names against this registry, so no runtime import back
    from ..config import BackboneConfig

#: stack name -> member backbone names (each must be registered and share one pixel normalization)
STACKS = {"efficientnet-lite-stack": ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")}


@register_backbone(*STACKS)
class FeatureStack(Backbone):
    """Tokens: the members' maps at a common grid, concatenated (``hidden_size`` = the sum of theirs), plus
    their mean as CLS. ``trainable_blocks`` applies to every member."""

    def __init__(self, cfg: BackboneConfig, pretrained: bool = True):
        super().__init__()
        if cfg.pretrained:
            raise ValueError(f"{cfg.name} loads each member's own weights: backbone.pretrained must be unset")
        self.trainable_blocks = cfg.trainable_blocks
        members = [create_backbone(type(cfg)(name, trainable_blocks=cfg.trainable_blocks), pretrained) for name in STACKS[cfg.name]]
        natives = [m.image_size for m in members]
        size = cfg.image_size or max(natives)
        # Members keep their ratio to the largest native size when the stack runs at another size.
        self.member_sizes = [round(n * size / max(natives)) for n in natives]
        self.members = nn.ModuleList(members)
        norms = {(m.preprocess.mean, m.preprocess.std) for m in members}
        if len(norms) != 1:
            raise ValueError(f"{cfg.name}: the members normalize pixels differently ({sorted(norms)})")
        [(mean, std)] = norms
        self.preprocess = Preprocess(size, mean, std)
        with torch.no_grad():  # each member's frozen output: channels and side at its input size
            shapes = [m.eval().forward_frozen(torch.zeros(1, 3, s, s)).shape[1:] for m, s in zip(members, self.member_sizes)]
        self.frozen_channels = [int(s[0]) for s in shapes]
        self.grid = min(int(s[-1]) for s in shapes)
        self.patch_size = size // self.grid
        if size // self.patch_size != self.grid:
            raise ValueError(f"{cfg.name}: image_size {size} is too small for a {self.grid}-cell grid")
        self.hidden_size = sum(m.hidden_size for m in members)

    def freeze(self, n_blocks: int) -> None:
        for m in self.members:
            m.freeze(n_blocks)
        super().freeze(n_blocks)

    def trainable_modules(self, n_blocks: int) -> list[nn.Module]:
        return [t for m in self.members for t in m.trainable_modules(n_blocks)]

    def forward_frozen(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._pooled([m.forward_frozen(x) for m, x in zip(self.members, self._member_pixels(pixels))])

    def infer_frozen(self, pixels: torch.Tensor) -> torch.Tensor:
        """Each member through its own attached runtime: ONNX has no antialiased resize, so the stack as a
        whole does not export, while each member does (the resize and pooling stay in torch)."""
        return self._pooled([m.infer_frozen(x) for m, x in zip(self.members, self._member_pixels(pixels))])

    def runtime_parts(self) -> list[Backbone]:
        return list(self.members)

    def _member_pixels(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """The crops resized to each member's native size."""
        return [pixels if pixels.shape[-1] == s else F.interpolate(pixels, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
                for s in self.member_sizes]

    def _pooled(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """The members' maps average-pooled to the common grid, concatenated channel-wise."""
        return torch.cat([m if m.shape[-1] == self.grid else F.adaptive_avg_pool2d(m, self.grid) for m in maps], dim=1)

    def forward_trainable(self, hidden: torch.Tensor) -> torch.Tensor:
        maps = []
        for m, part in zip(self.members, hidden.split(self.frozen_channels, dim=1)):
            cells = m.forward_trainable(part)[:, 1:]  # (B, g*g, C): the member's CLS is dropped, the stack makes its own
            maps.append(cells)
        cells = torch.cat(maps, dim=-1)
        return torch.cat([cells.mean(dim=1, keepdim=True), cells], dim=1)
