"""The GeoSURGE model: backbones, segmenters, semantic fusion, geographic embeddings, inference, checkpoints."""
from .config import BackboneConfig, FusionConfig, GeoConfig, ModelConfig, SegmenterConfig
from .geosurge import GeoSURGE

__all__ = ["BackboneConfig", "FusionConfig", "GeoConfig", "GeoSURGE", "ModelConfig", "SegmenterConfig"]
