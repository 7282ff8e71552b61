"""The posterior (prior x per-level likelihood ratios), its decisions and calibration, and the grouped-CV tools."""
import numpy as np
import pytest
import torch

from geosurge.eval.cv import (answer_spread, bootstrap_mean, expected_calibration_error, fit_isotonic, fit_level_weights, fit_logistic, grouped_folds,
                              score)
from geosurge.geo import build_hierarchy
from geosurge.geo.prior import PhotoDensity, read_photo_density
from geosurge.model.config import ModelConfig, PosteriorConfig
from geosurge.model.posterior import (Posterior, calibrate, combine, credible_set, likelihood_ratios, monotone_in_radius,
                                     training_counts)


@pytest.fixture(scope="module")
def world():
    """A 3-level hierarchy over points clustered in four places, and 'training photos' in three of them."""
    rng = np.random.default_rng(0)
    centres = np.array([[48.8, 2.3], [40.7, -74.0], [35.7, 139.7], [-33.9, 151.2]])
    pts = np.concatenate([c + rng.normal(0, 1.0, (n, 2)) for c, n in zip(centres, (4000, 3000, 2000, 1000))])
    h = build_hierarchy(pts[:, 0], pts[:, 1], tau_min=20, tau_maxes=[6000, 2000, 500])
    train = np.concatenate([c + rng.normal(0, 1.0, (30, 2)) for c in centres[:3]])
    return h, training_counts(h, train[:, 0], train[:, 1])


def test_likelihood_ratios_average_to_one_and_ignore_untrained_cells(world):
    h, counts = world
    logits = [torch.randn(4, n) for n in h.num_cells]
    for beta in (0.0, 1.0):
        ratios = likelihood_ratios(logits, counts, beta)
        for r, c in zip(ratios, counts):
            trained = c > 0
            assert torch.all(r[:, ~trained] == 0)  # no evidence where nothing was trained
            ref = c[trained] / c.sum() if beta else np.full(trained.sum(), 1 / trained.sum())
            # E_ref[exp(r)] = 1: a ratio against the reference distribution
            np.testing.assert_allclose((r[:, trained].exp().numpy() * ref).sum(1), 1.0, rtol=1e-9)


def test_zero_weights_give_the_prior_and_posterior_normalizes(world):
    h, counts = world
    post = Posterior(PosteriorConfig(enabled=True, level_weights=[0, 0, 0]), h, counts)
    lp = post.log_posterior([torch.randn(3, n) * 5 for n in h.num_cells])
    prior = h.finest.counts / h.finest.counts.sum()
    np.testing.assert_allclose(lp.exp().numpy(), np.tile(prior, (3, 1)), rtol=1e-9)
    lp2 = Posterior(PosteriorConfig(enabled=True), h, counts).log_posterior([torch.randn(3, n) for n in h.num_cells])
    np.testing.assert_allclose(lp2.exp().sum(1).numpy(), 1.0, rtol=1e-9)


def test_strong_evidence_moves_the_answer_and_within_rule_maximizes_mass(world):
    h, counts = world
    post = Posterior(PosteriorConfig(enabled=True, level_weights=[1, 1, 1]), h, counts)
    tokyo = np.argmin(np.abs(h.finest.centroids[:, 0] - 35.7) + np.abs(h.finest.centroids[:, 1] - 139.7))
    logits = []
    for k, n in enumerate(h.num_cells):
        z = torch.full((1, n), -20.0)
        z[0, h.ancestors()[tokyo, k]] = 20.0
        logits.append(z)
    lp = post.log_posterior(logits)
    answer = post.decide(lp)
    assert np.abs(h.finest.centroids[answer[0]] - [35.7, 139.7]).max() < 5
    for radius in (200.0, 2500.0):
        ans = post.decide(lp, f"within:{radius:g}")
        masses = [(lp.exp()[0] * torch.from_numpy(post.distances[i] <= radius)).sum().item() for i in range(len(h.finest))]
        assert masses[ans[0]] == pytest.approx(max(masses))
    # the raw chance within R grows with R and is a probability
    raw = [post.mass_within(lp, answer, r)[0] for r in (1, 25, 200, 750, 2500)]
    assert all(0 <= a <= b <= 1 + 1e-9 for a, b in zip(raw, raw[1:]))
    # so do the calibrated chances, even where the per-radius maps disagree
    crossed = {1: np.array([0.3, 0.0]), 25: np.array([0.2, 0.1]), 200: np.array([0.5, 0.05])}
    mono = monotone_in_radius(crossed)
    np.testing.assert_allclose(mono[25], [0.3, 0.1])
    np.testing.assert_allclose(mono[200], [0.5, 0.1])
    np.testing.assert_allclose(mono[1], crossed[1])


def test_median_rule_minimizes_expected_distance(world):
    h, counts = world
    post = Posterior(PosteriorConfig(enabled=True, level_weights=[1, 1, 1]), h, counts)
    lp = post.log_posterior([torch.randn(5, n) * 3 for n in h.num_cells])
    ans = post.decide(lp, "median")
    expected = lp.exp().numpy() @ post.distances.astype(np.float64)  # (B, n): mean km from each candidate cell
    np.testing.assert_allclose(expected[np.arange(5), ans], expected.min(1), rtol=1e-9)


def test_credible_set_is_the_smallest_holding_the_mass():
    p = torch.tensor([0.05, 0.5, 0.3, 0.15]).log()
    assert sorted(credible_set(p, 0.5).tolist()) == [1]
    assert sorted(credible_set(p, 0.6).tolist()) == [1, 2]
    assert sorted(credible_set(p, 0.9).tolist()) == [1, 2, 3]


def test_config_round_trip_and_validation():
    pc = PosteriorConfig(enabled=True, level_weights=[0.5, 1.0], decision="within:750",
                         calibration={"within:750@25": [[0.0, 0.5, 1.0], [0.0, 0.2, 0.9]]})
    cfg = ModelConfig(posterior=pc)
    assert ModelConfig.from_dict(cfg.to_dict()).posterior == pc
    for bad in ({"decision": "mean"}, {"decision": "within:-3"}, {"level_weights": [-0.1]}, {"train_correction": 2.0},
                {"calibration": {"argmax@25": [[0.0, 1.0], [0.6, 0.2]]}}, {"calibration": {"argmax": [[0.0], [0.1]]}}):
        with pytest.raises(ValueError):
            PosteriorConfig(**bad)


def test_isotonic_calibration_is_monotone_and_calibrated():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, 5000)
    hit = rng.uniform(0, 1, 5000) < raw**2  # overconfident raw scores
    knots = fit_isotonic(raw, hit)
    assert np.all(np.diff(knots[0]) > 0) and np.all(np.diff(knots[1]) >= 0)
    cal = calibrate(raw, knots)
    assert expected_calibration_error(raw, hit) > 10
    assert expected_calibration_error(cal, hit) < 2
    np.testing.assert_allclose(calibrate([0.5], None), [0.5])


def test_logistic_calibration_is_monotone_and_calibrated():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.01, 0.99, 5000)
    logit = np.log(raw / (1 - raw))
    hit = rng.uniform(0, 1, 5000) < 1 / (1 + np.exp(-(2 * logit - 1)))  # overconfident and biased raw scores
    knots = fit_logistic(raw, hit)
    assert knots[0][0] == 0 and knots[0][-1] == 1
    assert np.all(np.diff(knots[0]) > 0) and np.all(np.diff(knots[1]) >= 0)
    cal = calibrate(raw, knots)
    assert expected_calibration_error(raw, hit) > 5
    assert expected_calibration_error(cal, hit) < 2
    PosteriorConfig(enabled=True, calibration={"median@750": knots})  # a valid stored map


def test_balanced_ece_weighs_each_photographer_the_same():
    # 90 photos of one photographer stated 0.5 and all hit; 10 photographers with one photo each, stated 0.5, all missed
    prob = np.full(100, 0.55)
    hit = np.r_[np.ones(90, bool), np.zeros(10, bool)]
    groups = ["prolific"] * 90 + [f"p{i}" for i in range(10)]
    assert expected_calibration_error(prob, hit) == pytest.approx(100 * abs(0.55 - 0.9))
    assert expected_calibration_error(prob, hit, groups=groups) == pytest.approx(100 * abs(0.55 - 1 / 11))
    assert expected_calibration_error(prob, hit, groups=[str(i) for i in range(100)]) == pytest.approx(expected_calibration_error(prob, hit))


def test_grouped_folds_keep_photographers_together():
    groups = np.repeat([f"a{i}" for i in range(40)], np.arange(1, 41))
    folds = grouped_folds(groups, 5)
    for g in np.unique(groups):
        assert len(np.unique(folds[groups == g])) == 1
    sizes = np.bincount(folds)
    assert sizes.sum() == groups.size and sizes.max() - sizes.min() <= 40


def test_scores_balance_photographers_and_bootstrap_over_them():
    # photographer a: 9 photos, all within 1 km; photographer b: 1 photo, 2,000 km away
    dist = np.array([0.5] * 9 + [2000.0])
    groups = np.array(["a"] * 9 + ["b"])
    s = score(dist, groups)
    assert s.acc[1] == pytest.approx(90.0) and s.balanced[1] == pytest.approx(50.0)
    assert s.low[1] <= 90.0 <= s.high[1] and s.low[2500] == s.high[2500] == 100.0
    m, lo, hi = bootstrap_mean(np.array([1.0] * 9 + [0.0]), groups)
    assert m == pytest.approx(0.9) and lo <= m <= hi


def test_answer_spread_counts_distinct_points_and_the_most_common_share():
    # 6 answers at Paris (two written 1e-4 degrees apart: the same answer), 3 at Tokyo, 1 at Lima
    pts = np.array([[48.8566, 2.3522]] * 5 + [[48.8567, 2.3522]] + [[35.68, 139.69]] * 3 + [[-12.05, -77.04]])
    assert answer_spread(pts) == (3, pytest.approx(60.0))
    assert answer_spread(np.tile([[0.0, 0.0]], (7, 1))) == (1, pytest.approx(100.0))  # a constant answer
    assert answer_spread(pts[::-1] * [[1, -1]])[0] == 3  # order and sign do not matter


def test_fit_level_weights_finds_informative_levels(world):
    h, counts = world
    rng = np.random.default_rng(1)
    true_fin = rng.choice(len(h.finest), 300, p=h.finest.counts / h.finest.counts.sum())
    anc = h.ancestors()
    ratios = []
    for k, n in enumerate(h.num_cells):
        z = torch.from_numpy(rng.normal(0, 1, (300, n)))
        if k == 0:  # only the coarsest level carries signal
            z[torch.arange(300), torch.from_numpy(anc[true_fin, 0])] += 3.0
        ratios.append(z)
    post = Posterior(PosteriorConfig(enabled=True), h, counts)
    w, alpha, ll = fit_level_weights(post.log_prior, ratios, post.ancestors, true_fin)
    assert w[0] > 0.3 and w[0] > 3 * max(w[1:])
    prior_ll = post.log_prior[true_fin].mean().item()
    assert ll > prior_ll
    assert combine(post.log_prior, ratios, post.ancestors, torch.from_numpy(w)).shape == (300, len(h.finest))


def test_photo_density_constants():
    d = PhotoDensity(np.array([0.0, 0.0, 10.0]), np.array([0.0, 1.0, 100.0]), np.array([5, 4, 6]))
    assert d.densest() == (10.0, 100.0)
    lat, lon, share = d.best_point(200)  # the two points 111 km apart hold 9 of 15 photos
    assert (lat, lon) in ((0.0, 0.0), (0.0, 1.0)) and share == pytest.approx(9 / 15)
    assert d.sample_points()[0].size == 15


def test_mp16_density(shared_dir):
    d = read_photo_density(shared_dir / "data/mp16/cells_50_1000.csv")
    assert d.total > 4_000_000
    lat, lon = d.densest()
    assert abs(lat - 48.86) < 0.1 and abs(lon - 2.34) < 0.1  # Paris, as the issue found
