"""Evaluate checkpoints on a CSV of geotagged photos: accuracy table, median, GeoScore, cell accuracy.

A checkpoint is scored on the views it encodes photos from by default (:attr:`VariantDir.inference_views
<geosurge.model.checkpoint_dir.VariantDir.inference_views>`: what it was trained and cross-validated on), so its
figures describe what ``Predictor.predict`` does. Five- and ten-view features reuse the training view cache (the
frozen backbone part's output for the crops, shared by every checkpoint with the same backbone), and each
checkpoint's final features are cached by the hash of its weights and the views, so re-running an evaluation or
adding a checkpoint to a comparison is fast.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..data.labels import LabelStore, segment_records
from ..data.records import GeoRecords, SkipReport
from ..geo.distance import haversine_km
from ..geo.hierarchy import Hierarchy
from ..geo.metrics import THRESHOLDS_KM, accuracy_report
from ..files import atomic_write
from ..model.checkpoint import CONFIG, WEIGHTS
from ..model.checkpoint_dir import CheckpointDir
from ..model.encode import image_features, view_features
from ..model.geosurge import GeoSURGE
from ..model.decode import Decoder
from ..model.posterior import Posterior
from ..model.segmenters import create_segmenter
from ..model.variants import variant_name
from ..model.views import check_views, load_or_build_views
from ..runtime import configure_threads

DEFAULT_LABELS = ".cache/labels"


@dataclass
class EvalResult:
    name: str
    metrics: dict[str, Any]  # acc_1km ... acc_2500km, median_km, mean_km, geoscore, n, level_acc, ...
    pred: np.ndarray = field(repr=False)  # (n, 2) predicted lat/lon
    true: np.ndarray = field(repr=False)  # (n, 2)

    @property
    def distances(self) -> np.ndarray:
        return haversine_km(self.pred[:, 0], self.pred[:, 1], self.true[:, 0], self.true[:, 1])


def _weights_hash(directory: Path) -> str:
    h = hashlib.sha256()
    for name in (CONFIG, WEIGHTS):
        h.update((directory / name).read_bytes())
    return h.hexdigest()[:16]


def score_features(model: GeoSURGE, hierarchy: Hierarchy, feats: torch.Tensor, true: np.ndarray,
                   posterior: Posterior | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Predicted points and metrics (distance table, median, GeoScore, per-level accuracy of the answer's cells).

    The points come from the one decode step (:class:`~geosurge.model.decode.Decoder`), as the predictor's: the
    ``posterior``'s rule when the checkpoint has one, else the paper's."""
    d = Decoder.for_model(model, hierarchy, posterior)(feats.float())
    pred = d.latlon
    m = accuracy_report(pred[:, 0], pred[:, 1], true[:, 0], true[:, 1]).as_dict()
    cells = hierarchy.assign(true[:, 0], true[:, 1])
    m["level_acc"] = [float(100.0 * np.mean(d.chain[:, k] == cells[:, k])) for k in range(len(hierarchy.levels))]
    m["level_cells"] = hierarchy.num_cells
    m["decision"] = d.rule
    return pred, m


def checkpoint_features(
    checkpoint: str | Path,
    records: GeoRecords,
    views: str | None = None,
    fusion: bool = True,
    labels: str | Path | None = None,
    cache_dir: str | Path = ".cache/geosurge",
    device: str | torch.device = "cpu",
    progress: bool = True,
    report: SkipReport | None = None,
    model_overrides: dict[str, Any] | None = None,
) -> tuple[GeoSURGE, Hierarchy, torch.Tensor, np.ndarray, Path, str]:
    """A checkpoint's features of ``records`` (cached by weight hash and views): model, hierarchy, features (n, d),
    ``keep`` (which records could be read: features are theirs, in order), the variant's directory and the
    views encoded (``views``: "center", "five" or "ten"; None: the variant's own)."""
    vd = CheckpointDir.read(checkpoint).variant(variant_name(fusion))
    views = vd.inference_views if views is None else check_views(views)
    directory = vd.path
    model, hierarchy, _ = vd.load(device, model_overrides)
    store = None
    if model.uses_fusion:
        store = LabelStore(labels or Path(DEFAULT_LABELS) / model.cfg.segmenter.cache_name(), model.cfg.segmenter)
        if any(not store.has(i) for i in records.ids):
            # Its failures are not reported: an image the segmenter cannot read fails feature extraction
            # below too, and is counted there (once, not twice).
            segment_records(records, create_segmenter(vd.segmenter_config()), store, progress=progress)
    key = hashlib.sha256(json.dumps([_weights_hash(directory), str(records.root), records.ids, views,
                                     str(store.root) if store else None]).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"eval-{key}.safetensors"
    local = SkipReport()
    if cache.is_file():
        t = load_file(str(cache))
        feats, keep = t["features"], t["keep"].numpy()
    else:
        if views == "center":
            feats, keep = image_features(model, records, store, report=local, progress=progress)
        else:
            cached = load_or_build_views(model, records, store, cache_dir, progress, local, views)
            feats, keep = view_features(model, cached), cached.keep
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda p: save_file({"features": feats.contiguous(), "keep": torch.from_numpy(keep)}, p))
    if report is not None:
        report.merge(local)
    return model, hierarchy, feats, keep, directory, views


def evaluate_checkpoint(
    checkpoint: str | Path,
    records: GeoRecords,
    views: str | None = None,
    fusion: bool = True,
    labels: str | Path | None = None,
    cache_dir: str | Path = ".cache/geosurge",
    device: str | torch.device = "cpu",
    progress: bool = True,
    report: SkipReport | None = None,
    name: str | None = None,
    model_overrides: dict[str, Any] | None = None,
) -> EvalResult:
    """Evaluate one checkpoint (or one variant of a pair) on ``records``, its photos encoded from ``views``
    ("center", "five" or "ten"; None: the variant's own, as ``Predictor.predict`` does).

    ``model_overrides`` changes inference settings, e.g. ``{"geo": {"prior_weight": 0.0}}``. Applies the
    thread policy (``geosurge.runtime``), as every entry point does.
    """
    configure_threads()
    model, hierarchy, feats, keep, directory, views = checkpoint_features(
        checkpoint, records, views, fusion, labels, cache_dir, device, progress, report, model_overrides)
    true = np.stack([records.lats[keep], records.lons[keep]], axis=1)
    posterior = CheckpointDir.read(directory).variant(variant_name(fusion)).posterior(hierarchy, model.cfg.posterior)
    pred, metrics = score_features(model, hierarchy, feats, true, posterior)
    metrics.update(checkpoint=str(directory), fusion=model.uses_fusion, views=views,
                   skipped=len(records) - len(keep))
    label = name or (f"{Path(checkpoint).name}/{directory.name}" if directory != Path(checkpoint) else directory.name)
    return EvalResult(label, metrics, pred, true)


# ------------------------------------------------------------------------------------ outputs
def markdown_table(results: list[EvalResult]) -> str:
    """Comparison table in the paper's layout (accuracy % within each distance), plus median and GeoScore."""
    heads = ["model"] + [f"{t:g} km" for t in THRESHOLDS_KM.values()] + ["median km", "GeoScore", "n"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in results:
        m = r.metrics
        cells = [r.name] + [f"{m[f'acc_{t:g}km']:.1f}" for t in THRESHOLDS_KM.values()]
        cells += [f"{m['median_km']:.0f}", f"{m['geoscore']:.0f}", str(m["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy(results: list[EvalResult], path: str | Path, title: str = "") -> None:
    """Accuracy (% within d km) against d on a log axis, one curve per result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.logspace(0, np.log10(20_000), 200)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for r in results:
        dist = np.sort(r.distances)
        ax.plot(d, 100.0 * np.searchsorted(dist, d, side="right") / max(1, dist.size), label=r.name)
    for t in THRESHOLDS_KM.values():
        ax.axvline(t, color="0.85", lw=0.8, zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("distance from the true location (km)")
    ax.set_ylabel("% of photos within")
    ax.set_ylim(0, 100)
    ax.set_title(title or "geolocation accuracy")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def write_outputs(results: list[EvalResult], out: str | Path, meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """``report.json`` (the first result's metrics at top level, all under ``results``), ``results.md``, ``accuracy.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {**results[0].metrics, "name": results[0].name, **(meta or {}),
              "results": [{"name": r.name, **r.metrics} for r in results]}
    paths = {"json": out / "report.json", "markdown": out / "results.md", "plot": out / "accuracy.png"}
    atomic_write(paths["json"], lambda p: Path(p).write_text(json.dumps(report, indent=2) + "\n"))
    atomic_write(paths["markdown"], lambda p: Path(p).write_text(markdown_table(results)))
    plot_accuracy(results, paths["plot"])
    return paths
