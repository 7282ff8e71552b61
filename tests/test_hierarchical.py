import numpy as np
import pytest
import torch

from geosurge.geo import build_hierarchy
from geosurge.model.hierarchical import HierarchicalScorer, ReferenceIndex


def clustered_world() -> tuple:
    """(photo lats, lons, a 4-level hierarchy over them, random cell tables, per-level scales)."""
    rng = np.random.default_rng(0)
    lat = np.r_[rng.normal(48, 2, 3000), rng.normal(35, 3, 2000), rng.uniform(-50, 60, 1000)]
    lon = np.r_[rng.normal(5, 3, 3000), rng.normal(-100, 5, 2000), rng.uniform(-180, 180, 1000)]
    h = build_hierarchy(lat, lon, tau_min=10, tau_maxes=[2000, 500, 150, 60])
    torch.manual_seed(0)
    tables = [torch.nn.functional.normalize(torch.randn(n, 16), dim=-1) for n in h.num_cells]  # as a head's scoring()
    return lat, lon, h, tables, torch.tensor([14.0, 10.0, 20.0, 5.0])


@pytest.fixture(scope="module")
def setup():
    _, _, h, tables, scales = clustered_world()
    return h, HierarchicalScorer(tables, scales, h), tables, scales


def test_per_level_softmax(setup):
    h, scorer, _, _ = setup
    feats = torch.randn(4, 16)
    for lp in scorer.level_log_probs(feats):
        torch.testing.assert_close(lp.exp().sum(1), torch.ones(4, dtype=lp.dtype))


def test_matches_brute_force(setup):
    h, scorer, tables, scales = setup
    feats = torch.randn(3, 16)
    got = scorer.cumulative_log_scores(feats)[-1]
    anc = h.ancestors()
    v = torch.nn.functional.normalize(feats, dim=-1).double()
    for b in range(3):
        probs = []
        for k, t in enumerate(tables):
            cos = v[b] @ torch.nn.functional.normalize(t.double(), dim=-1).T
            probs.append(torch.softmax(cos * scales[k].double(), dim=0))
        for c in range(0, len(h.finest), 7):
            expect = np.prod([float(probs[k][anc[c, k]]) for k in range(len(tables))])
            assert float(got[b, c].exp()) == pytest.approx(expect, rel=1e-4)


def test_intermediate_levels_are_products_of_ancestors(setup):
    h, scorer, _, _ = setup
    feats = torch.randn(2, 16)
    logp = scorer.level_log_probs(feats)
    cum = scorer.cumulative_log_scores(feats)
    k = 2
    c = 5
    p1 = h.levels[2].parents[c]
    p0 = h.levels[1].parents[p1]
    torch.testing.assert_close(cum[k][:, c], logp[2][:, c] + logp[1][:, p1] + logp[0][:, p0])


def test_mismatched_tables_rejected(setup):
    h = setup[0]
    with pytest.raises(ValueError, match="do not match"):
        HierarchicalScorer([torch.randn(3, 16)], torch.ones(1), h)


def test_reference_nearest_in_cell_and_fallback():
    feats = torch.eye(4)
    ref = ReferenceIndex(feats, np.zeros((4, 2)), ["a", "b", "c", "d"], np.array([0, 0, 1, -1]))
    q = torch.tensor([[1.0, 0.9, 0, 0], [1.0, 0.0, 0.0, 0.0]])
    idx, sim, inside = ref.nearest(q, np.array([0, 5]))
    assert idx.tolist() == [0, 0] and inside.tolist() == [True, False]
    idx, _, inside = ref.nearest(torch.tensor([[0.0, 0.0, 0.0, 1.0]]), np.array([1]))
    assert idx.tolist() == [2] and inside.tolist() == [True]  # best *inside* cell 1, not the global best
    # no reference in the answer's cell: the most similar within the radius of the answer, not the most similar anywhere
    near = ReferenceIndex(feats, np.array([[0.0, 0.0], [52.0, 4.0], [48.9, 2.3], [-34.0, 151.0]]), list("abcd"), np.array([0, 0, 1, 1]))
    q = torch.tensor([[0.1, 0.0, 0.2, 1.0]])  # most like d (Sydney), then c (Paris)
    assert near.nearest(q, np.array([7]))[0].tolist() == [3]
    idx, sim, inside = near.nearest(q, np.array([7]), np.array([[52.1, 4.3]]), radius_km=750)
    assert idx.tolist() == [2] and not inside[0]  # Paris, 450 km from The Hague; b (52, 4) looks less alike
    assert near.nearest(q, np.array([7]), np.array([[-80.0, 0.0]]), radius_km=750)[0].tolist() == [3]  # none near: anywhere


def test_prior_is_added_once_per_cell(setup):
    h, plain, tables, scales = setup
    with_prior = HierarchicalScorer(tables, scales, h, prior_weight=1.0)
    feats = torch.randn(3, 16)
    for k, (a, b) in enumerate(zip(plain.cumulative_log_scores(feats), with_prior.cumulative_log_scores(feats))):
        counts = h.levels[k].counts
        torch.testing.assert_close(b - a, torch.from_numpy(np.log(counts / counts.sum())).float().expand_as(a))
