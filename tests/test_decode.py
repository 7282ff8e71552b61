"""The one decode step (features -> Decision) and the one decision vocabulary, with and without a posterior."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geosurge.model.config import GeoConfig, ModelConfig, PosteriorConfig
from geosurge.model.decisions import CellDistances, DecisionRule, canonical_decision, describe_decision, parse_decision
from geosurge.model.decode import POSTERIOR_PROBABILITY, PRODUCT_SCORE, Decoder
from geosurge.model.hierarchical import HierarchicalScorer
from geosurge.model.posterior import Posterior, training_counts

from .test_hierarchical import clustered_world


@pytest.fixture(scope="module")
def world():
    lat, lon, h, tables, scales = clustered_world()
    scorer = HierarchicalScorer(tables, scales, h)
    counts = training_counts(h, lat[::7], lon[::7])
    return h, scorer, counts, torch.randn(6, 16)


def test_vocabulary_parses_describes_and_maps_legacy_names():
    assert parse_decision("argmax") == DecisionRule("argmax") and parse_decision("map") == DecisionRule("argmax")
    assert parse_decision("within:750.0") == DecisionRule("within", 750.0) and str(parse_decision("within:750.0")) == "within:750"
    assert canonical_decision("median") == "median" and canonical_decision("within:2500") == "within:2500"
    assert describe_decision("within:750") == "the most chance within 750 km"
    assert describe_decision("median") == "the least expected distance" and describe_decision("argmax") == "the most probable cell"
    for bad in ("mean", "within:-3", "within:abc", "within:inf", "", None, 3):
        with pytest.raises(ValueError, match="'argmax', 'median' or 'within:R'"):
            parse_decision(bad)


def test_old_configs_load_with_todays_names():
    # checkpoints written before one vocabulary: geo.decision "map", calibration keys with a float radius rule
    old = ModelConfig().to_dict()
    old["geo"]["decision"] = "map"
    old["posterior"] = {"enabled": True, "decision": "within:750.0", "calibration": {"within:750.0@2500": [[0, 1], [0, 0.5]]}}
    cfg = ModelConfig.from_dict(json.loads(json.dumps(old)))
    assert cfg.geo.decision == "argmax" and cfg.posterior.decision == "within:750"
    assert list(cfg.posterior.calibration) == ["within:750@2500"]
    with pytest.raises(ValueError, match="geo.decision must be 'argmax', 'median' or 'within:R'.*'mean'"):
        GeoConfig(decision="mean")
    with pytest.raises(ValueError, match="posterior.decision"):
        PosteriorConfig(decision="best")


def test_without_posterior_argmax_is_the_papers_best_product_cell(world):
    h, scorer, _, feats = world
    d = Decoder(scorer, h)(feats)
    best = scorer.cumulative_log_scores(feats)[-1].argmax(1).numpy()
    assert d.rule == "argmax" and d.ranked_by == PRODUCT_SCORE and not d.within_km and np.isnan(d.evidence_bits).all()
    np.testing.assert_array_equal(d.cells, best)
    np.testing.assert_allclose(d.latlon, h.finest.centroids[best])
    np.testing.assert_array_equal(d.chain, h.ancestors()[best])
    for k, probs in enumerate(d.level_probs):  # the figures beside the answer are its chain's product scores
        np.testing.assert_allclose(probs[np.arange(6), d.chain[:, k]], d.level_scores[k][np.arange(6), d.chain[:, k]].exp())


@pytest.mark.parametrize("rule", ["median", "within:500", "within:3000"])
def test_rules_without_posterior_apply_to_the_normalized_product_scores(world, rule):
    h, scorer, _, feats = world
    dec = Decoder(scorer, h, rule=rule)
    d = dec(feats)
    p = d.log_post.exp().numpy()
    np.testing.assert_allclose(p.sum(1), 1.0)
    if rule == "median":
        value = p @ dec.distances.matrix.astype(np.float64)
        np.testing.assert_allclose(value[np.arange(6), d.cells], value.min(1))
    else:
        value = p @ (dec.distances.matrix <= float(rule.split(":")[1])).astype(np.float64)
        np.testing.assert_allclose(value[np.arange(6), d.cells], value.max(1))
    assert d.rule == rule and dec(feats, decision="argmax").rule == "argmax"


def test_with_posterior_the_chain_carries_marginals_chances_and_evidence(world):
    h, scorer, counts, feats = world
    post = Posterior(PosteriorConfig(enabled=True, decision="within:750"), h, counts)
    d = Decoder(scorer, h, post)(feats)
    assert d.rule == "within:750" and d.ranked_by == POSTERIOR_PROBABILITY
    np.testing.assert_array_equal(d.cells, post.decide(post.log_posterior(scorer.level_logits(feats)), "within:750"))
    for k, m in enumerate(d.level_probs):
        np.testing.assert_allclose(m.sum(1).numpy(), 1.0)
        if k:  # a cell's probability is at most its parent's: nested cells
            assert (m[np.arange(6), d.chain[:, k]] <= d.level_probs[k - 1][np.arange(6), d.chain[:, k - 1]] + 1e-12).all()
    assert sorted(d.within_km) == [1, 25, 200, 750, 2500] and (d.evidence_bits > 0).all()
    with pytest.raises(ValueError, match="decision must be"):
        Decoder(scorer, h, post)(feats, decision="mean")


@pytest.mark.parametrize("rule", ["median", "within:750", "within:2500"])
def test_rules_by_blocks_choose_an_optimal_cell(world, rule):
    # large hierarchies are served by blocks of rows (bounded memory): an optimal cell too (exact ties, which
    # sums in another order can break by a rounding error, may go to another cell of the same value)
    h, scorer, _, feats = world
    p = torch.softmax(scorer.cumulative_log_scores(feats)[-1].double() * 3, dim=1)
    whole = CellDistances(h.finest.centroids)
    blocks = CellDistances(h.finest.centroids, keep_up_to=10, block=7)
    assert len(list(blocks.blocks())) == -(-len(h.finest) // 7)
    np.testing.assert_allclose(blocks.rows(np.array([3, 0])), whole.matrix[[3, 0]], rtol=1e-6)
    r = parse_decision(rule)
    d = whole.matrix.astype(np.float64)
    for probs in (p, torch.full((2, len(h.finest)), 1.0 / len(h.finest), dtype=torch.float64)):
        value = probs.numpy() @ (d if r.kind == "median" else (d <= r.radius_km))
        best = value.min(1) if r.kind == "median" else value.max(1)
        for distances in (blocks, whole):
            np.testing.assert_allclose(value[np.arange(len(value)), r.choose(probs, distances)], best, rtol=1e-12)
