"""Geographic heads, looked up by name (``create_geo_head``; ``GeoConfig.head`` names one)."""
from . import embeddings, linear  # noqa: F401  (register the families)
from ._registry import GEO_HEADS, GeoHead, HeadScoring, create_geo_head, list_geo_heads, register_geo_head
from .embeddings import GeoEmbeddings
from .linear import LinearGeoHead

__all__ = ["GEO_HEADS", "GeoEmbeddings", "GeoHead", "HeadScoring", "LinearGeoHead", "create_geo_head", "list_geo_heads", "register_geo_head"]
