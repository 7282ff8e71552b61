"""``python -m geosurge`` is the ``geosurge`` command."""
import sys

from .cli import main

sys.exit(main())
