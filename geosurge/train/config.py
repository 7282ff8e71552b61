"""Training configuration: typed sections read from a YAML file; defaults are the paper's (§IV)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..geo.metrics import THRESHOLDS_KM
from ..model.config import ModelConfig
from ..model.variants import VARIANTS
from ..model.views import VIEW_SETS

#: what ``run.val_metric`` may name: the validation report's scores (median_km and mean_km: lower is better)
VAL_METRICS = ("geoscore", "median_km", "mean_km", *(f"acc_{t:g}km" for t in THRESHOLDS_KM.values()))
#: the validation scores of which less is better (early stopping keeps the lowest)
LOWER_IS_BETTER = frozenset({"median_km", "mean_km"})


@dataclass
class HubDatasetConfig:
    """OpenStreetView-5M's layout on the Hugging Face Hub (``geosurge.data.osv5m``)."""

    repo: str = "osv5m/osv5m"  # dataset repository id
    split: str = "train"  # train.csv + images/train/*.zip (or test)
    shards: list[int] | None = None  # zip shards to use (00.zip = 0, ...); None = all of them (OSV-5M's train split: 5 M photos)
    revision: str | None = None  # branch, tag or commit; None = main

    def __post_init__(self):
        if not isinstance(self.repo, str) or self.repo.count("/") != 1:
            raise ValueError(f"data.hub.repo must be a Hub dataset id like 'osv5m/osv5m', not {self.repo!r}")
        if self.shards is not None and not all(isinstance(k, int) and k >= 0 for k in self.shards):
            raise ValueError(f"data.hub.shards must be shard numbers (0 for 00.zip, ...), not {self.shards!r}")


@dataclass
class DataConfig:
    train_csv: str | list[str] | None = None  # image,lat,lon rows (extra columns allowed); several CSVs are read as one list
    photos: str | None = None  # instead: a folder of geotagged photos (position from EXIF GPS; geosurge.data.photo_folder)
    hub: HubDatasetConfig | None = None  # instead: OSV-5M's layout on the Hugging Face Hub, e.g. {repo: osv5m/osv5m, shards: [0]}
    images: str | None = None  # image root the CSV's image column is relative to (default: the CSV's folder)
    val_csv: str | None = None  # validation rows; None = hold out ``val_fraction`` of the training rows
    val_images: str | None = None  # default: ``images``
    val_fraction: float = 0.01  # paper: a 1% hold-out
    shards: str | None = None  # webdataset tar shards instead of train_csv, e.g. "mp16/{000000..004661}.tar"
    msgpack: str | None = None  # MP-16 msgpack shards as GeoEstimation ships them (directory of *.msg or a glob)
    msgpack_meta: str | None = None  # their coordinates: mp16_places365.csv (IMG_ID, LAT, LON, ...)
    labels: str | None = None  # precomputed label maps (geosurge segment: PNG or chunk layout); required with fusion
    val_labels: str | None = None  # label maps of the validation photos when kept apart (default: labels)
    segment_missing: bool = False  # run the segmenter first for images without a label map
    view_cache: bool = False  # train from cached frozen-backbone outputs of fixed crops (small data)
    views: str = "ten"  # crops cached per image (geosurge.model.views.VIEW_SETS): ten, five, or center (one crop)
    cache_dir: str = ".cache/geosurge"
    num_workers: int = 4

    def __post_init__(self):
        if self.views not in VIEW_SETS:
            raise ValueError(f"data.views must be one of {sorted(VIEW_SETS)}, not {self.views!r}")
        if isinstance(self.hub, dict):
            unknown = set(self.hub) - {f.name for f in fields(HubDatasetConfig)}
            if unknown:
                raise ValueError(f"unknown data.hub key(s): {sorted(unknown)} (expected repo, split, shards, revision)")
            self.hub = HubDatasetConfig(**self.hub)
        given = [k for k in SOURCES if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"the training data is one of data.{', data.'.join(SOURCES)}; this config sets {', '.join(given)}")

    @property
    def csvs(self) -> list[str]:
        """``train_csv`` as a list (empty when the data comes from elsewhere)."""
        return [self.train_csv] if isinstance(self.train_csv, str) else list(self.train_csv or [])


#: where training photos can come from (exactly one per config)
SOURCES = ("train_csv", "photos", "hub", "shards", "msgpack")


@dataclass
class CVConfig:
    """Photographer-grouped cross-validation inside ``geosurge train`` (``geosurge.train.crossval``): it fits the
    posterior (per-level weights, decision rule, calibration maps) on out-of-fold scores, then every variant is
    trained on all the photos CV judged, for the same fixed number of epochs (no validation split)."""

    folds: int = 0  # 0: no cross-validation (the posterior stays off; early stopping on data.val_csv)
    group: str = "author"  # CSV column naming each photo's photographer (a photo folder: EXIF Artist / camera / sub-folder)
    calibration: str = "logistic"  # posterior mass -> stated chance: logistic (Platt) or isotonic
    fit_prior_weight: bool = False  # also fit the MP-16 prior's exponent (default: 1, as counted)

    def __post_init__(self):
        if not isinstance(self.folds, int) or self.folds == 1 or self.folds < 0:
            raise ValueError(f"cv.folds must be 0 (off) or at least 2, not {self.folds}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"cv.calibration must be one of {list(CALIBRATIONS)}, not {self.calibration!r}")

    @property
    def enabled(self) -> bool:
        return self.folds >= 2


CALIBRATIONS = ("logistic", "isotonic")


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 1024  # effective batch: micro_batch x accumulation x processes
    micro_batch: int = 64
    lr_gamma: float = 0.5  # step decay: lr *= gamma after every epoch
    epochs: int = 30
    patience: int = 4  # early stopping: epochs without validation gain
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs)
    grad_clip: float | None = 1.0

    def __post_init__(self):
        if self.micro_batch < 1 or self.batch_size < 1:
            raise ValueError(f"optim.batch_size ({self.batch_size}) and optim.micro_batch ({self.micro_batch}) must be positive")
        if self.batch_size % self.micro_batch:
            raise ValueError(f"optim.batch_size ({self.batch_size}) must be a multiple of optim.micro_batch ({self.micro_batch}): "
                             "batch_size = micro_batch x accumulation steps x processes")

    def accumulation(self, world: int) -> int:
        """Micro-batches accumulated per optimizer step so that micro_batch x steps x processes = batch_size."""
        per_round = self.micro_batch * world
        if self.batch_size % per_round:
            raise ValueError(f"optim.batch_size {self.batch_size} is not a multiple of micro_batch x processes = "
                             f"{self.micro_batch} x {world}: choose micro_batch so that micro_batch x processes divides it")
        return self.batch_size // per_round


@dataclass
class RunConfig:
    output: str = "runs/geosurge/checkpoint"  # final checkpoint directory (the best validation epoch)
    work_dir: str | None = None  # logs and resumable training state; default: <output>.work
    variants: list[str] | None = None  # e.g. [fusion, rgb]: train each into <output>/<variant>/
    seed: int = 0
    device: str | None = None  # default: cuda when present
    amp: bool | str = True  # mixed precision on GPU: true/"bf16" (bfloat16), "fp16" (float16 + loss scaling), false
    log_every: int = 10  # steps between log lines
    checkpoint_every: int = 200  # steps between resumable training-state saves (also saved every epoch)
    val_metric: str = "geoscore"  # one of VAL_METRICS: geoscore | median_km | mean_km | acc_<d>km
    reference_index: bool = True  # store the training images' features for nearest-reference lookup
    reference_max: int = 100_000  # streamed shards (msgpack): index the first this many training photos
    progress: bool = True
    keep_exports: int = 3  # versions of <work>/latest and <work>/best kept on disk (readers of the previous one finish)

    def __post_init__(self):
        if self.amp not in (True, False, "bf16", "fp16", "off"):
            raise ValueError(f"run.amp must be true, false, 'bf16', 'fp16' or 'off', not {self.amp!r}")
        if self.val_metric not in VAL_METRICS:
            raise ValueError(f"run.val_metric must be one of {list(VAL_METRICS)}, not {self.val_metric!r}")
        for name in self.variants or []:
            if name not in VARIANTS:
                raise ValueError(f"run.variants entries must be {' or '.join(map(repr, VARIANTS))}, not {name!r}")

    def amp_dtype(self):
        """torch dtype of autocast on GPU, or None."""
        import torch

        return {True: torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    cv: CVConfig = field(default_factory=CVConfig)

    def __post_init__(self):
        if not self.cv.enabled:
            return
        d = self.data
        if not (d.train_csv or d.photos or d.hub):
            raise ValueError("cv needs photos held in a list: data.train_csv, data.photos or data.hub (not streamed shards)")
        if d.val_csv:
            raise ValueError("with cv the final fit trains on every photo cross-validation judged: "
                             "add data.val_csv to data.train_csv and remove data.val_csv")
        if not d.view_cache:
            raise ValueError("cv trains every fold on cached views of a frozen backbone: set data.view_cache: true")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d or {})
        out = {"model": ModelConfig.from_dict(d.pop("model", {}) or {})}
        for name, sub_cls in (("data", DataConfig), ("optim", OptimConfig), ("run", RunConfig), ("cv", CVConfig)):
            sub = d.pop(name, {}) or {}
            unknown = set(sub) - {f.name for f in fields(sub_cls)}
            if unknown:
                raise ValueError(f"unknown {name} key(s) in the training config: {sorted(unknown)}")
            out[name] = sub_cls(**sub)
        if d:
            raise ValueError(f"unknown training config section(s): {sorted(d)} (expected model, data, optim, run, cv)")
        return cls(**out)


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config; ``overrides`` like ``["optim.lr=3e-4", "run.output=/tmp/x"]`` win over the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {path}")
    d = yaml.safe_load(path.read_text()) or {}
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping of sections (model, data, optim, run, cv)")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[leaf] = yaml.safe_load(value)
    return TrainConfig.from_dict(d)
