"""The ``geosurge`` command line: one sub-module per command, registered below."""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> module in geosurge.cli; each module has ``add_arguments(parser)`` and ``run(args) -> int``.
# Command modules keep heavy imports (torch, transformers) inside run(), so `geosurge --help` stays instant.
COMMANDS: dict[str, tuple[str, str]] = {
    "partition": ("partition", "build the S2 partition hierarchy from a CSV of coordinates"),
    "predict": ("predict", "geolocate photos, files or folders (the embedded checkpoint by default)"),
    "app": ("app", "serve the demo in the browser (http://127.0.0.1:7860)"),
    "segment": ("segment", "precompute ADE20K label maps for training"),
    "shards": ("shards", "pack images, coordinates and label maps into webdataset shards"),
    "train": ("train", "train a model from a YAML config"),
    "evaluate": ("evaluate", "accuracy of checkpoints on a CSV of geotagged photos"),
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="geosurge",
        description="GeoSURGE: worldwide photo geolocalization with semantic fusion and a hierarchy of geographic embeddings.",
    )
    parser.add_argument("--version", action="version", version=f"geosurge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(f".{module}", __name__)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geosurge`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        from ..runtime import configure_threads

        configure_threads()  # every command: torch's default threads cost up to 6x on shared 2-core machines
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as e:
        if getattr(args, "json", False):
            import json

            print(json.dumps({"error": f"{e}", "command": args.command}), file=sys.stderr)
        else:
            print(f"geosurge {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
