"""Typed configuration of a GeoSURGE model; serialized as ``config.json`` beside the weights."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..geo.hierarchy import PAPER_TAU_MAXES, PAPER_TAU_MIN
from . import backbones, geo_heads, segmenters
from .decisions import canonical_decision

FORMAT_VERSION = 1
#: config keys renamed since they were first written: section -> {old key: new key}; both are read
RENAMED_KEYS = {"fusion": {"seg_cells": "label_samples"}}


@dataclass
class BackboneConfig:
    """Which image encoder, and where its pretrained weights come from."""

    name: str = "efficientnet-lite0"  # key of the backbone registry: clip, efficientnet-lite0/1/2, efficientnet-lite-stack
    pretrained: str | None = None  # hub id or local directory (clip); None = the family's default source
    image_size: int | None = None  # None = the backbone's native size
    trainable_blocks: int = 1  # encoder blocks / stages left trainable, counted from the top


@dataclass
class FusionConfig:
    """Semantic fusion module (paper §III-B, Table VIII defaults)."""

    enabled: bool = True
    num_blocks: int = 3
    query_dim: int = 128  # width of the semantic tokens and of each block's query latent
    latent_dim: int = 64  # shared key/value latent (MLA-style compression)
    num_heads: int = 16
    width: int | None = None  # fusion width; None = the backbone's hidden width (paper); smaller projects tokens down
    mlp_ratio: float = 4.0
    num_classes: int = 151  # ADE20K 150 classes + "other" (label 0)
    label_samples: int | None = None  # label-map samples per patch side; None = the patch size in pixels (paper)
    dropout: float = 0.0


@dataclass
class GeoConfig:
    """Geographic representation: the cells (hierarchy levels) and the head that scores them."""

    embed_dim: int = 768
    init_temperature: float = 0.07
    tau_min: int = PAPER_TAU_MIN
    tau_maxes: list[int] = field(default_factory=lambda: list(PAPER_TAU_MAXES))
    #: "embeddings": one learned table per level, InfoNCE (paper); "linear": a plain classification head
    #: over the finest cells, trained with cross-entropy (the paper's Table VI ablation)
    head: str = "embeddings"
    #: weight of log(training frequency of the cell) added once to each cell's product score at inference. InfoNCE
    #: with in-batch negatives learns log p(cell|x) - log p(cell) + const, so 1.0 restores the posterior;
    #: 0.0 is the paper's plain product of per-level softmaxes.
    prior_weight: float = 0.0
    #: the answer's rule when the checkpoint has no fitted posterior (geosurge.model.decisions), applied to the
    #: normalized product scores of the finest cells: "argmax" = the best finest cell (paper; "map" in older
    #: configs), "median", "within:R"
    decision: str = "argmax"
    #: MP-16 cell statistics (``cells_50_*.csv``) whose 4.7 M photos define the cells, so the hierarchy covers
    #: where Flickr photos are (None: the training photos, as the paper on MP-16); the taus then count MP-16 photos
    partition: str | None = None

    def __post_init__(self) -> None:
        self.decision = canonical_decision(self.decision, "geo.decision")


@dataclass
class PosteriorConfig:
    """How the visual evidence and the photo-density prior make a posterior over the finest cells.

    log p(f | x) = prior_weight * log prior(f) + sum_l w_l * r_l(cell of f at level l) + const, where r_l is the model's
    log-likelihood ratio at level l (its softmax over the cells that had training photos, divided by
    ``train_correction`` x their training frequency + (1 - ``train_correction``) x uniform), and 0 for cells
    without training photos (no evidence). ``level_weights`` (1 / temperature) and the calibration maps are
    fitted by photographer-grouped cross-validation (``benchmarks/crossval.py``).
    """

    enabled: bool = False  # False: the paper's product of per-level softmaxes
    level_weights: list[float] | None = None  # per level, >= 0; None = all 1
    train_correction: float = 0.0  # 0: InfoNCE scores are likelihood ratios already; 1: a classifier's posterior
    prior_weight: float = 1.0  # exponent of the MP-16 prior (1: as counted; < 1 flattens it towards uniform cells)
    decision: str = "argmax"  # the answer's rule (geosurge.model.decisions): "argmax", "median" or "within:R"
    #: per decision rule and radius (key "argmax@750", "within:750@2500") a monotone map [[raw...], [calibrated...]]
    #: from the posterior mass within R km of the answer to the chance the truth is there (grouped cross-validation)
    calibration: dict[str, list[list[float]]] = field(default_factory=dict)
    cv: dict[str, Any] = field(default_factory=dict)  # how the fit was made (folds, figures), for the record

    def __post_init__(self) -> None:
        self.decision = canonical_decision(self.decision, "posterior.decision")
        if self.level_weights is not None and any(not (w >= 0) for w in self.level_weights):
            raise ValueError(f"posterior.level_weights must be >= 0, got {self.level_weights}")
        if not self.prior_weight >= 0:
            raise ValueError(f"posterior.prior_weight must be >= 0, got {self.prior_weight}")
        if not 0.0 <= self.train_correction <= 1.0:
            raise ValueError(f"posterior.train_correction must be in [0, 1], got {self.train_correction}")
        self.calibration = {_calibration_key(key): knots for key, knots in self.calibration.items()}
        for key, knots in self.calibration.items():
            r = key.rpartition("@")[2]
            if not r.replace(".", "", 1).isdigit() or float(r) <= 0 or len(knots) != 2 or len(knots[0]) != len(knots[1]) or not knots[0]:
                raise ValueError(f"posterior.calibration[{key!r}] (key DECISION@R) must be [[raw...], [calibrated...]] of equal, non-zero length")
            x, y = (list(map(float, k)) for k in knots)
            if any(b < a for a, b in zip(x, x[1:])) or any(b < a for a, b in zip(y, y[1:])) or min(y) < 0 or max(y) > 1:
                raise ValueError(f"posterior.calibration[{key!r}] is not a non-decreasing map into [0, 1]")


def _calibration_key(key: str) -> str:
    """``DECISION@R`` with the decision written canonically (the key the posterior looks up)."""
    dec, at, r = key.rpartition("@")
    if not at:
        raise ValueError(f"posterior.calibration key {key!r} must be DECISION@R")
    return f"{canonical_decision(dec, f'the decision of posterior.calibration[{key!r}]')}@{r}"


@dataclass
class SegmenterConfig:
    """Which segmenter produces the ADE20K label maps the fusion module reads."""

    name: str = "deeplab-ade20k"  # deeplab-ade20k (offline default) or oneformer (paper)
    path: str | None = None  # model file / hub id / directory; None = the segmenter's default
    #: side of the square DeepLab runs at (None = the model file's own, 513). Its cost grows with the
    #: square of the side; labels follow the side, so training and inference must share it (it is part of
    #: the checkpoint, and of the label cache's name: see :meth:`cache_name`).
    input_size: int | None = None

    def cache_name(self) -> str:
        """Folder name for label maps made with this setting (``deeplab-ade20k``, ``deeplab-ade20k-385``)."""
        return self.name if self.input_size is None else f"{self.name}-{self.input_size}"


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    geo: GeoConfig = field(default_factory=GeoConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    posterior: PosteriorConfig = field(default_factory=PosteriorConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build from a dict (``config.json``, a training config): the one factory every read goes through.
        Unknown keys, and names no registry knows, are errors (naming the allowed ones); missing keys take defaults."""
        d = dict(d)
        version = d.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"config format_version {version} is not supported (expected {FORMAT_VERSION})")
        parts = {}
        for f in fields(cls):
            sub = _renamed(f.name, d.pop(f.name, {}) or {})
            sub_cls = {"backbone": BackboneConfig, "fusion": FusionConfig, "geo": GeoConfig, "segmenter": SegmenterConfig,
                       "posterior": PosteriorConfig}[f.name]
            known = {x.name for x in fields(sub_cls)}
            unknown = set(sub) - known
            if unknown:
                raise ValueError(f"unknown {f.name} config key(s): {sorted(unknown)}")
            parts[f.name] = sub_cls(**sub)
        if d:
            raise ValueError(f"unknown model config section(s): {sorted(d)}")
        return check_names(cls(**parts))


def check_names(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` when every part it names is registered (backbone, geographic head, segmenter), else a
    ``ValueError`` naming the field and the allowed names. The registries are asked here, once, not by the
    dataclasses: the registries' modules use these config types, and a check inside them would be an import cycle."""
    backbones.BACKBONES.check(cfg.backbone.name, "backbone.name")
    geo_heads.GEO_HEADS.check(cfg.geo.head, "geo.head")
    segmenters.SEGMENTERS.check(cfg.segmenter.name, "segmenter.name")
    return cfg


def _renamed(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with keys renamed since (see ``RENAMED_KEYS``), so older config.json files still load."""
    values = dict(values)
    for old, new in RENAMED_KEYS.get(section, {}).items():
        if old in values:
            if new in values:
                raise ValueError(f"{section}.{old} is the old name of {section}.{new}: give one of them, not both")
            values[new] = values.pop(old)
    return values
