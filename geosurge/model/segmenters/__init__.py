"""Semantic segmenters producing ADE20K label maps, looked up by name (``create_segmenter``)."""
from . import deeplab, oneformer  # noqa: F401  (register)
from ._registry import SEGMENTERS, Segmenter, SegmenterUnavailable, create_segmenter, list_segmenters, path_from_env, register_segmenter
from .palette import ADE20K_CLASSES, NUM_LABELS, PALETTE, colorize, label_name, main_classes, overlay

__all__ = [
    "SEGMENTERS",
    "ADE20K_CLASSES", "NUM_LABELS", "PALETTE", "Segmenter", "SegmenterUnavailable", "colorize",
    "create_segmenter", "label_name", "list_segmenters", "main_classes", "overlay", "path_from_env", "register_segmenter",
]
