"""The posterior fitted and judged on out-of-fold scores (photographer-grouped cross-validation).

Given every photo's per-level logits from a model that never saw its photographer, and each fold's training
counts, this fits what the shipped posterior needs (per-level weights, the train-frequency correction, the
decision rule, the calibration maps: :func:`fit_shipped_posterior`) and judges the recipe honestly by
cross-fitting (fold k judged with what the other folds' scores fitted: :func:`evaluate_posterior`).
``geosurge train`` (``cv:`` in its config) and ``benchmarks/crossval.py`` both call these.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..geo.distance import haversine_km
from ..model.config import PosteriorConfig
from ..model.posterior import Posterior, calibrate, combine, likelihood_ratios, monotone_in_radius
from .cv import RADII_KM, answer_spread, bootstrap_mean, expected_calibration_error, fit_isotonic, fit_level_weights, fit_logistic, score

DECISIONS = ("argmax", "median", "within:25", "within:200", "within:750", "within:2500")
#: how raw posterior mass becomes a stated chance. Logistic by default: two parameters per map vary less than
#: isotonic's steps when fitted on four folds of ~30 photographers (ECE at 750 km 3.0 vs 4.9)
CALIBRATORS: dict[str, Callable[[np.ndarray, np.ndarray], list[list[float]]]] = {"isotonic": fit_isotonic, "logistic": fit_logistic}
#: the train-frequency corrections tried (0: InfoNCE scores are likelihood ratios; 1: a classifier's posterior)
CORRECTIONS = (0.0, 1.0)


@dataclass
class OutOfFold:
    """Per-level logits of every photo from the model of the fold that left it out, and each fold's training
    photos per cell and level."""

    logits: list[np.ndarray]  # per level (n, cells)
    counts: list[list[np.ndarray]]  # per fold, per level (cells,)
    seconds: float = 0.0


@dataclass
class PosteriorFit:
    """How the posterior is fitted: the calibration map and whether the prior's exponent is free."""

    calibration: str = "logistic"
    fit_prior: bool = False
    calibrate: Callable = field(init=False)

    def __post_init__(self) -> None:
        self.calibrate = CALIBRATORS[self.calibration]


def oof_ratios(oof: OutOfFold, folds: np.ndarray, beta: float) -> list[torch.Tensor]:
    """Per-level likelihood ratios of every photo, each under its own fold's training counts."""
    out = [torch.zeros(z.shape, dtype=torch.float64) for z in oof.logits]
    for k in range(folds.max() + 1):
        te = np.flatnonzero(folds == k)
        zs = [torch.from_numpy(z[te]) for z in oof.logits]
        for lvl, r in enumerate(likelihood_ratios(zs, oof.counts[k], beta)):
            out[lvl][te] = r
    return out


def fit_posterior(post: Posterior, ratios_by_beta: dict, true_fin: np.ndarray, truth: np.ndarray, rows: np.ndarray,
                  fit_prior: bool = False) -> dict:
    """Weights + correction (max mean log-probability) and decision (max sum of accuracy at 200/750/2500 km),
    fitted on ``rows`` only."""
    best = None
    for beta, ratios in ratios_by_beta.items():
        w, alpha, ll = fit_level_weights(post.log_prior, [r[rows] for r in ratios], post.ancestors, true_fin[rows], fit_prior=fit_prior)
        if best is None or ll > best["loglik"]:
            best = {"beta": beta, "weights": w, "alpha": alpha, "loglik": ll}
    lp = log_posterior_of(post, ratios_by_beta, best, rows)
    gains = {rule: sum(float(np.mean(hit_and_mass(post, lp, rule, truth[rows])[r][0])) for r in (200, 750, 2500)) for rule in DECISIONS}
    return {**best, "decision": max(gains, key=gains.get)}


def log_posterior_of(post: Posterior, ratios_by_beta: dict, fit: dict, rows: np.ndarray) -> torch.Tensor:
    ratios = [r[rows] for r in ratios_by_beta[fit["beta"]]]
    return combine(post.log_prior, ratios, post.ancestors, torch.from_numpy(fit["weights"]), fit["alpha"])


def hit_and_mass(post: Posterior, lp: torch.Tensor, rule: str, truth: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per radius R: (whether the truth lies within R km of the rule's answer, the posterior mass there)."""
    ans = post.decide(lp, rule)
    d = haversine_km(post.centroids[ans, 0], post.centroids[ans, 1], truth[:, 0], truth[:, 1])
    return {r: (d <= r, post.mass_within(lp, ans, r)) for r in RADII_KM}


def fit_calibration(post: Posterior, lp: torch.Tensor, truth: np.ndarray, calibrate_fn: Callable = fit_logistic) -> dict:
    """A map from posterior mass to stated chance per decision rule and radius (``"within:750@2500"``)."""
    maps = {}
    for rule in DECISIONS:
        for r, (hit, mass) in hit_and_mass(post, lp, rule, truth).items():
            maps[f"{rule}@{r}"] = calibrate_fn(mass, hit)
    return maps


def evaluate_posterior(post: Posterior, ratios_by_beta: dict, folds: np.ndarray, true_fin: np.ndarray, truth: np.ndarray,
                       groups: np.ndarray, how: PosteriorFit | None = None) -> dict:
    """Cross-fitted: every fold judged with the weights and decision the other folds' out-of-fold scores fitted.

    The chances go through calibration maps fitted leaving the photo's photographer out: the shipped maps are
    fitted on all photographers and meet a new one, which leave-one-photographer-out mimics; maps fitted on
    four folds instead meet a fold whose hit rate is off in the opposite direction (17 % vs 48 % within
    2,500 km between folds), which states that offset as miscalibration."""
    how = how or PosteriorFit()
    n = truth.shape[0]
    res = {"answer": {rule: np.zeros(n, np.int64) for rule in DECISIONS + ("default",)},
           "logpost_true": np.full(n, np.nan), "fits": []}
    hit = {rule: {r: np.zeros(n, bool) for r in RADII_KM} for rule in DECISIONS}
    mass = {rule: {r: np.zeros(n) for r in RADII_KM} for rule in DECISIONS}
    chosen = np.empty(n, dtype=object)
    for k in range(folds.max() + 1):
        te, tr = np.flatnonzero(folds == k), np.flatnonzero(folds != k)
        fit = fit_posterior(post, ratios_by_beta, true_fin, truth, tr, how.fit_prior)
        res["fits"].append({"beta": fit["beta"], "weights": fit["weights"].round(3).tolist(), "alpha": round(fit["alpha"], 3),
                            "decision": fit["decision"]})
        lp = log_posterior_of(post, ratios_by_beta, fit, te)
        for rule in DECISIONS:
            res["answer"][rule][te] = post.decide(lp, rule)
            for r, (h, m) in hit_and_mass(post, lp, rule, truth[te]).items():
                hit[rule][r][te], mass[rule][r][te] = h, m
        res["answer"]["default"][te] = res["answer"][fit["decision"]][te]
        chosen[te] = fit["decision"]
        ok = true_fin[te] >= 0
        res["logpost_true"][te[ok]] = lp[torch.from_numpy(np.flatnonzero(ok)), torch.from_numpy(true_fin[te][ok])].numpy()
    res["prob"] = chances_leaving_photographers_out(hit, mass, chosen, groups, how.calibrate)
    return res


def chances_leaving_photographers_out(hit: dict, mass: dict, chosen: np.ndarray, groups: np.ndarray,
                                      calibrate_fn: Callable = fit_logistic) -> dict[int, np.ndarray]:
    """Each photo's calibrated chance at every radius under its fold's rule, through a map fitted on the other
    photographers' photos (their masses and hits under that rule)."""
    prob = {r: np.zeros(len(groups)) for r in RADII_KM}
    for author in np.unique(groups):
        me = groups == author
        rule = chosen[me][0]
        for r in RADII_KM:
            prob[r][me] = calibrate(mass[rule][r][me], calibrate_fn(mass[rule][r][~me], hit[rule][r][~me]))
    return monotone_in_radius(prob)


def fit_shipped_posterior(post: Posterior, ratios_by_beta: dict, true_fin: np.ndarray, truth: np.ndarray,
                          how: PosteriorFit, record: dict) -> PosteriorConfig:
    """The posterior a checkpoint ships: fitted on every photo's out-of-fold scores; ``record`` (how it was
    chosen: command, data, CV figures) is kept in ``PosteriorConfig.cv``."""
    rows = np.arange(truth.shape[0])
    fit = fit_posterior(post, ratios_by_beta, true_fin, truth, rows, how.fit_prior)
    maps = fit_calibration(post, log_posterior_of(post, ratios_by_beta, fit, rows), truth, how.calibrate)
    return PosteriorConfig(enabled=True, level_weights=[round(float(w), 5) for w in fit["weights"]],
                           prior_weight=round(float(fit["alpha"]), 5), train_correction=float(fit["beta"]),
                           decision=fit["decision"], calibration=maps,
                           cv={**record, "mean_log_prob_true_cell": round(fit["loglik"], 4)})


def cv_figures(post: Posterior, res: dict, truth: np.ndarray, true_fin: np.ndarray, groups: np.ndarray) -> dict:
    """What the record of a checkpoint says about its recipe under CV: accuracy of the CV-chosen decision with
    photographer-bootstrap intervals, bits per photo beyond the prior, ECE of the stated chances, and how many
    distinct answers it gives (with the share of the most common one)."""
    points = post.centroids[res["answer"]["default"]]
    d = _dist(points, truth)
    s = score(d, groups)
    distinct, top_share = answer_spread(points)
    lp = res["logpost_true"]
    ok = np.isfinite(lp)
    bits = (lp[ok] - post.log_prior.numpy()[true_fin[ok]]) / np.log(2)
    b = bootstrap_mean(bits, groups[ok]) if ok.any() else (float("nan"),) * 3
    hits = {r: d <= r for r in RADII_KM}
    return {
        "accuracy_pct": {str(r): [round(s.acc[r], 1), round(s.low[r], 1), round(s.high[r], 1)] for r in RADII_KM},
        "balanced_accuracy_pct": {str(r): round(s.balanced[r], 1) for r in RADII_KM},
        "median_km": round(s.median_km, 1),
        "bits_per_photo": [round(float(v), 3) for v in b],
        "ece_points": {str(r): round(expected_calibration_error(res["prob"][r], hits[r]), 1) for r in RADII_KM},
        "decisions_per_fold": [f["decision"] for f in res["fits"]],
        "distinct_answers": distinct,
        "most_common_answer_pct": round(top_share, 1),
    }


def _dist(points: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return haversine_km(points[:, 0], points[:, 1], truth[:, 0], truth[:, 1])
