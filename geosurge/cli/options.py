"""Command-line options shared by several commands."""
from __future__ import annotations

import argparse


def add_views_argument(p: argparse.ArgumentParser) -> None:
    """``--views``: the crops whose features are averaged per photo (default None: each checkpoint's own)."""
    p.add_argument("--views", type=_views, default=None, metavar="VIEWS",
                   help="crops averaged per photo: center, five (four corners and centre) or ten (and their mirrors, the "
                        "paper's protocol); default: the checkpoint's own, the views it was trained and cross-validated on")


def _views(text: str) -> str:
    # Checked when given, against the one definition; imported here because it brings torch, which
    # `geosurge --help` must not wait for.
    from ..model.views import check_views

    try:
        return check_views(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
