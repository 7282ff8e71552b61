"""Honest evaluation on few photographers: grouped folds, photographer-level bootstrap, calibration, fitting.

Photos come in series: one photographer's photos sit close together, so a split by photo leaks places from
training into test, and a test set of a few photographers measures those photographers. Everything here
groups by photographer: folds hold whole photographers, intervals resample photographers, and the balanced
accuracy gives each photographer the same weight.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import isotonic_regression, minimize
from scipy.special import expit, logit

from ..model.posterior import combine

RADII_KM = (1, 25, 200, 750, 2500)


def grouped_folds(groups: Sequence[str], k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold (0..k-1) of every item; each group in one fold, folds balanced in items (largest groups first)."""
    names, inverse, sizes = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    if len(names) < k:
        raise ValueError(f"{len(names)} groups cannot make {k} folds")
    rng = np.random.default_rng(seed)
    order = sorted(range(len(names)), key=lambda g: (-sizes[g], rng.random()))
    load, fold_of = np.zeros(k, np.int64), np.empty(len(names), np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of[g] = f
        load[f] += sizes[g]
    return fold_of[inverse]


@dataclass
class Scored:
    """Accuracy at each radius with a 95 % photographer-bootstrap interval, balanced accuracy, median error."""

    acc: dict[int, float]  # % of photos
    low: dict[int, float]
    high: dict[int, float]
    balanced: dict[int, float]  # % averaged over photographers
    median_km: float
    n: int


def score(dist_km: np.ndarray, groups: Sequence[str], boot: int = 1000, seed: int = 0) -> Scored:
    """Score great-circle errors; intervals resample photographers with replacement."""
    dist_km = np.asarray(dist_km, np.float64)
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    hits = np.stack([dist_km <= r for r in RADII_KM], 1).astype(np.float64)  # (n, R)
    per_hits = np.zeros((g.max() + 1, len(RADII_KM)))
    np.add.at(per_hits, g, hits)
    per_n = np.bincount(g).astype(np.float64)
    w = np.random.default_rng(seed).multinomial(len(per_n), np.full(len(per_n), 1 / len(per_n)), size=boot).astype(np.float64)
    boot_acc = 100 * (w @ per_hits) / (w @ per_n)[:, None]
    lo, hi = np.percentile(boot_acc, [2.5, 97.5], axis=0)
    bal = 100 * (per_hits / per_n[:, None]).mean(0)
    acc = 100 * hits.mean(0)
    pick = lambda a: {r: float(v) for r, v in zip(RADII_KM, a)}  # noqa: E731
    return Scored(pick(acc), pick(lo), pick(hi), pick(bal), float(np.median(dist_km)), int(dist_km.size))


def bootstrap_mean(values: np.ndarray, groups: Sequence[str], boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-photo values and its 95 % interval resampling photographers."""
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    per_sum = np.bincount(g, weights=values)
    per_n = np.bincount(g).astype(np.float64)
    w = np.random.default_rng(seed).multinomial(len(per_n), np.full(len(per_n), 1 / len(per_n)), size=boot).astype(np.float64)
    b = (w @ per_sum) / (w @ per_n)
    lo, hi = np.percentile(b, [2.5, 97.5])
    return float(values.mean()), float(lo), float(hi)


def answer_spread(points: np.ndarray, decimals: int = 2) -> tuple[int, float]:
    """(how many distinct answers, % of photos given the most common one) of (n, 2) answer points; points
    equal to ``decimals`` degrees count as one. A model answering at the prior's level gives few."""
    _, counts = np.unique(np.round(np.asarray(points, dtype=np.float64), decimals), axis=0, return_counts=True)
    return int(counts.size), float(100.0 * counts.max() / counts.sum())


def fit_isotonic(raw: np.ndarray, hit: np.ndarray, max_knots: int = 64) -> list[list[float]]:
    """Monotone map raw -> P(hit) (pool adjacent violators), as piecewise-linear knots ``[[x...], [y...]]``."""
    order = np.argsort(raw, kind="stable")
    x, y = np.asarray(raw, np.float64)[order], np.asarray(hit, np.float64)[order]
    fitted = isotonic_regression(y).x
    # Knots at the ends of each constant block, thinned to at most max_knots (the map stays monotone).
    change = np.flatnonzero(np.diff(fitted) > 1e-12)
    idx = np.unique(np.concatenate([[0], change, change + 1, [len(x) - 1]]))
    if idx.size > max_knots:
        idx = idx[np.unique(np.linspace(0, idx.size - 1, max_knots).round().astype(int))]
    xs, ys = x[idx], np.clip(fitted[idx], 0, 1)
    xs = np.maximum.accumulate(xs + np.arange(xs.size) * 1e-12)  # strictly increasing for np.interp
    return [xs.tolist(), np.maximum.accumulate(ys).tolist()]


def fit_logistic(raw: np.ndarray, hit: np.ndarray, knots: int = 65) -> list[list[float]]:
    """Monotone map raw -> P(hit) as ``sigmoid(a * logit(raw) + b)`` with a >= 0 (Platt scaling on the log-odds),
    as piecewise-linear knots ``[[x...], [y...]]`` like :func:`fit_isotonic`. Two parameters instead of one
    step per block: less variance when the map is fitted on a few dozen photographers."""
    z = _logit(raw)
    y = np.asarray(hit, np.float64)

    def nll(ab: np.ndarray) -> tuple[float, np.ndarray]:
        t = ab[0] * z + ab[1]
        p = expit(t)
        loss = np.mean(np.logaddexp(0, t) - y * t)
        return float(loss), np.array([np.mean((p - y) * z), np.mean(p - y)])

    a, b = minimize(nll, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(0.0, None), (None, None)]).x
    xs = np.linspace(0.0, 1.0, knots)
    ys = expit(a * _logit(xs) + b)
    return [xs.tolist(), np.maximum.accumulate(ys).tolist()]


def _logit(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Log-odds, with masses of exactly 0 or 1 (common: a cell holds everything or nothing) kept finite."""
    return logit(np.clip(np.asarray(p, np.float64), eps, 1 - eps))


def expected_calibration_error(prob: np.ndarray, hit: np.ndarray, bins: int = 10, groups: Sequence[str] | None = None) -> float:
    """ECE in points: the mean |confidence - frequency| over equal-width bins, weighted by photos, or with
    ``groups`` by photographer (each photographer's photos together weigh the same: a prolific
    photographer's series is one draw of where people go, not hundreds)."""
    prob, hit = np.asarray(prob, np.float64), np.asarray(hit, np.float64)
    if prob.size == 0:
        return 0.0
    w = np.ones_like(prob)
    if groups is not None:
        _, g = np.unique(np.asarray(groups), return_inverse=True)
        w = 1.0 / np.bincount(g)[g]
    b = np.minimum((prob * bins).astype(int), bins - 1)
    gap = np.abs(np.bincount(b, weights=w * prob, minlength=bins) - np.bincount(b, weights=w * hit, minlength=bins))
    return float(100 * gap.sum() / w.sum())


def reliability(prob: np.ndarray, hit: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean confidence, observed frequency, count) per non-empty equal-width bin."""
    b = np.minimum((np.asarray(prob) * bins).astype(int), bins - 1)
    n = np.bincount(b, minlength=bins)
    keep = n > 0
    conf = np.bincount(b, weights=prob, minlength=bins)[keep] / n[keep]
    freq = np.bincount(b, weights=np.asarray(hit, np.float64), minlength=bins)[keep] / n[keep]
    return conf, freq, n[keep]


def fit_level_weights(log_prior: torch.Tensor, ratios: Sequence[torch.Tensor], ancestors: torch.Tensor, true_fin: np.ndarray,
                      upper: float = 4.0, fit_prior: bool = True) -> tuple[np.ndarray, float, float]:
    """Per-level weights (1 / temperature, in [0, upper]) and the prior's weight (in [0, 2]; fixed at 1 unless
    ``fit_prior``) maximizing the mean log posterior of the true finest cell. Returns (weights, prior weight,
    mean log-probability in nats). Photos outside every finest cell are left out."""
    ok = true_fin >= 0
    rs = [r[ok] for r in ratios]
    tgt = torch.from_numpy(true_fin[ok])

    def nll(x: np.ndarray) -> tuple[float, np.ndarray]:
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        lp = combine(log_prior, rs, ancestors, xt[:-1], xt[-1])
        loss = -lp.gather(1, tgt[:, None]).mean()
        loss.backward()
        return loss.item(), xt.grad.numpy().copy()

    bounds = [(0.0, upper)] * len(ratios) + [(0.0, 2.0) if fit_prior else (1.0, 1.0)]
    res = minimize(nll, np.r_[np.full(len(ratios), 0.1), 1.0], jac=True, method="L-BFGS-B", bounds=bounds)
    return res.x[:-1], float(res.x[-1]), -float(res.fun)
