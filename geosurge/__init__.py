"""GeoSURGE: worldwide photo geolocalization (semantic fusion + a hierarchy of geographic embeddings)."""
__version__ = "0.1.0"
