"""``geosurge app``: serve the demo (the same as ``python app.py`` / ``python -m geosurge.app``)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..app.settings import add_settings_arguments

    add_settings_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..app.server import serve
    from ..app.settings import settings_from_args

    return serve(settings_from_args(args))
