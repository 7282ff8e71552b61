"""``Predictor``: load a checkpoint once, geolocate photos (the API the CLI and the app use)."""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.images import load_image
from .geo.distance import haversine_km
from .geo.hierarchy import Hierarchy
from .model.checkpoint import EMBEDDED_CHECKPOINT, load_checkpoint, resolve_checkpoint, segmenter_source
from .model.evidence import NOT_MEASURED, describe_evidence, evidence_bits
from .model.encode import encode_images, encode_images_multi
from .model.geosurge import GeoSURGE
from .model.hierarchical import HierarchicalScorer, ReferenceIndex
from .model.posterior import Posterior, credible_set, load_posterior
from .model.segmenters import Segmenter, SegmenterUnavailable, create_segmenter
from .model.config import SegmenterConfig
from .model.variants import FUSION, RGB, variant_dirs, variant_name


@dataclass
class CellScore:
    level: int  # hierarchy level, 1 = coarsest (numbered 1..7 everywhere a person reads them)
    index: int  # cell index within that level
    token: str  # S2 token
    lat: float  # mean coordinate of the photos that define the cell (MP-16's, or the training photos')
    lon: float
    score: float  # product of the cell's and its ancestors' probabilities


@dataclass
class ReferenceMatch:
    id: str
    lat: float
    lon: float
    similarity: float  # cosine similarity of visual features
    distance_km: float  # from the predicted point
    in_predicted_cell: bool  # False: the predicted cell has no reference, so the nearest overall


@dataclass
class Prediction:
    lat: float
    lon: float
    score: float  # probability product of the best finest cell
    top_k: list[CellScore]  # best finest cells
    levels: list[list[CellScore]]  # best cells at every level, coarse to fine, by product score (the paper's)
    nearest_reference: ReferenceMatch | None
    fusion_used: bool
    note: str | None = None  # why fusion was not used, when it was asked for
    labels: np.ndarray | None = field(default=None, repr=False)  # ADE20K label map when segmented
    #: calibrated chance that the true location lies within R km of (lat, lon), R in 1/25/200/750/2500;
    #: empty for checkpoints without a fitted posterior
    within_km: dict[int, float] = field(default_factory=dict)
    decision: str = "argmax"  # the rule that chose (lat, lon) ("argmax": product rule of the paper)
    #: the cell containing the answer at every level, coarse to fine, with its posterior probability
    chain: list[CellScore] = field(default_factory=list)
    #: per level, the most probable other cells (posterior probability)
    runners_up: list[list[CellScore]] = field(default_factory=list)
    #: smallest sets of finest-cell indices holding 50 % and 90 % of the posterior
    credible: dict[int, list[int]] = field(default_factory=dict)
    #: information the photo added beyond where Flickr photos are taken: KL(posterior || prior) in bits over the
    #: finest cells (geosurge.model.evidence); NaN without a fitted posterior
    evidence_bits: float = math.nan
    #: that figure in plain words (``describe_evidence``)
    evidence_text: str = NOT_MEASURED

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (without the label map; an unmeasured ``evidence_bits`` is None)."""
        from dataclasses import asdict

        d = asdict(self)
        d.pop("labels")
        if math.isnan(self.evidence_bits):
            d["evidence_bits"] = None
        return d


class _Variant:
    """One loaded model with its scorer and reference index."""

    def __init__(self, model: GeoSURGE, hierarchy: Hierarchy, reference: ReferenceIndex | None, device: torch.device,
                 posterior: Posterior | None = None):
        self.model, self.hierarchy, self.reference = model, hierarchy, reference
        self.scorer = HierarchicalScorer.for_model(model, hierarchy).to(device)
        self.s2_tokens = [lvl.s2_tokens for lvl in hierarchy.levels]
        self.posterior = posterior


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
    ) -> "Predictor":
        """Load a checkpoint directory, or a directory holding ``fusion/`` and/or ``rgb/`` checkpoints, or a
        Hugging Face Hub repo id laid out the same way (``revision``, ``cache_dir`` and ``local_files_only``
        go to ``huggingface_hub.snapshot_download``). The default is the checkpoint shipped in the package.

        ``segmenter="auto"`` builds the segmenter the checkpoint was trained with (``segmenter_path``
        overrides its model path); ``None`` disables it. When it cannot be built (e.g. the DeepLab file
        is missing) the predictor still works without fusion and ``segmenter_error`` says why.
        """
        path = resolve_checkpoint(path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        variants: dict[str, _Variant] = {}
        seg_cfg, seg_home = None, path
        for name, d in variant_dirs(path).items():
            model, hierarchy, reference, _ = load_checkpoint(d, dev)
            variants[name] = _Variant(model, hierarchy, reference, dev, load_posterior(d, model.cfg.posterior, hierarchy))
            if model.uses_fusion:
                seg_cfg, seg_home = model.cfg.segmenter, d
        seg, err = None, None
        if isinstance(segmenter, Segmenter):
            seg = segmenter
        elif segmenter == "auto":
            if seg_cfg is not None:
                cfg = SegmenterConfig(seg_cfg.name, segmenter_source(seg_cfg, segmenter_path, seg_home), seg_cfg.input_size)
                try:
                    seg = create_segmenter(cfg)
                except SegmenterUnavailable as e:
                    err = str(e)
        elif segmenter is None:
            err = "segmentation was turned off"
        else:
            raise ValueError("segmenter must be 'auto', None or a Segmenter")
        return cls(variants, seg, err, dev)

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
        ten_crop: bool = False,
        level_top: int = 5,
        batch_size: int = 16,
        label_maps: Sequence[np.ndarray] | None = None,
        decision: str | None = None,
    ) -> list[Prediction]:
        """Geolocate one image or a list (PIL images, paths, bytes or arrays); one :class:`Prediction` each.

        ``fusion=True`` uses the semantic-fusion model when it and the segmenter are available, and
        otherwise falls back to the RGB-only model with ``Prediction.note`` saying why. ``fusion=False``
        needs an RGB-only model. ``ten_crop`` averages the normalized features of ten crops.
        ``label_maps`` (one per image, from :meth:`segment`) skips segmenting again. ``decision`` overrides
        the checkpoint's rule (``"argmax"``, ``"within:750"``, ...; needs a fitted posterior).
        """
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
        if not use_fusion:
            label_maps = [None] * len(pil)
        elif label_maps is None:
            label_maps = [self.segmenter(im) for im in pil]
        elif len(label_maps) != len(pil):
            raise ValueError(f"{len(label_maps)} label maps for {len(pil)} images")
        feats = encode_images(variant.model, pil, label_maps, ten_crop=ten_crop, batch_size=batch_size).to(self.device)
        return self._decode(variant, feats, top_k, level_top, use_fusion, note, label_maps, decision)

    @torch.no_grad()
    def predict_variants(
        self,
        images: Any,
        top_k: int = 5,
        ten_crop: bool = False,
        level_top: int = 5,
        batch_size: int = 16,
        label_maps: Sequence[np.ndarray] | None = None,
        decision: str | None = None,
    ) -> dict[str, list[Prediction]]:
        """Predictions of every variant that can run here ("fusion" needs the segmenter, "rgb"), keyed
        by variant. Same results as :meth:`predict` per variant, but the variants share the image
        preprocessing and, when their backbone configs are equal, the frozen backbone forward."""
        if isinstance(images, (str, Path, bytes)) or not isinstance(images, Sequence):
            images = [images]
        names = [n for n in self.variants if n != FUSION or self.fusion_available]
        pil = [load_image(im) for im in images]
        if FUSION in names:
            if label_maps is None:
                label_maps = [self.segmenter(im) for im in pil]
            elif len(label_maps) != len(pil):
                raise ValueError(f"{len(label_maps)} label maps for {len(pil)} images")
        else:
            label_maps = None
        feats = encode_images_multi([self.variants[n].model for n in names], pil, label_maps, ten_crop=ten_crop, batch_size=batch_size)
        none = [None] * len(pil)
        return {n: self._decode(self.variants[n], f.to(self.device), top_k, level_top, n == FUSION, None,
                                label_maps if n == FUSION else none, decision) for n, f in zip(names, feats)}

    def _decode(self, v: _Variant, feats: torch.Tensor, top_k: int, level_top: int, fused: bool, note: str | None, label_maps,
                decision: str | None = None) -> list[Prediction]:
        latlon, scores = v.scorer.predict_latlon(feats)
        levels = v.hierarchy.levels
        per_level = []
        for k, s in enumerate(scores):
            val, idx = s.topk(min(level_top if k < len(scores) - 1 else max(top_k, level_top), s.shape[1]), dim=1)
            per_level.append((val.exp().cpu().numpy(), idx.cpu().numpy()))
        fin_p, fin_i = per_level[-1]
        best = fin_i[:, 0]
        answers = _answers(v, feats, scores, decision)
        if answers is not None:
            latlon, best = answers["latlon"], answers["cells"]
        ref = None
        if v.reference is not None:
            r_idx, r_sim, r_in = v.reference.nearest(feats, best)
        out = []
        for b in range(feats.shape[0]):
            lvls = [
                [CellScore(k + 1, int(i), v.s2_tokens[k][i], *map(float, levels[k].centroids[i]), float(p)) for p, i in zip(ps[b], ix[b])]
                for k, (ps, ix) in enumerate(per_level)
            ]
            lat, lon = float(latlon[b, 0]), float(latlon[b, 1])
            if v.reference is not None:
                j = int(r_idx[b])
                rlat, rlon = v.reference.latlon[j]
                ref = ReferenceMatch(v.reference.ids[j], float(rlat), float(rlon), float(r_sim[b]),
                                     float(haversine_km(lat, lon, rlat, rlon)), bool(r_in[b]))
            pred = Prediction(lat, lon, float(fin_p[b, 0]), lvls[-1][:top_k], lvls, ref, fused, note, label_maps[b])
            _explain(pred, v, answers, scores, b, level_top)
            out.append(pred)
        return out


def _answers(v: _Variant, feats: torch.Tensor, scores: list[torch.Tensor], decision: str | None) -> dict[str, Any] | None:
    """Posterior, answer cells and points, calibrated chances, and per-level marginals (None without a posterior)."""
    if v.posterior is None:
        if decision not in (None, "argmax"):
            raise ValueError(f"decision {decision!r} needs a checkpoint with a fitted posterior (see benchmarks/crossval.py)")
        return None
    res = v.posterior(v.scorer.level_logits(feats), decision)
    post = res.log_post.exp()
    anc = v.posterior.ancestors
    marg = [torch.zeros(post.shape[0], n, dtype=post.dtype).index_add_(1, anc[:, k], post) for k, n in enumerate(v.hierarchy.num_cells)]
    return {"res": res, "cells": res.answer, "latlon": v.posterior.centroids[res.answer], "marginals": marg,
            "evidence": evidence_bits(res.log_post, v.posterior.log_base),
            "decision": decision or v.posterior.cfg.decision}


def _explain(pred: Prediction, v: _Variant, answers: dict[str, Any] | None, scores: list[torch.Tensor], b: int, level_top: int) -> None:
    """Fill the answer's chain of cells, the runners-up, the credible regions and the calibrated chances."""
    levels = v.hierarchy.levels
    cell = lambda k, i, p: CellScore(k + 1, int(i), v.s2_tokens[k][i], *map(float, levels[k].centroids[i]), float(p))  # noqa: E731
    if answers is None:  # the paper's rule: the chain of the best finest cell, by product score
        fin = int(pred.levels[-1][0].index)
        chain = v.hierarchy.ancestors()[fin]
        pred.chain = [cell(k, i, scores[k][b, i].exp()) for k, i in enumerate(chain)]
        pred.runners_up = [[c for c in lvl if c.index != chain[k]][: level_top - 1] for k, lvl in enumerate(pred.levels)]
        return
    res, fin = answers["res"], int(answers["cells"][b])
    chain = v.posterior.ancestors[fin].numpy()
    pred.decision = answers["decision"]
    pred.evidence_bits = float(answers["evidence"][b])
    pred.evidence_text = describe_evidence(pred.evidence_bits)
    pred.within_km = {r: float(p[b]) for r, p in res.within_km.items()}
    pred.chain = [cell(k, i, answers["marginals"][k][b, i]) for k, i in enumerate(chain)]
    pred.runners_up = []
    for k, m in enumerate(answers["marginals"]):
        val, idx = m[b].topk(min(level_top, m.shape[1]))
        pred.runners_up.append([cell(k, i, p) for p, i in zip(val.tolist(), idx.tolist()) if i != chain[k]][: level_top - 1])
    pred.credible = {int(q * 100): credible_set(res.log_post[b], q).tolist() for q in (0.5, 0.9)}
