"""Data: image loading and the preprocessing shared by training, evaluation and the app."""
from .images import ImageLoadError, load_image
from .transforms import Preprocess

__all__ = ["ImageLoadError", "Preprocess", "load_image"]
