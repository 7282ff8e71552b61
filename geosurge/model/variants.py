"""A checkpoint's variants and its training metadata, in one place.

A shipped checkpoint is a *pair*: ``fusion/`` (semantic fusion) and ``rgb/`` (RGB only) checkpoint
directories side by side, which the app's fusion toggle compares; a single checkpoint directory holds one
of them. The trainer writes the pair (``run.variants``), the predictor, the evaluation and the app read it,
and all of them learn here which variants exist, what they are called, where each one's directory is,
and where its training photos were.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.records import default_image_root
from .checkpoint import CONFIG, CheckpointError, read_config
from .config import ModelConfig

FUSION = "fusion"
RGB = "rgb"


@dataclass(frozen=True)
class VariantSpec:
    """One variant of a checkpoint pair."""

    name: str  # its sub-directory in a pair and its key everywhere (``Predictor.variants``, results' "model")
    fusion: bool  # its ``model.fusion.enabled``
    label: str  # short, for a map legend: "<label> prediction"
    description: str  # for a sentence: "Model: <description>"


#: Every variant, in display order: the app shows the first one present as its answer.
VARIANTS: dict[str, VariantSpec] = {
    FUSION: VariantSpec(FUSION, True, "fusion", "with semantic fusion"),
    RGB: VariantSpec(RGB, False, "RGB-only", "RGB only (no fusion)"),
}

#: The ``training`` section of ``config.json`` (what the trainer passes to ``save_checkpoint``) names
#: under this key the folder its photos were read from: the reference index's ids are relative to it.
TRAINING_IMAGES = "images"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def get_variant(name: str) -> VariantSpec:
    """The variant called ``name`` (``ValueError`` naming the choices)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}: choose from {', '.join(map(repr, VARIANTS))}")
    return VARIANTS[name]


def variant_name(fusion: bool) -> str:
    """The name of the variant with (``True``) or without semantic fusion."""
    return FUSION if fusion else RGB


def variant_dirs(checkpoint: str | Path) -> dict[str, Path]:
    """Every variant directory of a checkpoint, keyed by variant name in :data:`VARIANTS` order.

    A checkpoint directory (``config.json``) is one variant, the one its config describes; otherwise the
    ``fusion/`` and ``rgb/`` sub-directories that hold a checkpoint are a pair, and each must hold the
    variant it is named after."""
    path = Path(checkpoint)
    if (path / CONFIG).is_file():
        return {variant_name(_fusion_enabled(path)): path}
    found = {name: path / name for name in VARIANTS if (path / name / CONFIG).is_file()}
    if not found:
        raise FileNotFoundError(f"{path} holds no GeoSURGE checkpoint ({CONFIG}, or {'/ or '.join(VARIANTS)}/ sub-directories)")
    for name, directory in found.items():
        holds = variant_name(_fusion_enabled(directory))
        if holds != name:
            raise CheckpointError(f"{directory} holds the {holds!r} variant (model.fusion.enabled is "
                                  f"{VARIANTS[holds].fusion}): move it to {path / holds}")
    return found


def variant_dir(checkpoint: str | Path, name: str) -> Path:
    """The directory of variant ``name``: a checkpoint directory as it is (whichever variant it holds), or
    that member of a pair."""
    path = Path(checkpoint)
    if (path / CONFIG).is_file():
        return path
    sub = path / get_variant(name).name
    if (sub / CONFIG).is_file():
        return sub
    raise FileNotFoundError(f"{path} is not a checkpoint (no {CONFIG}) nor a pair with a {sub.name}/ checkpoint")


def _fusion_enabled(directory: Path) -> bool:
    return ModelConfig.from_dict(read_config(directory)["model"]).fusion.enabled


def training_metadata(images: str | Path | None) -> dict[str, Any]:
    """What the trainer records of its data in a checkpoint's ``training`` section: the folder its photos
    were read from, absolute (``None`` when they came from shards, whose ids are no file names)."""
    return {TRAINING_IMAGES: str(Path(images).resolve()) if images is not None else None}


def training_images(checkpoint: str | Path) -> Path | None:
    """The folder of a checkpoint's training photos (the nearest-reference image comes from there), from
    the first variant whose config says; ``None`` when none does, the folder is not here, or the checkpoint
    is not a local directory (a Hub repo id)."""
    try:
        directories = variant_dirs(checkpoint).values()
    except FileNotFoundError:
        return None
    for directory in directories:
        training = read_config(directory).get("training", {})
        if TRAINING_IMAGES in training:
            root = _in_repo(training[TRAINING_IMAGES]) if training[TRAINING_IMAGES] else None
        else:
            root = _images_from_training_config(training.get("config", {}).get("data", {}))
        if root is not None:
            return root if root.is_dir() else None
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
