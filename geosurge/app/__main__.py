"""``python -m geosurge.app``: serve the demo (``--help`` for options)."""
import sys

from .server import main

sys.exit(main())
