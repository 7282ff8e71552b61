"""A checkpoint's variants: which exist, what they are called, and what the trainer records of its photos.

A shipped checkpoint is a *pair*: ``fusion/`` (semantic fusion) and ``rgb/`` (RGB only) checkpoint
directories side by side, which the app's fusion toggle compares; a single checkpoint directory holds one
of them. The trainer writes the pair (``run.variants``); where each variant's directory is, and what is in
it, :class:`~geosurge.model.checkpoint_dir.CheckpointDir` answers.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def get_variant(name: str) -> VariantSpec:
    """The variant called ``name`` (``ValueError`` naming the choices)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}: choose from {', '.join(map(repr, VARIANTS))}")
    return VARIANTS[name]


def variant_name(fusion: bool) -> str:
    """The name of the variant with (``True``) or without semantic fusion."""
    return FUSION if fusion else RGB


def pick_variants(available: Iterable[str], want_fusion: bool) -> tuple[str, str | None]:
    """(the variant to answer with, another available one or None): the one asked for (with or without
    fusion) when it is available, else the first available in display order. ``ValueError`` when none is."""
    names = [n for n in VARIANTS if n in set(available)]
    if not names:
        raise ValueError("no variant of this checkpoint can run here")
    want = variant_name(want_fusion)
    primary = want if want in names else names[0]
    return primary, next((n for n in names if n != primary), None)


#: The repository root: a checkpoint records its photo folder relative to it when the folder lies beside it.
_REPO_ROOT = Path(__file__).resolve().parents[2]


def training_metadata(images: str | Path | None) -> dict[str, Any]:
    """What the trainer records of its data in a checkpoint's ``training`` section: the folder its photos
    were read from (``None`` when they came from shards, whose ids are no file names). A folder inside the
    repository's parent (``../shared`` beside a checkout) is written relative to the repository, so a checkpoint
    built in one clone finds its photos in another; anything else is written absolute."""
    if images is None:
        return {TRAINING_IMAGES: None}
    folder = Path(images).resolve()
    if folder.is_relative_to(_REPO_ROOT.parent):
        return {TRAINING_IMAGES: os.path.relpath(folder, _REPO_ROOT)}
    return {TRAINING_IMAGES: str(folder)}
