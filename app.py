"""GeoSURGE demo: ``python app.py`` serves http://127.0.0.1:7860 (``--help`` for options).

The same as ``python -m geosurge.app`` or ``geosurge app``. On a Hugging Face Space (``SPACE_ID`` set) it
binds 0.0.0.0. The model is loaded once and stays resident (on the GPU when there is one).
"""
from __future__ import annotations

import sys

from geosurge.app.server import main

if __name__ == "__main__":
    sys.exit(main())
