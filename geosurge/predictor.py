"""``Predictor``: load a checkpoint once, geolocate photos (the API the CLI and the app use)."""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .data.images import load_image
from .geo.distance import haversine_km
from .geo.hierarchy import Hierarchy
from .model.backbones.onnx_runtime import attach_onnx, wanted
from .model.embedded import EMBEDDED_CHECKPOINT
from .model.checkpoint_dir import CheckpointDir
from .model.decode import PRODUCT_SCORE, Decision, Decoder
from .model.evidence import NOT_MEASURED, describe_evidence
from .model.encode import LabelMaps, encode_images_multi
from .model.geosurge import GeoSURGE
from .model.hierarchical import ReferenceIndex
from .model.posterior import Posterior, credible_set
from .model.segmenters import Segmenter, SegmenterUnavailable, create_segmenter
from .model.variants import FUSION, RGB, variant_name
from .model.views import check_views
from .runtime import configure_threads


@dataclass
class CellScore:
    """One cell of the hierarchy with a figure (its ``Prediction.ranked_by``, or the product score in ``levels``)."""

    level: int  # hierarchy level, 1 = coarsest (numbered 1..7 everywhere a person reads them)
    index: int  # cell index within that level
    token: str  # S2 token
    lat: float  # mean coordinate of the photos that define the cell (MP-16's, or the training photos')
    lon: float
    score: float  # product of the cell's and its ancestors' probabilities


@dataclass
class ReferenceMatch:
    """The training photo most like the query, in the answer's cell when it holds one."""

    id: str
    lat: float
    lon: float
    similarity: float  # cosine similarity of visual features
    distance_km: float  # from the predicted point
    in_predicted_cell: bool  # False: none in the predicted cell: the most similar within NEAR_REFERENCE_KM (else anywhere)


@dataclass
class Prediction:
    """One photo's answer and every figure beside it; all per-cell figures describe the answer's own cells."""

    lat: float
    lon: float
    score: float  # the answer's finest cell: its posterior probability (its product score without a posterior)
    top_k: list[CellScore]  # best finest cells by the paper's product score (the map draws them)
    levels: list[list[CellScore]]  # best cells at every level, coarse to fine, by product score (the paper's)
    nearest_reference: ReferenceMatch | None
    fusion_used: bool
    note: str | None = None  # why fusion was not used, when it was asked for
    labels: np.ndarray | None = field(default=None, repr=False)  # ADE20K label map when segmented
    #: calibrated chance that the true location lies within R km of (lat, lon), R in 1/25/200/750/2500;
    #: empty for checkpoints without a fitted posterior
    within_km: dict[int, float] = field(default_factory=dict)
    decision: str = "argmax"  # the rule that chose (lat, lon) (geosurge.model.decisions; "argmax": the paper's)
    #: the cell containing the answer at every level, coarse to fine, with its ``ranked_by`` figure
    chain: list[CellScore] = field(default_factory=list)
    #: per level, the best other cells by ``ranked_by`` (they can outrank the chain: the rule is not "most probable")
    runners_up: list[list[CellScore]] = field(default_factory=list)
    #: what ``chain``, ``runners_up`` and ``score`` give: "posterior probability", or "product score" without a posterior
    ranked_by: str = PRODUCT_SCORE
    #: smallest sets of finest-cell indices holding 50 % and 90 % of the posterior
    credible: dict[int, list[int]] = field(default_factory=dict)
    #: information the photo added beyond where Flickr photos are taken: KL(posterior || prior) in bits over the
    #: finest cells (geosurge.model.evidence); NaN without a fitted posterior
    evidence_bits: float = math.nan
    #: that figure in plain words (``describe_evidence``)
    evidence_text: str = NOT_MEASURED
    #: the crops whose features were averaged: "center", "five" or "ten" (``geosurge.model.views.VIEWS``)
    views: str = "center"

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (without the label map; an unmeasured ``evidence_bits`` is None)."""
        from dataclasses import asdict

        d = asdict(self)
        d.pop("labels")
        if math.isnan(self.evidence_bits):
            d["evidence_bits"] = None
        return d


class _Variant:
    """One loaded model with its decoder, reference index and the views it encodes a photo from by default."""

    def __init__(self, model: GeoSURGE, hierarchy: Hierarchy, reference: ReferenceIndex | None, device: torch.device,
                 posterior: Posterior | None = None, views: str = "center"):
        self.model, self.hierarchy, self.reference = model, hierarchy, reference
        self.views = check_views(views)
        self.decoder = Decoder.for_model(model, hierarchy, posterior).to(device)
        self.s2_tokens = [lvl.s2_tokens for lvl in hierarchy.levels]


class Predictor:
    """Geolocates photos with a trained checkpoint (one model, or a ``fusion``/``rgb`` pair).

    >>> p = Predictor.from_pretrained()  # the embedded checkpoint; or a directory, or a Hub repo id
    >>> [r] = p.predict("photo.jpg")
    >>> r.lat, r.lon, r.score
    """

    def __init__(self, variants: dict[str, _Variant], segmenter: Segmenter | None, segmenter_error: str | None, device: torch.device):
        if not variants:
            raise ValueError("no model variants given")
        self.variants = variants
        self.segmenter = segmenter
        self.segmenter_error = segmenter_error
        self.device = device
        self.backbone_runtime = "torch"  # or "onnxruntime" (see _attach_backbone_runtime)
        self._segment_pool: ThreadPoolExecutor | None = None  # segments beside the backbone (see _label_maps)
        #: the checkpoint directory it was loaded from (None when built from variants directly)
        self.checkpoint: CheckpointDir | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path = EMBEDDED_CHECKPOINT,
        device: str | torch.device | None = None,
        segmenter: Segmenter | str | None = "auto",
        segmenter_path: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        backbone_runtime: str | None = None,
    ) -> "Predictor":
        """Load a checkpoint directory, or a directory holding ``fusion/`` and/or ``rgb/`` checkpoints, or a
        Hugging Face Hub repo id laid out the same way (``revision``, ``cache_dir`` and ``local_files_only``
        go to ``huggingface_hub.snapshot_download``). The default is the checkpoint shipped in the package.

        ``segmenter="auto"`` builds the segmenter the checkpoint was trained with (``segmenter_path``
        overrides its model path); ``None`` disables it. When it cannot be built (e.g. the DeepLab file
        is missing) the predictor still works without fusion and ``segmenter_error`` says why.
        Applies the thread policy (:func:`geosurge.runtime.configure_threads`: one torch thread unless
        the caller chose a number). ``backbone_runtime`` ("auto", "torch", "onnx"; default
        ``$GEOSURGE_BACKBONE_RUNTIME`` or "auto") runs the frozen backbone in onnxruntime where it wins.
        """
        configure_threads()
        checkpoint = CheckpointDir.open(path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        variants: dict[str, _Variant] = {}
        for name, vd in checkpoint.variants.items():
            model, hierarchy, reference = vd.load(dev)
            variants[name] = _Variant(model, hierarchy, reference, dev, vd.posterior(hierarchy), vd.inference_views)
        _share_frozen_backbones([v.model for v in variants.values()])
        fused = next((vd for vd in checkpoint.variants.values() if vd.model_config().fusion.enabled), None)
        seg, err = None, None
        if isinstance(segmenter, Segmenter):
            seg = segmenter
        elif segmenter == "auto":
            if fused is not None:
                try:
                    seg = create_segmenter(fused.segmenter_config(segmenter_path))
                except SegmenterUnavailable as e:
                    err = str(e)
        elif segmenter is None:
            err = "segmentation was turned off"
        else:
            raise ValueError("segmenter must be 'auto', None or a Segmenter")
        predictor = cls(variants, seg, err, dev)
        predictor.checkpoint = checkpoint
        predictor._attach_backbone_runtime(backbone_runtime)
        return predictor

    def _attach_backbone_runtime(self, runtime: str | None) -> None:
        """Export each distinct backbone's frozen part to onnxruntime where it wins (torch otherwise);
        ``self.backbone_runtime`` says which runs."""
        self.backbone_runtime = "torch"
        distinct = {id(v.model.backbone): v.model for v in self.variants.values()}  # a shared backbone is exported once
        for model in distinct.values():
            if wanted(model.cfg.backbone.name, self.device, runtime) and attach_onnx(model.backbone):
                self.backbone_runtime = "onnxruntime"

    @property
    def fusion_available(self) -> bool:
        return FUSION in self.variants and self.segmenter is not None

    def fusion_unavailable_reason(self) -> str | None:
        """Why fusion cannot be used right now (None when it can)."""
        if FUSION not in self.variants:
            return "this checkpoint has no semantic-fusion model"
        if self.segmenter is None:
            return f"semantic fusion is off: {self.segmenter_error or 'no segmenter'}"
        return None

    # ------------------------------------------------------------------ inference
    def segment(self, image: Any) -> np.ndarray:
        """ADE20K label map (H, W) of an image; needs a segmenter."""
        if self.segmenter is None:
            raise SegmenterUnavailable(self.segmenter_error or "no segmenter")
        return self.segmenter(load_image(image))

    @torch.no_grad()
    def predict(
        self,
        images: Any,
        top_k: int = 5,
        fusion: bool = True,
        views: str | None = None,
        level_top: int = 5,
        batch_size: int = 16,
        label_maps: Sequence[np.ndarray] | None = None,
        decision: str | None = None,
    ) -> list[Prediction]:
        """Geolocate one image or a list (PIL images, paths, bytes or arrays); one :class:`Prediction` each.

        ``fusion=True`` uses the semantic-fusion model when it and the segmenter are available, and
        otherwise falls back to the RGB-only model with ``Prediction.note`` saying why. ``fusion=False``
        needs an RGB-only model. ``views`` ("center", "five" or "ten") chooses the crops whose normalized
        features are averaged; None: the model's own (:attr:`VariantDir.inference_views
        <geosurge.model.checkpoint_dir.VariantDir.inference_views>`: the views it was trained and cross-validated
        on, else the centre crop).
        ``label_maps`` (one per image, from :meth:`segment`) skips segmenting again. ``decision`` overrides
        the checkpoint's rule (``"argmax"``, ``"within:750"``, ...; needs a fitted posterior).
        """
        if views is not None:
            check_views(views)  # before the segmenter's work, not after it
        if isinstance(images, (str, Path, bytes)) or not isinstance(images, Sequence):
            images = [images]
        note = None
        use_fusion = fusion
        if fusion and not self.fusion_available:
            note = self.fusion_unavailable_reason()
            if RGB not in self.variants:
                raise SegmenterUnavailable(f"{note}, and the checkpoint has no RGB-only model to fall back on")
            warnings.warn(f"{note}; predicting without fusion", stacklevel=2)
            use_fusion = False
        if not use_fusion and RGB not in self.variants:
            raise ValueError("this checkpoint has only a semantic-fusion model; predict with fusion=True")
        variant = self.variants[variant_name(use_fusion)]
        pil = [load_image(im) for im in images]
        maps = self._label_maps(pil, label_maps) if use_fusion else None
        used = views or variant.views
        feats = encode_images_multi([variant.model], pil, maps, views=used, batch_size=batch_size)[0].to(self.device)
        labels = _resolved(maps) if use_fusion else [None] * len(pil)
        return self._decode(variant, feats, top_k, level_top, use_fusion, note, labels, decision, used)

    @torch.no_grad()
    def predict_variants(
        self,
        images: Any,
        top_k: int = 5,
        views: str | None = None,
        level_top: int = 5,
        batch_size: int = 16,
        label_maps: Sequence[np.ndarray] | None = None,
        decision: str | None = None,
    ) -> dict[str, list[Prediction]]:
        """Predictions of every variant that can run here ("fusion" needs the segmenter, "rgb"), keyed
        by variant. Same results as :meth:`predict` per variant, but the variants share the image
        preprocessing and, when their backbone configs are equal, the frozen backbone forward (variants whose
        ``views`` differ, each its own by default, are encoded apart)."""
        if views is not None:
            check_views(views)  # before the segmenter's work, not after it
        if isinstance(images, (str, Path, bytes)) or not isinstance(images, Sequence):
            images = [images]
        names = [n for n in self.variants if n != FUSION or self.fusion_available]
        pil = [load_image(im) for im in images]
        maps = self._label_maps(pil, label_maps) if FUSION in names else None
        used = {n: views or self.variants[n].views for n in names}
        feats = {}
        for vs in dict.fromkeys(used.values()):
            group = [n for n in names if used[n] == vs]
            encoded = encode_images_multi([self.variants[n].model for n in group], pil, maps, views=vs, batch_size=batch_size)
            feats.update(zip(group, encoded))
        labels = {n: _resolved(maps) if n == FUSION else [None] * len(pil) for n in names}
        return {n: self._decode(self.variants[n], feats[n].to(self.device), top_k, level_top, n == FUSION, None,
                                labels[n], decision, used[n]) for n in names}

    def _label_maps(self, images: list[Image.Image], given: Sequence[np.ndarray] | None) -> LabelMaps:
        """The images' label maps: those ``given``, else a call that waits for the segmenter, started now in
        this predictor's helper thread so that it runs beside the frozen backbone pass. On 2 cores that took
        one demo answer's segmentation and frozen pass from 143 to 113 ms (DeepLab's 2 threads beside one
        backbone thread; ``python benchmarks/app.py`` prints both stages)."""
        if given is not None:
            if len(given) != len(images):
                raise ValueError(f"{len(given)} label maps for {len(images)} images")
            return given
        if self._segment_pool is None:
            self._segment_pool = ThreadPoolExecutor(1, thread_name_prefix="geosurge-segment")
        return self._segment_pool.submit(self._segment_all, images).result

    def _segment_all(self, images: list[Image.Image]) -> list[np.ndarray]:
        return [self.segmenter(im) for im in images]

    def _decode(self, v: _Variant, feats: torch.Tensor, top_k: int, level_top: int, fused: bool, note: str | None, label_maps,
                decision: str | None, views: str) -> list[Prediction]:
        d = v.decoder(feats, decision)
        ref = v.reference.nearest(feats, d.cells, d.latlon) if v.reference is not None else None
        return [_prediction(v, d, b, top_k, level_top, fused, note, label_maps[b], ref, views) for b in range(feats.shape[0])]


def _resolved(maps: LabelMaps) -> list[np.ndarray]:
    """Label maps given outright, or those of a pending call (already finished once the features exist)."""
    return list(maps() if callable(maps) else maps)


def _share_frozen_backbones(models: list[GeoSURGE]) -> None:
    """Give models whose backbones are wholly frozen with the same signature one backbone object: its weights
    and onnxruntime sessions are then held once, not once per variant (the embedded pair's stack: ~100 MB
    less resident). Frozen weights are never trained or saved, so equal signatures mean equal weights."""
    first: dict[str, torch.nn.Module] = {}
    for m in models:
        if m.cfg.backbone.trainable_blocks == 0:
            m.backbone = first.setdefault(m.frozen_signature(), m.backbone)


def _cell(v: _Variant, level: int, index: int, score: float) -> CellScore:
    """Cell ``index`` of hierarchy level ``level`` (0-based) with a score."""
    lat, lon = v.hierarchy.levels[level].centroids[index]
    return CellScore(level + 1, int(index), v.s2_tokens[level][index], float(lat), float(lon), float(score))


def _top(v: _Variant, level: int, scores: torch.Tensor, n: int) -> list[CellScore]:
    """The ``n`` best cells of a level by ``scores`` (n_l,)."""
    val, idx = scores.topk(min(n, scores.shape[0]))
    return [_cell(v, level, i, p) for p, i in zip(val.tolist(), idx.tolist())]


def _prediction(v: _Variant, d: Decision, b: int, top_k: int, level_top: int, fused: bool, note: str | None, labels,
                ref: tuple[np.ndarray, np.ndarray, np.ndarray] | None, views: str) -> Prediction:
    """Photo ``b`` of a decoded batch: the answer, its chain and every figure beside it."""
    n_levels = len(v.hierarchy.levels)
    product = [_top(v, k, d.level_scores[k][b].exp(), max(top_k, level_top) if k == n_levels - 1 else level_top)
               for k in range(n_levels)]
    chain = [_cell(v, k, i, d.level_probs[k][b, i]) for k, i in enumerate(d.chain[b])]
    runners = [[c for c in _top(v, k, d.level_probs[k][b], level_top) if c.index != chain[k].index][: level_top - 1]
               for k in range(n_levels)]
    lat, lon = map(float, d.latlon[b])
    pred = Prediction(lat, lon, chain[-1].score, product[-1][:top_k], product, _reference(v, ref, b, lat, lon), fused, note,
                      labels, {r: float(p[b]) for r, p in d.within_km.items()}, d.rule, chain, runners,
                      ranked_by=d.ranked_by, evidence_bits=float(d.evidence_bits[b]), views=views)
    pred.evidence_text = describe_evidence(pred.evidence_bits)
    if v.decoder.posterior is not None:
        pred.credible = {int(q * 100): credible_set(d.log_post[b], q).tolist() for q in (0.5, 0.9)}
    return pred


def _reference(v: _Variant, ref, b: int, lat: float, lon: float) -> ReferenceMatch | None:
    """The nearest training photo of photo ``b`` (``ReferenceIndex.nearest``'s arrays), or None."""
    if ref is None:
        return None
    j = int(ref[0][b])
    rlat, rlon = v.reference.latlon[j]
    return ReferenceMatch(v.reference.ids[j], float(rlat), float(rlon), float(ref[1][b]),
                          float(haversine_km(lat, lon, rlat, rlon)), bool(ref[2][b]))
