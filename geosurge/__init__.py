"""GeoSURGE: worldwide photo geolocalization (semantic fusion + a hierarchy of geographic embeddings)."""
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import geosurge` stays light (no torch) until the Predictor is used.
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'geosurge' has no attribute {name!r}")
