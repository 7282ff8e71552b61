"""``geosurge train``: train a model (or a fusion/rgb pair) from a YAML config."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="YAML training config (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its work directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=3e-4 (repeatable)")
    p.add_argument("--output", default=None, help="checkpoint directory (overrides run.output)")


def run(args: argparse.Namespace) -> int:
    from ..train.config import load_train_config
    from ..train.trainer import train

    overrides = list(args.overrides) + ([f"run.output={args.output}"] if args.output else [])
    cfg = load_train_config(args.config, overrides)
    train(cfg, resume=args.resume, command=_command(args))
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command that reproduces this run, for the record in the checkpoint."""
    parts = ["geosurge", "train", "--config", str(args.config)]
    parts += [f"--set {o}" for o in args.overrides] + ([f"--output {args.output}"] if args.output else [])
    return " ".join(parts + (["--resume"] if args.resume else []))
