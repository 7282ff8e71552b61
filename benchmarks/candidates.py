"""Issue #20: every bit the offline features can give, under crossval.py's folds and posterior fitting.

Candidates, each as the fusion and the RGB-only variant, trained on every fold like ``configs/demo.yaml``
(frozen backbone, cached views, 3 epochs) and judged by the cross-fitted posterior of benchmarks/crossval.py:

* backbones ``efficientnet-lite0`` / ``-lite1`` / ``-lite2`` at their native resolution (five views);
* ``efficientnet-lite-stack`` (the three maps pooled to one grid and concatenated), its own frozen pass on
  five views (the registered backbone exactly as a checkpoint would use it);
* Lite0 plus DeepLab's pooled encoder vector (MobileNetV2 on ADE20K, 320 floats from the segmentation pass;
  ``geosurge.model.segmenters.deeplab_scene``), appended as channels to every appearance token;
* five vs ten views at training and inference, and the demo's single centre crop at inference;
* the centre crop alone for training and inference (Lite0 and the stack; the shipped recipe since issue #23);
* training-set size: each fold's training photographers subsampled (a learning curve), to say what fitting
  on all 1,985 dev photos instead of 1,437 is worth (the same ratio, 0.72, at a lower point of the curve).

Columns: bits per photo beyond the MP-16 prior [95 % interval over photographers], % within 200 / 750 /
2,500 km for the CV-chosen decision and for ``within:R`` at each R, MP-16's best point for each R, ECE, and
inference ms per photo measured side by side in one run (``--stage time``; threads stated in the output).

Run:  python benchmarks/candidates.py --stage views   # caches: one core each, on a quiet machine, 7 / 12 / 14 / 28 min
                                                      # for Lite0 / Lite1 / Lite2 / the stack (two processes: --only)
                                                      # (--only efficientnet-lite0@center: a centre-crop cache)
      python benchmarks/candidates.py [--only TAG ...] [--variants rgb] [--reuse] [--docs]   # CV of every candidate + timing
      python benchmarks/candidates.py --stage time     # the inference timings alone
Out-of-fold scores are kept in runs/cv/candidates/ (``--reuse`` reads them back and only refits the posterior).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import crossval as cv  # noqa: E402  (the folds, training step, posterior fitting and scoring of docs/results.md)
from geosurge.data.examples import example_batches  # noqa: E402
from geosurge.data.labels import LabelStore  # noqa: E402
from geosurge.data.transforms import resample_labels  # noqa: E402
from geosurge.eval.cv import RADII_KM, answer_spread, bootstrap_mean, grouped_folds, score  # noqa: E402
from geosurge.files import atomic_write  # noqa: E402
from geosurge.geo.hierarchy import build_hierarchy  # noqa: E402
from geosurge.geo.prior import read_photo_density  # noqa: E402
from geosurge.model.backbones import Backbone  # noqa: E402
from geosurge.model.backbones.onnx_runtime import attach_onnx  # noqa: E402
from geosurge.model.config import PosteriorConfig  # noqa: E402
from geosurge.model.encode import view_features  # noqa: E402
from geosurge.model.geosurge import GeoSURGE  # noqa: E402
from geosurge.model.posterior import Posterior, training_counts  # noqa: E402
from geosurge.model.segmenters.deeplab_scene import SCENE_TENSOR, DeepLabScene  # noqa: E402
from geosurge.model.variants import VARIANTS  # noqa: E402
from geosurge.model.views import ViewSet, _hidden_key, build_views, load_or_build_views  # noqa: E402
from geosurge.train.config import load_train_config  # noqa: E402

OUT = cv.OUT / "candidates"
LITES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
STACK = "efficientnet-lite-stack"
TARGET_RADII = (200, 750, 2500)
#: the ratio of the shipped training set to all dev photos (1,437 / 1,985), applied to each fold's training
#: photographers: the learning curve's step that "all 1,985 instead of 1,437" is
SHIP_RATIO = 1437 / 1985


# ------------------------------------------------------------------------------------------ setting
class Setting:
    """What every candidate shares: the config, the dev photos, folds, hierarchy and label store."""

    def __init__(self, config: Path, k: int):
        self.cfg = load_train_config(config)
        self.rec, self.groups, self.splits = cv.dev_records(cv.OUT)
        self.folds = grouped_folds(self.groups, k, self.cfg.run.seed)
        g = self.cfg.model.geo
        self.hierarchy = build_hierarchy(*read_photo_density(ROOT / g.partition).sample_points(), g.tau_min, g.tau_maxes)
        self.store = LabelStore(ROOT / self.cfg.data.labels, self.cfg.model.segmenter)
        self._stores = {self.cfg.model.segmenter.input_size: self.store}
        self.cache = ROOT / self.cfg.data.cache_dir
        self.truth = np.stack([self.rec.lats, self.rec.lons], 1)

    def store_at(self, input_size: int) -> LabelStore:
        """The label maps of the recipe's segmenter run at ``input_size`` (``geosurge segment --input-size N
        --out .cache/labels/<name>-N`` makes them; the store refuses maps of another setting)."""
        if input_size not in self._stores:
            seg = dataclasses.replace(self.cfg.model.segmenter, input_size=input_size)
            folder = ROOT / ".cache" / "labels" / seg.cache_name()
            if not folder.is_dir():
                raise MissingCache(f"no label maps at {input_size} px: geosurge segment --input-size {input_size} --out {folder.relative_to(ROOT)}")
            self._stores[input_size] = LabelStore(folder, seg)
        return self._stores[input_size]

    def config(self, backbone: str, fusion: bool = True):
        c = copy.deepcopy(self.cfg)
        c.model.backbone.name = backbone
        c.model.fusion.enabled = fusion
        return c

    def model(self, backbone: str, fusion: bool = True) -> GeoSURGE:
        return GeoSURGE(self.config(backbone, fusion).model, self.hierarchy.num_cells)


# ------------------------------------------------------------------------------------------ cached features
class MissingCache(RuntimeError):
    """A feature cache the CV needs is not there, and this stage does not build features."""


#: whether missing feature caches are built (``--stage views``) or the candidate is skipped (the CV stage)
BUILD = False


def views_of(s: Setting, backbone: str, views: str = "five", fusion: bool = True, store: LabelStore | None = None) -> ViewSet:
    """The cached views of a registered backbone (built when missing only with ``BUILD``: the slow part), with
    the label lattices of ``store`` (default: the recipe's label maps)."""
    model = s.model(backbone, fusion)
    path = s.cache / f"views-{_hidden_key(model, s.rec, views)}.safetensors"
    if not BUILD and not path.is_file():
        raise MissingCache(f"no {views}-view cache of {backbone}: {path.name}")
    vs = load_or_build_views(model, s.rec, (store or s.store) if fusion else None, s.cache, views=views)
    if len(vs) != len(s.rec):
        raise SystemExit(f"{backbone}: {len(s.rec) - len(vs)} photos lack views or label maps")
    return vs


def _cached(path: Path, build, cheap: bool = False) -> torch.Tensor:
    if path.is_file():
        return load_file(str(path))["x"]
    if not (BUILD or cheap):
        raise MissingCache(f"no {path.name}")
    x = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: save_file({"x": x.contiguous()}, p))
    return x


def _ids_hash(s: Setting) -> str:
    return hashlib.sha256(json.dumps([str(s.rec.root), s.rec.ids]).encode()).hexdigest()[:12]


@torch.no_grad()
def crop_hidden(s: Setting, model: GeoSURGE, which: str) -> torch.Tensor:
    """Frozen outputs (n, V, ...) of the centre crop (``center``, the demo's inference) or of the five mirrored
    ten-crop views (``mirrors``: with the five cached views they make the ten-crop set)."""
    path = s.cache / f"cand-{which}-{model.frozen_signature()}-{_ids_hash(s)}.safetensors"

    def build() -> torch.Tensor:
        bb, out = model.backbone.eval(), []
        for batch in example_batches(s.rec, None, 8, progress=f"{which} crops"):
            px = [bb.preprocess(img, None, crops="center" if which == "center" else "ten")[0] for img in batch.images]
            px = [x if which == "center" else x[5:] for x in px]
            h = bb.forward_frozen(torch.cat(px)).half()
            out.append(h.view(len(px), -1, *h.shape[1:]))
        return torch.cat(out)

    return _cached(path, build)


def center_labels(s: Setting, model: GeoSURGE) -> torch.Tensor:
    """(n, 1, side, side) label lattices of the centre crop (cheap: built when missing)."""
    side = model.fusion.tokenizer.label_side
    path = s.cache / f"cand-center-labels-{model.frozen_signature()}-{side}-{_ids_hash(s)}.safetensors"

    def build() -> torch.Tensor:
        out = []
        for batch in example_batches(s.rec, s.store, 16, progress="centre-crop label lattices"):
            out += [resample_labels(model.preprocess(img, lab, crops="center")[1], side).to(torch.uint8) for img, lab in
                    zip(batch.images, batch.label_maps)]
        return torch.stack(out)

    return _cached(path, build, cheap=True)


def center_views(s: Setting, backbone: str) -> ViewSet:
    """The centre crop the demo encodes (``Predictor.predict`` without ``ten_crop``): one view per photo."""
    model = s.model(backbone)
    return ViewSet(crop_hidden(s, s.model(backbone, fusion=False), "center"), center_labels(s, model), np.arange(len(s.rec)))


def ten_views(s: Setting, backbone: str) -> ViewSet:
    """The ten-crop set: the five cached views and their mirrors (the order of ``Preprocess(crops="ten")``),
    stored under the view cache's own key so that ``data.views: ten`` training finds it."""
    model = s.model(backbone)
    path = s.cache / f"views-{_hidden_key(model, s.rec, 'ten')}.safetensors"
    if not path.is_file():
        if not BUILD:
            raise MissingCache(f"no ten-view cache of {backbone}")
        five = views_of(s, backbone, "five", fusion=False)
        hidden = torch.cat([five.hidden, crop_hidden(s, model, "mirrors")], 1)
        atomic_write(path.with_suffix(".json"), lambda p: Path(p).write_text("{}"))
        atomic_write(path, lambda p: save_file({"hidden": hidden.contiguous(), "keep": torch.from_numpy(five.keep)}, p))
        del five, hidden
    return views_of(s, backbone, "ten")


def scene_vectors(s: Setting) -> torch.Tensor:
    """DeepLab's pooled encoder vector of every dev photo (n, 320), from the same pass as its label map."""
    seg_cfg = s.cfg.model.segmenter
    key = hashlib.sha256(json.dumps([seg_cfg.name, seg_cfg.input_size, SCENE_TENSOR, _ids_hash(s)]).encode()).hexdigest()[:16]

    def build() -> torch.Tensor:
        seg, out = DeepLabScene(seg_cfg, num_threads=1), []
        for batch in example_batches(s.rec, None, 16, progress="DeepLab scene vectors"):
            out += [torch.from_numpy(seg.labels_and_scene(img)[1]) for img in batch.images]
        return torch.stack(out)

    return _cached(s.cache / f"scene-{key}.safetensors", build)


class SceneAppended(Backbone):
    """A backbone's tokens with the photo's scene vector appended to each (as extra channels of its cached
    frozen map): training and scoring from cached views only, no pixels."""

    def __init__(self, base: Backbone, scene_dim: int):
        super().__init__()
        self.base, self.hidden_size = base, base.hidden_size + scene_dim
        self.patch_size, self.preprocess, self.trainable_blocks = base.patch_size, base.preprocess, 0

    def forward_trainable(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.base.forward_trainable(hidden)  # flattens whatever channels the map has


def with_scene(vs: ViewSet, scene: torch.Tensor) -> ViewSet:
    """Standardized scene vectors (per channel over all photos: no coordinates involved) broadcast over each
    view's map and appended as channels."""
    z = (scene - scene.mean(0)) / scene.std(0).clamp_min(1e-6)
    n, v, _, h, w = vs.hidden.shape
    extra = z.half()[:, None, :, None, None].expand(n, v, -1, h, w)
    return ViewSet(torch.cat([vs.hidden, extra], 2), vs.labels, vs.keep)


def extract(s: Setting, what: list[str]) -> None:
    """Fill the caches the candidates need (resumable per cache file)."""
    for item in what:
        t = time.time()
        if item == "scene":
            x = scene_vectors(s)
        elif item.startswith("center"):  # "center" (Lite0) or "center:<backbone>"
            x = crop_hidden(s, s.model(item.partition(":")[2] or LITES[0], fusion=False), "center")
        elif item == "ten":
            x = ten_views(s, LITES[0]).hidden
        elif "@" in item:  # "<backbone>@<view set>": the view cache geosurge train reads, e.g. efficientnet-lite0@center
            x = views_of(s, *item.split("@")).hidden
        else:
            x = views_of(s, item, "five").hidden
        print(f"{item}: {tuple(x.shape)} ({time.time() - t:.0f} s)", flush=True)
        del x



# ------------------------------------------------------------------------------------------ cross-validation
def oof_run(s: Setting, tag: str, cfg, backbone: Backbone, train: ViewSet, test: ViewSet, keep: float = 1.0,
            reuse: bool = False) -> dict:
    """crossval's out-of-fold run (its ``train_fold`` on each fold), with the test views allowed to differ from
    the training views and each fold's training photographers subsampled to ``keep`` of them."""
    path = OUT / f"oof-{tag}.npz"
    key = np.array([len(s.rec), int(s.folds.max()) + 1, cfg.optim.epochs, round(keep * 1000), *s.hierarchy.num_cells])
    n_levels, k = len(s.hierarchy.levels), int(s.folds.max()) + 1
    if reuse and path.is_file():
        z = np.load(path, allow_pickle=False)
        if np.array_equal(z["key"], key):
            return {"logits": [z[f"logits{i}"] for i in range(n_levels)], "seconds": float(z["seconds"]), "n_train": z["n_train"],
                    "counts": [[z[f"counts{f}_{i}"] for i in range(n_levels)] for f in range(k)]}
    cells = s.hierarchy.assign(s.rec.lats, s.rec.lons)
    oof = [np.zeros((len(s.rec), n)) for n in s.hierarchy.num_cells]
    counts, n_train, t0 = [], [], time.time()
    fuse = cfg.model.fusion.enabled
    for f in range(k):
        tr, te = training_rows(s, f, keep), np.flatnonzero(s.folds == f)
        model = cv.train_fold(cfg, s.hierarchy, backbone, cv.subset(train, tr, fuse), cells[tr])
        with torch.no_grad():
            for lvl, z in enumerate(model.logits(view_features(model, cv.subset(test, te, fuse)))):
                oof[lvl][te] = z.double().numpy()
        counts.append(training_counts(s.hierarchy, s.rec.lats[tr], s.rec.lons[tr]))
        n_train.append(tr.size)
        print(f"[{tag}] fold {f}: {tr.size} train / {te.size} scored ({time.time() - t0:.0f} s)", flush=True)
    run = {"logits": oof, "counts": counts, "seconds": time.time() - t0, "n_train": np.array(n_train)}
    OUT.mkdir(parents=True, exist_ok=True)
    arrays = {f"logits{i}": z for i, z in enumerate(oof)}
    arrays.update({f"counts{f}_{i}": c for f, cs in enumerate(counts) for i, c in enumerate(cs)})
    np.savez(path, key=key, seconds=run["seconds"], n_train=run["n_train"], **arrays)
    return run


def judged(s: Setting, tag: str, cfg, backbone: Backbone, train: ViewSet, test: ViewSet, keep: float, reuse: bool) -> dict:
    """:func:`judge_run` of :func:`oof_run`; with ``reuse`` the figures judged from the same saved scores are read
    back (the posterior's cross-fitting takes minutes per run on 2 cores)."""
    path = OUT / f"judged-{tag}.json"
    oof = OUT / f"oof-{tag}.npz"
    r = json.loads(path.read_text()) if reuse and path.is_file() else {}
    if "bits_photo" in r and oof.is_file() and path.stat().st_mtime >= oof.stat().st_mtime:
        return {k: ({int(d): x for d, x in v.items()} if isinstance(v, dict) else v) for k, v in r.items()}
    r = judge_run(s, oof_run(s, tag, cfg, backbone, train, test, keep, reuse))
    atomic_write(path, json.dumps(r, default=float))
    return r


def training_rows(s: Setting, fold: int, keep: float) -> np.ndarray:
    """The fold's training photos; with ``keep`` < 1 only a random ``keep`` share of its photographers (fixed
    seed per fold: the photos a new photographer brings come as a series)."""
    tr = np.flatnonzero(s.folds != fold)
    if keep >= 1:
        return tr
    authors = np.unique(s.groups[tr])
    rng = np.random.default_rng(1000 + fold)
    chosen = rng.choice(authors, size=int(round(keep * authors.size)), replace=False)
    return tr[np.isin(s.groups[tr], chosen)]


def judge_run(s: Setting, run: dict) -> dict:
    """crossval's cross-fitted posterior on a run's out-of-fold scores, and the figures of the table."""
    true_fin = s.hierarchy.assign(s.rec.lats, s.rec.lons)[:, -1]
    post = Posterior(PosteriorConfig(enabled=True), s.hierarchy, run["counts"][0])
    oof = cv.OutOfFold(run["logits"], run["counts"], run["seconds"])
    ratios = {beta: cv.oof_ratios(oof, s.folds, beta) for beta in (0.0, 1.0)}
    res = cv.evaluate_posterior(post, ratios, s.folds, true_fin, s.truth, s.groups)
    lp = res["logpost_true"]
    ok = np.isfinite(lp)
    per_photo = np.full(len(s.rec), np.nan)
    per_photo[ok] = (lp[ok] - post.log_prior.numpy()[true_fin[ok]]) / np.log(2)
    bits = bootstrap_mean(per_photo[ok], s.groups[ok])
    points = post.centroids[res["answer"]["default"]]
    chosen = score(cv.dist_of(points, s.truth), s.groups)
    own = {r: score(cv.dist_of(post.centroids[res["answer"][f"within:{r}"]], s.truth), s.groups) for r in TARGET_RADII}
    _, ece, ece_bal, _ = cv.calibration_figures(res, s.truth, post.centroids, s.groups)
    return {"bits": bits, "bits_photo": per_photo.tolist(), "chosen": {r: (chosen.acc[r], chosen.low[r], chosen.high[r]) for r in TARGET_RADII},
            "own": {r: (own[r].acc[r], own[r].low[r], own[r].high[r]) for r in TARGET_RADII},
            "ece": {r: ece[r] for r in TARGET_RADII}, "ece_balanced": {r: ece_bal[r] for r in TARGET_RADII},
            "decisions": [f["decision"] for f in res["fits"]], "spread": answer_spread(points), "seconds": run["seconds"], "n_train": np.asarray(run["n_train"]).tolist()}


def mp16_best_points(s: Setting) -> dict[int, tuple[float, float, float]]:
    """% of the dev photos within R of MP-16's best point for R, with its interval."""
    dens = read_photo_density(ROOT.parent / "shared" / "data" / "mp16" / "cells_50_1000.csv")
    out = {}
    for r in TARGET_RADII:
        lat, lon, _ = dens.best_point(r)
        sc = score(cv.dist_of(np.tile((lat, lon), (len(s.rec), 1)), s.truth), s.groups)
        out[r] = (sc.acc[r], sc.low[r], sc.high[r])
    return out


# ------------------------------------------------------------------------------------------ the candidates
def candidates(s: Setting) -> list[tuple[str, str, callable]]:
    """(name, tag, views) of every candidate; ``views()`` gives (backbone, training views, test views, keep)."""
    def registered(name: str, views: str = "five", seg_size: int | None = None):
        def make():
            store = s.store_at(seg_size) if seg_size else None
            return (s.model(name).backbone, *(2 * [views_of(s, name, views, store=store)]), 1.0)
        return make

    def scene():
        vs = with_scene(views_of(s, LITES[0]), scene_vectors(s))
        return SceneAppended(s.model(LITES[0]).backbone, vs.hidden.shape[2] - 1280), vs, vs, 1.0

    def centre():
        return s.model(LITES[0]).backbone, views_of(s, LITES[0]), center_views(s, LITES[0]), 1.0

    def ten():
        vs = ten_views(s, LITES[0])
        return s.model(LITES[0]).backbone, vs, vs, 1.0

    def subsampled(keep: float):
        return lambda: (s.model(LITES[0]).backbone, *(2 * [views_of(s, LITES[0])]), keep)

    return [
        ("Lite0, 5 views (shipped before #20)", "lite0", registered(LITES[0])),
        ("Lite0, 5 views, centre crop at inference (the demo before #20)", "lite0-centre", centre),
        ("Lite0, 10 views", "lite0-ten", ten),
        ("Lite1, 5 views", "lite1", registered(LITES[1])),
        ("Lite2, 5 views", "lite2", registered(LITES[2])),
        ("stack Lite0+1+2, 5 views (shipped with #20)", "stack", registered(STACK)),
        (f"stack Lite0+1+2, centre crop, DeepLab at {s.cfg.model.segmenter.input_size} px (shipped since #23)", "stack-centre",
         registered(STACK, "center")),
        ("Lite0, centre crop", "lite0-centre-crop", registered(LITES[0], "center")),
        ("stack Lite0+1+2, centre crop, DeepLab at 385 px (shipped before the 257-px segmenter)", "stack-centre-seg385",
         registered(STACK, "center", 385)),
        ("Lite0 + DeepLab scene vector, 5 views", "lite0-scene", scene),
        (f"Lite0, 5 views, {SHIP_RATIO:.2f} of each fold's photographers", "lite0-keep72", subsampled(SHIP_RATIO)),
        ("Lite0, 5 views, 0.50 of each fold's photographers", "lite0-keep50", subsampled(0.5)),
    ]


def run_candidates(s: Setting, only: list[str] | None, variants: list[str], reuse: bool) -> dict:
    """Every candidate's judged runs, variant by variant (all RGB-only runs first: they cost a fraction of the
    fusion runs); a candidate whose caches are missing is reported as such (``--stage views`` fills them)
    instead of silently computing hours of features."""
    out = {}
    for variant in variants:
        cfg = cv.variant_config(s.cfg, variant)
        for name, tag, make in candidates(s):
            if only and tag not in only:
                continue
            if reuse and not (OUT / f"oof-{tag}-{variant}.npz").is_file():
                print(f"{name} / {variant}: not run (--reuse reports the runs whose scores are saved)", flush=True)
                continue
            try:
                backbone, train, test, keep = make()
            except MissingCache as e:
                print(f"{name}: skipped ({e})", flush=True)
                continue
            out[(name, variant)] = judged(s, f"{tag}-{variant}", cfg, backbone, train, test, keep, reuse)
            print(f"{name} / {variant}: {format_row(out[(name, variant)])}", flush=True)
            del train, test
    return out


# ------------------------------------------------------------------------------------------ inference time
@torch.no_grad()
def time_inference(s: Setting, photos: int = 20, repeats: int = 3, threads: int = 2) -> dict[str, float]:
    """Median ms per photo of each inference step, all measured in one loop, interleaved photo by photo:
    DeepLab at the checkpoint's size (labels; labels + scene vector) and, per backbone and view count, the
    preprocessing, the frozen pass and both variants' heads (fusion + RGB-only, as the demo runs them)."""
    from geosurge.data.records import read_records
    from geosurge.model.segmenters.deeplab import DeepLabADE20K

    torch.set_num_threads(threads)
    seg_cfg = s.cfg.model.segmenter
    seg, scene = DeepLabADE20K(seg_cfg, num_threads=threads), DeepLabScene(seg_cfg, num_threads=threads)
    test, _ = read_records(cv.DEV / "test.csv", cv.DEV / "images")
    images = [b for batch in example_batches(test, None, 16, rows=np.arange(photos)) for b in batch.images]
    pairs = {name: (s.model(name).eval(), None) for name in (*LITES, STACK)}
    pairs = {name: (m, GeoSURGE(s.config(name, False).model, s.hierarchy.num_cells, backbone=m.backbone).eval()) for name, (m, _) in pairs.items()}
    for fus, _ in pairs.values():  # the frozen part in onnxruntime, as the demo runs it (torch where the export fails)
        attach_onnx(fus.backbone, threads=threads)
    steps = {"DeepLab labels": lambda im, lab: seg(im), "DeepLab labels + scene vector": lambda im, lab: scene.labels_and_scene(im)}
    for name, (fus, rgb) in pairs.items():
        for views in ((1, 5, 10) if name == LITES[0] else (1, 5)):
            steps[f"{name}, {views} view(s), both heads"] = _encode_step(fus, rgb, views)
    took = {k: [] for k in steps}
    for _ in range(repeats):
        for im in images:
            lab = seg(im)
            for k, step in steps.items():
                t = time.perf_counter()
                step(im, lab)
                took[k].append((time.perf_counter() - t) * 1000)
    return {k: float(np.median(v)) for k, v in took.items()}


def timing(s: Setting, threads: int, reuse: bool) -> dict[str, float]:
    """:func:`time_inference`, kept in runs/cv/candidates/timing.json (read back with ``reuse``)."""
    path = OUT / "timing.json"
    if reuse and path.is_file():
        return json.loads(path.read_text())
    ms = time_inference(s, threads=threads)
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(ms, indent=1))
    return ms


def _encode_step(fus: GeoSURGE, rgb: GeoSURGE, views: int):
    side = fus.fusion.tokenizer.label_side

    def step(im, lab):
        x, y = fus.preprocess(im, lab, crops="center" if views == 1 else "ten")
        x, y = x[:views], resample_labels(y[:views], side).long()
        h = fus.backbone.infer_frozen(x)
        for m, labels in ((fus, y), (rgb, None)):
            m.logits(F.normalize(m.encode_hidden(h, labels).mean(0, keepdim=True), dim=-1))

    return step


def backbone_of(name: str) -> str:
    return STACK if name.startswith("stack") else next(b for b in LITES if f"Lite{b[-1]}" in name.split(",")[0])


# ------------------------------------------------------------------------------------------ report
def _acc(a: tuple[float, float, float]) -> str:
    return f"{a[0]:.1f} [{a[1]:.1f}, {a[2]:.1f}]"


def format_row(r: dict) -> str:
    b = r["bits"]
    return (f"bits {b[0]:+.3f} [{b[1]:+.3f}, {b[2]:+.3f}]; CV-chosen " + " / ".join(f"{r['chosen'][d][0]:.1f}" for d in TARGET_RADII)
            + "; within:R " + " / ".join(f"{r['own'][d][0]:.1f}" for d in TARGET_RADII))


REFERENCE = "Lite0, 5 views (shipped before #20)"


#: candidate tag -> the tag of one that differs from it in one setting only: the report gives their paired difference
PAIRED = {"stack-centre": "stack-centre-seg385"}


def paired_bits(results: dict, name: str, variant: str, groups: np.ndarray, ref: str = REFERENCE) -> str:
    """Bits per photo minus ``ref``'s (same variant) on the same photos, with a 95 % interval over
    photographers."""
    if name == ref or (ref, variant) not in results:
        return ""
    d = np.asarray(results[(name, variant)]["bits_photo"]) - np.asarray(results[(ref, variant)]["bits_photo"])
    ok = np.isfinite(d)
    m, lo, hi = bootstrap_mean(d[ok], groups[ok])
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def table(results: dict, best: dict, ms: dict | None, groups: np.ndarray) -> str:
    head = ("| candidate | variant | bits per photo [95 %] | bits minus the reference's, same photos [95 %] | CV-chosen decision: 200 / 750 / 2500 km | `within:200` at 200 km "
            "| `within:750` at 750 km | `within:2500` at 2500 km | ECE 200 / 750 / 2500 (points) | decisions per fold "
            "| distinct answers (most common, % of photos) | ms per photo: centre crop (demo) / views as evaluated |")
    lines = [head, "|" + "---|" * 12]
    lines.append("| MP-16's best point for R (target) | | 0 by definition | | | " + " | ".join(_acc(best[r]) for r in TARGET_RADII) + " | | | 1 (100) | |")
    for (name, variant), r in results.items():
        b = r["bits"]
        speed = ""
        if ms:
            bb = backbone_of(name)
            seg = ms["DeepLab labels + scene vector" if "scene" in name else "DeepLab labels"] if variant == "fusion" else 0.0
            views = 10 if "10 views" in name else 1 if "centre crop" in name else 5 if "5 views" in name else 1
            speed = f"{seg + ms[f'{bb}, 1 view(s), both heads']:.0f} / {seg + ms[f'{bb}, {views} view(s), both heads']:.0f}"
        lines.append(f"| {name} | {variant} | {b[0]:+.3f} [{b[1]:+.3f}, {b[2]:+.3f}] | {paired_bits(results, name, variant, groups)} | "
                     + " / ".join(f"{r['chosen'][d][0]:.1f}" for d in TARGET_RADII) + " | "
                     + " | ".join(_acc(r["own"][d]) for d in TARGET_RADII) + " | "
                     + " / ".join(f"{r['ece'][d]:.1f}" for d in TARGET_RADII) + " | "
                     + ", ".join(sorted(set(r["decisions"]))) + f" | {r['spread'][0]} ({r['spread'][1]:.0f}) | {speed} |")
    return "\n".join(lines)


def timing_lines(ms: dict, threads: int) -> list[str]:
    return [f"Inference steps, median ms per photo over 20 `test.csv` photos x 3, measured interleaved in one run "
            f"(torch and onnxruntime {threads} threads, DeepLab/XNNPACK {threads} threads; 'both heads' = preprocessing + frozen pass in onnxruntime as the demo runs it + the "
            "fusion and RGB-only heads + logits; DeepLab at 385 px):", "",
            "| step | ms |", "|---|---|", *[f"| {k} | {v:.1f} |" for k, v in ms.items()]]


def main() -> None:
    global BUILD
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--stage", choices=["views", "cv", "time"], default="cv",
                    help="views: build the feature caches (slow); cv: every candidate with cached features, then time")
    ap.add_argument("--only", nargs="*", default=None, help="candidate tags to run (default: all with cached features)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS), help="variants to cross-validate")
    ap.add_argument("--reuse", action="store_true", help="reuse out-of-fold scores saved by an earlier run")
    ap.add_argument("--threads", type=int, default=2, help="threads for the timing stage (CV training uses 1)")
    ap.add_argument("--no-time", action="store_true", help="skip the timing stage (the table leaves ms empty)")
    ap.add_argument("--docs", action="store_true", help="rewrite the generated block of docs/results.md")
    args = ap.parse_args()
    s = Setting(ROOT / args.config, args.folds)
    if args.stage == "views":
        BUILD = True
        torch.set_num_threads(1)
        extract(s, args.only or ["scene", "center", *LITES, "ten", STACK])
        return
    ms = None
    results = {}
    if args.stage == "cv":
        torch.set_num_threads(1)
        results = run_candidates(s, args.only, args.variants, args.reuse)
    ms = None if args.no_time else timing(s, args.threads, args.reuse)
    report(args, s, results, ms)


def report(args, s: Setting, results: dict, ms: dict) -> None:
    best = mp16_best_points(s)
    lines = [f"Generated by `python benchmarks/candidates.py{' --reuse' if args.reuse else ''}` on {time.strftime('%Y-%m-%d')}: "
             f"{len(s.rec)} dev photos, {len(np.unique(s.groups))} photographers, {args.folds} photographer-grouped folds, "
             f"{s.cfg.optim.epochs} epochs per fold (1 torch thread), posterior cross-fitted as in `benchmarks/crossval.py`. "
             "Accuracy in % [95 % interval, bootstrap over photographers]; bits per photo beyond the MP-16 prior on the "
             "true finest cell; ECE of the CV-chosen decision's stated chances, photo-weighted.", "",
             table(results, best, ms, s.groups), ""]
    for (name, variant), r in results.items():
        lines.append(f"- {name} / {variant}: training photos per fold {r['n_train']}, CV training {r['seconds']:.0f} s, "
                     f"ECE photographers balanced " + " / ".join(f"{r['ece_balanced'][d]:.1f}" for d in TARGET_RADII))
    names = {tag: name for name, tag, _ in candidates(s)}
    for tag, other in PAIRED.items():
        for variant in VARIANTS:
            if (names[tag], variant) in results and (names[other], variant) in results:
                lines.append(f"- {names[tag]} minus {names[other]}, {variant}, same photos: "
                             f"{paired_bits(results, names[tag], variant, s.groups, names[other])} bits per photo")
    if ms:
        lines += ["", *timing_lines(ms, args.threads)]
    text = "\n".join(lines)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.md").write_text(text + "\n")
    slim = {f"{n} / {v}": {k: x for k, x in r.items() if k != "bits_photo"} for (n, v), r in results.items()}
    (OUT / "report.json").write_text(json.dumps(slim | {"ms": ms}, indent=1, default=float))
    print(text)
    if args.docs:
        path = ROOT / "docs" / "results.md"
        doc = path.read_text()
        a, b = doc.index("<!-- candidates:begin -->"), doc.index("<!-- candidates:end -->")
        atomic_write(path, doc[: a + len("<!-- candidates:begin -->")] + "\n" + text + "\n" + doc[b:])


if __name__ == "__main__":
    main()
