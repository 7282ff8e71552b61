"""Typed configuration of a GeoSURGE model; serialized as ``config.json`` beside the weights."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

FORMAT_VERSION = 1


@dataclass
class BackboneConfig:
    """Which image encoder, and where its pretrained weights come from."""

    name: str = "efficientnet-lite0"  # key of the backbone registry: clip, efficientnet-lite0/1/2
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
    seg_cells: int | None = None  # label samples per patch side; None = the patch size in pixels (paper)
    dropout: float = 0.0


@dataclass
class GeoConfig:
    """Geographic representation: one embedding table per hierarchy level."""

    embed_dim: int = 768
    init_temperature: float = 0.07
    tau_min: int = 50
    tau_maxes: list[int] = field(default_factory=lambda: [25000, 10000, 5000, 2000, 1000, 750, 500])
    #: "embeddings": one learned table per level, InfoNCE (paper); "linear": a plain classification head
    #: over the finest cells, trained with cross-entropy (the paper's Table VI ablation)
    head: str = "embeddings"
    #: weight of log(training frequency of the cell) added once to each cell's product score at inference. InfoNCE
    #: with in-batch negatives learns log p(cell|x) - log p(cell) + const, so 1.0 restores the posterior;
    #: 0.0 is the paper's plain product of per-level softmaxes.
    prior_weight: float = 0.0
    #: the predicted point: "map" = centroid of the best finest cell (paper); "median" = the point of least
    #: expected distance under the normalized finest-cell scores (see HierarchicalScorer.locate)
    decision: str = "map"


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

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build from a dict (e.g. ``config.json``); unknown keys are an error, missing keys take defaults."""
        d = dict(d)
        version = d.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"config format_version {version} is not supported (expected {FORMAT_VERSION})")
        parts = {}
        for f in fields(cls):
            sub = d.pop(f.name, {}) or {}
            sub_cls = {"backbone": BackboneConfig, "fusion": FusionConfig, "geo": GeoConfig, "segmenter": SegmenterConfig}[f.name]
            known = {x.name for x in fields(sub_cls)}
            unknown = set(sub) - known
            if unknown:
                raise ValueError(f"unknown {f.name} config key(s): {sorted(unknown)}")
            parts[f.name] = sub_cls(**sub)
        if d:
            raise ValueError(f"unknown model config section(s): {sorted(d)}")
        return cls(**parts)
