"""The one owner of a checkpoint directory: :class:`CheckpointDir` reads every ``config.json`` once and answers
which variants it holds, each variant's model, training counts, training photos, segmenter settings and
posterior, and writes a fitted posterior back.

A shipped checkpoint is a *pair*: ``fusion/`` and ``rgb/`` checkpoint directories side by side (their names
and labels: :mod:`geosurge.model.variants`); a single checkpoint directory holds one of them. The file layout
of one variant directory (config.json, model.safetensors, hierarchy, reference index, training counts) is
written and read by :mod:`geosurge.model.checkpoint`.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.records import default_image_root
from ..files import atomic_write
from ..geo.hierarchy import Hierarchy
from .checkpoint import (CONFIG, TRAIN_COUNTS, CheckpointError, load_checkpoint, load_training_counts, read_config,
                         resolve_checkpoint, save_training_counts, segmenter_source)
from .config import ModelConfig, PosteriorConfig, SegmenterConfig
from .posterior import Posterior
from .variants import TRAINING_IMAGES, VARIANTS, get_variant, variant_name
from .views import VIEW_SETS

_REPO_ROOT = Path(__file__).resolve().parents[2]


class VariantDir:
    """One variant's checkpoint directory, with its ``config.json`` as read once."""

    def __init__(self, path: Path, config: dict[str, Any]):
        self.path, self.config = path, config
        self.name = variant_name(self.model_config().fusion.enabled)

    def model_config(self) -> ModelConfig:
        """The variant's model config (a fresh, validated copy)."""
        return ModelConfig.from_dict(self.config["model"])

    @property
    def training(self) -> dict[str, Any]:
        """The ``training`` section: what the trainer recorded (data, counts, figures)."""
        return self.config.get("training", {})

    @property
    def inference_views(self) -> str:
        """The views a photo is encoded from unless asked otherwise (:data:`~geosurge.model.views.VIEWS`): those
        the variant was trained and cross-validated on when its training cached fixed views
        (``training.config.data.view_cache``), else the centre crop (random-crop training, or a config that
        does not say)."""
        data = self.training.get("config", {}).get("data", {})
        if not data.get("view_cache"):
            return "center"
        views = data.get("views")
        if views not in VIEW_SETS:
            raise CheckpointError(f"{self.path / CONFIG}: training.config.data.view_cache is set but its views are "
                                  f"{views!r}, not one of {', '.join(map(repr, VIEW_SETS))}")
        return views

    def load(self, device: str | torch.device = "cpu", model_overrides: dict[str, Any] | None = None):
        """(model in eval mode, hierarchy, reference index or None)."""
        model, hierarchy, reference, _ = load_checkpoint(self.path, device, model_overrides, config=self.config)
        return model, hierarchy, reference

    def training_counts(self) -> list[np.ndarray] | None:
        """Training photos per cell and level, or None (checkpoints written before the posterior)."""
        return load_training_counts(self.path)

    def posterior(self, hierarchy: Hierarchy, cfg: PosteriorConfig | None = None) -> Posterior | None:
        """The fitted posterior (``cfg``: settings overriding the stored ones), or None when it is not enabled
        (the paper's rule then)."""
        cfg = cfg or self.model_config().posterior
        if not cfg.enabled:
            return None
        counts = self.training_counts()
        if counts is None:
            raise FileNotFoundError(f"{self.path}: the posterior is enabled but its training counts ({TRAIN_COUNTS}) are missing")
        return Posterior(cfg, hierarchy, counts)

    def segmenter_config(self, explicit: str | None = None) -> SegmenterConfig:
        """The segmenter this variant was trained with, its model found as ``segmenter_source`` says."""
        seg = self.model_config().segmenter
        return SegmenterConfig(seg.name, segmenter_source(seg, explicit, self.path), seg.input_size)

    def write_posterior(self, cfg: PosteriorConfig, counts: Sequence[np.ndarray] | None = None) -> None:
        """Store a fitted posterior: ``model.posterior`` in config.json (validated on the way) and, when given,
        the training counts it divides by."""
        if counts is not None:
            save_training_counts(self.path, counts)
        config = json.loads(json.dumps(self.config))
        config["model"]["posterior"] = asdict(PosteriorConfig(**asdict(cfg)))
        ModelConfig.from_dict(config["model"])
        atomic_write(self.path / CONFIG, json.dumps(config, indent=2) + "\n")
        self.config = config

    def training_images(self) -> tuple[bool, Path | None]:
        """(whether the config says where its training photos were, that folder or None)."""
        training = self.training
        if TRAINING_IMAGES in training:
            return True, _in_repo(training[TRAINING_IMAGES]) if training[TRAINING_IMAGES] else None
        root = _images_from_training_config(training.get("config", {}).get("data", {}))
        return root is not None, root


class CheckpointDir:
    """A checkpoint directory or pair, read once: ``variants`` in display order (fusion first)."""

    def __init__(self, path: Path, variants: dict[str, VariantDir]):
        self.path, self.variants = path, variants

    @classmethod
    def read(cls, path: str | Path) -> "CheckpointDir":
        """The local directory ``path``; read again only when a config.json in it changed."""
        path = Path(path)
        configs = [path / CONFIG] if (path / CONFIG).is_file() else [path / n / CONFIG for n in VARIANTS]
        stamp = tuple((str(c), c.stat().st_mtime_ns, c.stat().st_size) for c in configs if c.is_file())
        return _read(path, stamp)

    @classmethod
    def open(cls, source: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
             local_files_only: bool = False) -> "CheckpointDir":
        """A local directory, or a Hugging Face Hub repo id fetched first (see ``resolve_checkpoint``)."""
        return cls.read(resolve_checkpoint(source, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only))

    def variant(self, name: str) -> VariantDir:
        """Variant ``name``: a single checkpoint directory whichever is asked for, else that member of the pair."""
        get_variant(name)
        if (self.path / CONFIG).is_file():
            return next(iter(self.variants.values()))
        if name in self.variants:
            return self.variants[name]
        raise FileNotFoundError(f"{self.path} is not a checkpoint (no {CONFIG}) nor a pair with a {name}/ checkpoint")

    def training_images(self) -> Path | None:
        """The folder of the training photos (the nearest reference's image comes from there): the first variant
        whose config says; None when none does or the folder is not on this machine."""
        for v in self.variants.values():
            says, root = v.training_images()
            if says:
                return root if root is not None and root.is_dir() else None
        return None


@lru_cache(maxsize=16)
def _read(path: Path, stamp: tuple) -> CheckpointDir:
    """Every variant of ``path``, each config.json parsed once (``stamp``: their names, times and sizes)."""
    if (path / CONFIG).is_file():
        v = VariantDir(path, read_config(path))
        return CheckpointDir(path, {v.name: v})
    found = {n: VariantDir(path / n, read_config(path / n)) for n in VARIANTS if (path / n / CONFIG).is_file()}
    if not found:
        raise FileNotFoundError(f"{path} holds no GeoSURGE checkpoint ({CONFIG}, or {'/ or '.join(VARIANTS)}/ sub-directories)")
    for name, v in found.items():
        if v.name != name:
            raise CheckpointError(f"{v.path} holds the {v.name!r} variant (model.fusion.enabled is "
                                  f"{VARIANTS[v.name].fusion}): move it to {path / v.name}")
    return CheckpointDir(path, found)


def training_images(checkpoint: str | Path) -> Path | None:
    """:meth:`CheckpointDir.training_images` of a local checkpoint; None for anything else (a Hub repo id)."""
    try:
        return CheckpointDir.read(checkpoint).training_images()
    except FileNotFoundError:
        return None


def _images_from_training_config(data: dict[str, Any]) -> Path | None:
    """Checkpoints exported before the trainer recorded ``images`` (the embedded one): the folder its
    training config names, or the one the records reader defaults to beside the training CSV."""
    if data.get("images"):
        return _in_repo(data["images"])
    if data.get("train_csv"):
        return default_image_root(_in_repo(data["train_csv"]))
    return None


def _in_repo(path: str | Path) -> Path:
    """Relative paths in a training config are relative to the repository it was run in (configs/*.yaml)."""
    path = Path(path)
    return path if path.is_absolute() else _REPO_ROOT / path
