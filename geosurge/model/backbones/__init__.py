"""Image encoders, looked up by name (``create_backbone``)."""
from . import clip, efficientnet_lite, stack  # noqa: F401  (register the families)
from ._registry import BACKBONES, Backbone, create_backbone, list_backbones, register_backbone

__all__ = ["BACKBONES", "Backbone", "create_backbone", "list_backbones", "register_backbone"]
