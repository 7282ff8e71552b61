import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from geosurge import Predictor
from geosurge.model.checkpoint import CheckpointError, load_checkpoint
from geosurge.model.config import SegmenterConfig
from geosurge.model.segmenters import SegmenterUnavailable, create_segmenter

from .helpers import make_checkpoint


@pytest.fixture(scope="module")
def segmenter(shared_dir):
    return create_segmenter(SegmenterConfig("deeplab-ade20k", str(shared_dir / "models/deeplabv3-mobilenetv2-ade20k/model.tflite")))


@pytest.fixture(scope="module")
def pair(tmp_path_factory, shared_dir, segmenter):
    root = tmp_path_factory.mktemp("ckpt")
    make_checkpoint(root / "fusion", shared_dir, fusion=True, segmenter=segmenter)
    make_checkpoint(root / "rgb", shared_dir, fusion=False, seed=1)
    return root


@pytest.fixture(scope="module")
def photos(shared_dir):
    import csv

    rows = list(csv.DictReader(open(shared_dir / "data/im2gps3k-dev/test.csv")))[:3]
    return [shared_dir / "data/im2gps3k-dev/images" / r["image"] for r in rows]


def test_only_intended_parameters_train(pair):
    model, *_ = load_checkpoint(pair / "fusion")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    n_blocks = len(model.backbone.net._blocks)
    for n in trainable:
        assert n.startswith(("fusion.", "geo.", f"backbone.net._blocks.{n_blocks - 1}.", "backbone.net._conv_head", "backbone.net._bn1"))
    assert any(n.startswith("fusion.") for n in trainable) and "geo.logit_scale" in trainable
    assert not any(n.startswith("backbone.net._blocks.0.") for n in trainable)


def test_checkpoint_is_small_and_never_pickled(pair):
    files = sorted(p.name for p in (pair / "fusion").iterdir())
    assert files == ["config.json", "hierarchy.json", "hierarchy.npz", "model.safetensors", "reference.json", "reference.safetensors"]
    state = load_file(str(pair / "fusion" / "model.safetensors"))
    assert not any(k.startswith("backbone.net._blocks.0.") for k in state)  # frozen weights come from the package
    cfg = json.loads((pair / "fusion" / "config.json").read_text())
    assert cfg["model"]["backbone"]["name"] == "efficientnet-lite0" and cfg["model"]["fusion"]["enabled"]


def test_without_posterior_the_rule_is_named_and_evidence_not_measured(pair, photos, segmenter):
    from geosurge.model.decode import PRODUCT_SCORE
    from geosurge.model.evidence import NOT_MEASURED

    p = Predictor.from_pretrained(pair / "rgb")
    [a] = p.predict(photos[0], fusion=False)
    assert a.decision == "argmax" and a.ranked_by == PRODUCT_SCORE and not a.within_km
    assert a.chain[-1].index == a.top_k[0].index and a.score == pytest.approx(a.top_k[0].score)  # the paper's best cell
    assert a.evidence_text == NOT_MEASURED and a.as_dict()["evidence_bits"] is None
    [m] = p.predict(photos[0], fusion=False, decision="within:2500")  # the same rules apply to the product scores
    assert m.decision == "within:2500" and (m.lat, m.lon) == pytest.approx((m.chain[-1].lat, m.chain[-1].lon))


def test_round_trip_bit_for_bit(pair, photos, segmenter, tmp_path):
    from geosurge.model.checkpoint import save_checkpoint

    model, h, ref, cfg = load_checkpoint(pair / "fusion")
    save_checkpoint(tmp_path / "again", model, h, ref, extra=cfg.get("training"))
    a = Predictor.from_pretrained(pair / "fusion", segmenter=segmenter).predict(photos, top_k=3)
    b = Predictor.from_pretrained(tmp_path / "again", segmenter=segmenter).predict(photos, top_k=3)
    for x, y in zip(a, b):
        assert x.as_dict() == y.as_dict()


def test_predict_outputs(pair, photos, segmenter):
    p = Predictor.from_pretrained(pair, segmenter=segmenter)
    assert p.fusion_available
    res = p.predict(photos, top_k=4)
    assert len(res) == 3
    for r in res:
        assert -90 <= r.lat <= 90 and -180 <= r.lon <= 180 and 0 < r.score <= 1
        assert len(r.top_k) == 4 and r.top_k[0].score == pytest.approx(r.score)
        assert [c.score for c in r.top_k] == sorted((c.score for c in r.top_k), reverse=True)
        assert len(r.levels) == 3 and all(len(lv) >= 1 for lv in r.levels)
        # the best finest cell's ancestors: its product score is at most each coarser product
        assert r.levels[0][0].score >= r.score
        assert r.fusion_used and r.labels is not None
        assert r.nearest_reference is not None and r.nearest_reference.distance_km >= 0
    single = p.predict(str(photos[0]))
    assert len(single) == 1 and single[0].lat == res[0].lat
    rgb = p.predict(photos[0], fusion=False)[0]
    assert not rgb.fusion_used and rgb.labels is None
    assert res[0].views == "center"  # a checkpoint whose training config does not say: the centre crop
    ten = p.predict(photos[0], views="ten")[0]
    assert -90 <= ten.lat <= 90 and ten.views == "ten"


def test_predict_variants_matches_predict(pair, photos, segmenter):
    """Sharing the frozen backbone pass between the two variants changes nothing in their answers."""
    p = Predictor.from_pretrained(pair, segmenter=segmenter)
    # their backbones keep a trainable block each, so each variant keeps its own
    assert p.variants["fusion"].model.backbone is not p.variants["rgb"].model.backbone
    maps = [p.segment(ph) for ph in photos]
    both = p.predict_variants(photos, top_k=3, label_maps=maps)
    assert set(both) == {"fusion", "rgb"}
    for name in ("fusion", "rgb"):
        alone = p.predict(photos, top_k=3, fusion=name == "fusion", label_maps=maps)
        for x, y in zip(both[name], alone):
            assert (x.lat, x.lon) == pytest.approx((y.lat, y.lon), abs=1e-6)
            assert [c.index for c in x.top_k] == [c.index for c in y.top_k]
            assert [c.score for c in x.top_k] == pytest.approx([c.score for c in y.top_k], rel=1e-4)
            assert x.fusion_used == (name == "fusion")
    # segmenting itself (beside the backbone pass, in a helper thread) gives the same label maps and answers
    auto = p.predict_variants(photos, top_k=3)
    for name in ("fusion", "rgb"):
        for x, y in zip(auto[name], both[name]):
            assert x.as_dict() == y.as_dict()
    assert all(np.array_equal(x.labels, m) for x, m in zip(auto["fusion"], maps))
    p.segmenter = None  # without a segmenter only the RGB-only variant can answer
    assert set(p.predict_variants(photos[0])) == {"rgb"}


def test_views_default_to_the_checkpoints_own(pair, photos, segmenter, tmp_path):
    """Without view_cache in its training config a checkpoint encodes the centre crop; with it, the views it was
    trained on. Each variant of a pair uses its own, also when both are encoded together."""
    import shutil

    from geosurge.model.checkpoint_dir import CheckpointDir

    assert {n: v.inference_views for n, v in CheckpointDir.read(pair).variants.items()} == {"fusion": "center", "rgb": "center"}
    mixed = tmp_path / "mixed"
    shutil.copytree(pair, mixed)
    cfg = json.loads((mixed / "fusion/config.json").read_text())
    cfg["training"]["config"] = {"data": {"view_cache": True, "views": "five"}}
    (mixed / "fusion/config.json").write_text(json.dumps(cfg))
    assert {n: v.inference_views for n, v in CheckpointDir.read(mixed).variants.items()} == {"fusion": "five", "rgb": "center"}
    p = Predictor.from_pretrained(mixed, segmenter=segmenter)
    maps = [p.segment(ph) for ph in photos[:2]]
    both = p.predict_variants(photos[:2], label_maps=maps)
    for name, views in (("fusion", "five"), ("rgb", "center")):
        alone = p.predict(photos[:2], fusion=name == "fusion", views=views, label_maps=maps)
        assert [r.views for r in both[name]] == [views, views]
        for x, y in zip(both[name], alone):
            assert (x.lat, x.lon) == pytest.approx((y.lat, y.lon), abs=1e-6)
            assert [c.score for c in x.top_k] == pytest.approx([c.score for c in y.top_k], rel=1e-4)
    for bad in (lambda: p.predict(photos[0], views="bogus"), lambda: p.predict_variants(photos[0], views="all")):
        with pytest.raises(ValueError, match="views must be one of 'center', 'ten', 'five'"):
            bad()
    cfg["training"]["config"]["data"]["views"] = "seven"
    (mixed / "fusion/config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="'seven'"):
        CheckpointDir.read(mixed).variant("fusion").inference_views


def test_embedded_checkpoint_encodes_the_centre_crop_it_was_trained_on():
    """The shipped pair was trained and cross-validated on the centre crop of each photo: that is its default
    encoding, and five views are a different one. Its two variants hold one frozen backbone between them."""
    from importlib.resources import files

    from geosurge.data.images import load_image
    from geosurge.model.encode import encode_images

    p = Predictor.from_pretrained(segmenter=None)
    assert {n: v.inference_views for n, v in p.checkpoint.variants.items()} == {"fusion": "center", "rgb": "center"}
    assert {n: v.views for n, v in p.variants.items()} == {"fusion": "center", "rgb": "center"}
    assert p.variants["fusion"].model.backbone is p.variants["rgb"].model.backbone
    photo = files("geosurge.app") / "examples" / "Apple_iPhone_4.jpg"
    [default] = p.predict(str(photo), fusion=False)
    [center] = p.predict(str(photo), fusion=False, views="center")
    [five] = p.predict(str(photo), fusion=False, views="five")
    assert default.views == "center" and five.views == "five" and default.as_dict() == center.as_dict()
    assert five.evidence_bits != pytest.approx(default.evidence_bits, abs=1e-4)
    model, img = p.variants["rgb"].model, load_image(str(photo))
    f_default, f_five = (encode_images(model, [img], views=v) for v in (p.variants["rgb"].views, "five"))
    assert not torch.allclose(f_default, f_five, atol=1e-3)
    with pytest.raises(ValueError, match="views must be one of 'center', 'ten', 'five', not 'bogus'"):
        encode_images(model, [img], views="bogus")


def test_segmenter_missing_falls_back_with_reason(pair, photos, shared_dir):
    p = Predictor.from_pretrained(pair, segmenter_path=str(shared_dir / "no-such-model.tflite"))
    assert not p.fusion_available and "not found" in p.fusion_unavailable_reason()
    with pytest.warns(UserWarning, match="without fusion"):
        [r] = p.predict(photos[0])
    assert not r.fusion_used and "not found" in r.note
    only_fusion = Predictor.from_pretrained(pair / "fusion", segmenter=None)
    with pytest.raises(SegmenterUnavailable, match="no RGB-only model"):
        only_fusion.predict(photos[0])


def test_segmenter_setting_comes_from_the_checkpoint(pair, shared_dir, tmp_path):
    """The label maps at inference are made as in training: the checkpoint's segmenter input size is used,
    also when the model file's place is overridden."""
    import shutil

    d = tmp_path / "fusion-385"
    shutil.copytree(pair / "fusion", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["segmenter"]["input_size"] = 385
    (d / "config.json").write_text(json.dumps(cfg))
    assert Predictor.from_pretrained(d).segmenter.input_size == 385
    moved = Predictor.from_pretrained(d, segmenter_path=str(shared_dir / "models/deeplabv3-mobilenetv2-ade20k/model.tflite"))
    assert moved.segmenter.input_size == 385
    assert Predictor.from_pretrained(pair / "fusion").segmenter.input_size == 513  # not set: the file's own


def test_bad_checkpoints(pair, tmp_path):
    import shutil

    with pytest.raises(FileNotFoundError, match="holds no GeoSURGE checkpoint"):
        Predictor.from_pretrained(tmp_path)
    d = tmp_path / "broken"
    shutil.copytree(pair / "rgb", d)
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(d)
    shutil.copy(pair / "rgb" / "model.safetensors", d / "model.safetensors")
    state = load_file(str(d / "model.safetensors"))
    state["geo.tables.0"] = torch.zeros(3, 64)
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(d)
    del state["geo.tables.0"]
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(d)


def test_cli_predict(pair, photos, shared_dir):
    env = {"GEOSURGE_DEEPLAB": str(shared_dir / "models/deeplabv3-mobilenetv2-ade20k/model.tflite")}
    import os

    r = subprocess.run([sys.executable, "-m", "geosurge", "predict", "--checkpoint", str(pair), str(photos[0]), "--top-k", "2"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    line = r.stdout.splitlines()[0]
    lat, lon = (float(x) for x in line.split(": ", 1)[1].split("  ")[0].split(", "))
    assert -90 <= lat <= 90 and -180 <= lon <= 180 and "[fusion, argmax]" in line
    assert "product score" in r.stdout and "level 1: cell" in r.stdout and "level 3: cell" in r.stdout
    bad = photos[0].parent.parent / "train.csv"
    r = subprocess.run([sys.executable, "-m", "geosurge", "predict", "--checkpoint", str(pair), str(bad)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert r.returncode == 1 and "not a readable image" in r.stderr


@pytest.fixture(scope="module")
def posterior_pair(tmp_path_factory, pair, shared_dir):
    """The pair with a posterior: training counts from train.csv, fixed weights and a calibration map."""
    import csv
    import shutil

    from geosurge.geo import Hierarchy
    from geosurge.model.checkpoint import save_training_counts
    from geosurge.model.posterior import training_counts

    root = tmp_path_factory.mktemp("posterior")
    rows = list(csv.DictReader(open(shared_dir / "data/im2gps3k-dev/train.csv")))
    lat, lon = np.array([float(r["lat"]) for r in rows]), np.array([float(r["lon"]) for r in rows])
    for v in ("fusion", "rgb"):
        shutil.copytree(pair / v, root / v)
        h = Hierarchy.load(root / v)
        save_training_counts(root / v, training_counts(h, lat, lon))
        cfg = json.loads((root / v / "config.json").read_text())
        cfg["model"]["posterior"] = {"enabled": True, "level_weights": [0.5, 0.3, 0.2], "decision": "within:750",
                                     "calibration": {f"{d}@{r}": [[0.0, 1.0], [0.0, 0.8]] for d in ("argmax", "within:750")
                                                     for r in (1, 25, 200, 750, 2500)}}
        (root / v / "config.json").write_text(json.dumps(cfg))
    return root


def test_posterior_prediction(posterior_pair, photos, segmenter):
    p = Predictor.from_pretrained(posterior_pair, segmenter=segmenter)
    for r in p.predict(photos, top_k=3):
        assert r.decision == "within:750"
        assert sorted(r.within_km) == [1, 25, 200, 750, 2500]
        chances = [r.within_km[k] for k in sorted(r.within_km)]
        assert all(0 <= a <= b <= 0.8 + 1e-9 for a, b in zip(chances, chances[1:]))  # calibrated through the map
        # the chain: the cell holding the answer at every level, numbered 1..3, nested, probabilities not growing
        assert [c.level for c in r.chain] == [1, 2, 3]
        assert all(a.score >= b.score - 1e-9 for a, b in zip(r.chain, r.chain[1:]))
        h = p.variants["fusion"].hierarchy
        assert list(h.ancestors()[r.chain[-1].index]) == [c.index for c in r.chain]
        assert (r.lat, r.lon) == pytest.approx(tuple(h.finest.centroids[r.chain[-1].index]))
        assert all(c.index != r.chain[k].index for k, lvl in enumerate(r.runners_up) for c in lvl)
        assert set(r.credible[50]) <= set(r.credible[90]) and len(r.credible[50]) >= 1
        assert [lv[0].level for lv in r.levels] == [1, 2, 3]  # the product-score cells stay, for the map's tooltips
    [a] = p.predict(photos[0], decision="argmax")
    assert a.decision == "argmax" and a.chain[-1].score == max(c.score for c in [a.chain[-1], *a.runners_up[-1]])
    [m] = p.predict(photos[0], decision="median")  # least expected distance: a finest-cell centre too
    assert m.decision == "median" and (m.lat, m.lon) == pytest.approx(tuple(h.finest.centroids[m.chain[-1].index]))
    with pytest.raises(ValueError, match="decision"):
        p.predict(photos[0], decision="mean")
    d = json.loads(json.dumps(a.as_dict()))
    assert set(d["within_km"]) == {"1", "25", "200", "750", "2500"} and len(d["chain"]) == 3


def test_posterior_needs_its_training_counts(posterior_pair, tmp_path):
    import shutil

    d = tmp_path / "rgb"
    shutil.copytree(posterior_pair / "rgb", d)
    (d / "posterior.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="training counts"):
        Predictor.from_pretrained(d)
