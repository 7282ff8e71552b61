"""Where the checkpoint pair shipped inside the package lives: the default of every entry point.

Its own module, free of torch, so that what only needs the path (the command line's flags and ``--help``)
loads in a fraction of a second instead of importing the model.
"""
from __future__ import annotations

from pathlib import Path

#: The checkpoint pair shipped inside the package (``configs/demo.yaml``): the default everywhere.
EMBEDDED_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "geosurge-lite-stack"
