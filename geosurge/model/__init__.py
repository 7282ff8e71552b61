"""The GeoSURGE model: backbones, segmenters, semantic fusion, geographic embeddings, inference, checkpoints.

The names below load on first use (PEP 562), so that a torch-free module of the package (``embedded``, the
shipped checkpoint's path that the command line's flags show) can be imported without torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module of this package that defines it
_EXPORTS = {"BackboneConfig": "config", "FusionConfig": "config", "GeoConfig": "config", "ModelConfig": "config",
            "SegmenterConfig": "config", "GeoSURGE": "geosurge"}
__all__ = ["BackboneConfig", "FusionConfig", "GeoConfig", "GeoSURGE", "ModelConfig", "SegmenterConfig"]

if TYPE_CHECKING:
    from .config import BackboneConfig, FusionConfig, GeoConfig, ModelConfig, SegmenterConfig
    from .geosurge import GeoSURGE


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
