"""Image encoders, looked up by name (``create_backbone``)."""
from . import clip, efficientnet_lite, stack  # noqa: F401  (register the families)
from ._registry import Backbone, create_backbone, list_backbones, register_backbone

__all__ = ["Backbone", "create_backbone", "list_backbones", "register_backbone"]
