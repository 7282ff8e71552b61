"""Units of the training pipeline: records, label store, loss, config, batch order."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geosurge.data.labels import LabelStore
from geosurge.data.records import read_records
from geosurge.model.config import GeoConfig
from geosurge.model.geo_heads import GeoEmbeddings, list_geo_heads
from geosurge.train.config import TrainConfig, load_train_config
from geosurge.train.sources import epoch_order


def test_read_records_skips_bad_rows_with_a_report(tmp_path):
    (tmp_path / "img").mkdir()
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / "img" / n).write_bytes(b"x")
    (tmp_path / "rows.csv").write_text(
        "id,LON,Lat,extra\n"  # any column order; found by name
        "a.jpg,2.35,48.85,1\n"
        "b.jpg,nan,10,1\n"
        "c.jpg,10,95,1\n"
        "missing.jpg,0,0,1\n"
        ",0,0,1\n"
        "c.jpg,abc,0,1\n"
    )
    rec, rep = read_records(tmp_path / "rows.csv", tmp_path / "img")
    assert rec.ids == ["a.jpg"]
    assert rec.lats.tolist() == [48.85] and rec.lons.tolist() == [2.35]  # no lat/lon swap
    assert rep.total == 5
    assert rep.counts == {"NaN or out-of-range coordinates": 2, "missing image file": 1, "empty image name": 1,
                          "unparsable coordinates": 1}
    assert "missing.jpg" in rep.summary()


def test_label_store_round_trip_and_resize(tmp_path):
    store = LabelStore(tmp_path)
    lab = np.random.default_rng(0).integers(0, 151, (300, 1000)).astype(np.uint8)
    store.save("dir/x.jpg", lab)
    assert store.has("dir/x.jpg") and store.path("dir/x.jpg").suffix == ".png"
    back = store.load("dir/x.jpg")
    assert back.shape == (192, 640)  # longer side capped, aspect kept
    assert set(np.unique(back)) <= set(np.unique(lab))  # nearest neighbour: no invented classes
    small = np.arange(12, dtype=np.uint8).reshape(3, 4)
    store.save("y.jpg", small)
    np.testing.assert_array_equal(store.load("y.jpg"), small)
    assert store.load("y.jpg", size=(8, 6)).shape == (6, 8)


def test_infonce_same_cell_samples_are_not_negatives():
    torch.manual_seed(0)
    geo = GeoEmbeddings(GeoConfig(embed_dim=8), [3, 5])
    feats = F.normalize(torch.randn(4, 8), dim=-1)
    cells = torch.tensor([[0, 1], [0, 1], [2, 4], [1, -1]])
    loss, per_level, _ = geo.loss(feats, cells)
    # by hand, level 0: candidates are the batch's distinct cells {0, 1, 2}; samples 0 and 1 share cell 0
    s = geo.scales()
    e0 = F.normalize(geo.tables[0][[0, 1, 2]], dim=-1)
    l0 = F.cross_entropy(s[0] * feats @ e0.T, torch.tensor([0, 0, 2, 1]))
    # level 1: sample 3 lies in no kept cell and is left out; candidates {1, 4}
    e1 = F.normalize(geo.tables[1][[1, 4]], dim=-1)
    l1 = F.cross_entropy(s[1] * feats[:3] @ e1.T, torch.tensor([0, 0, 1]))
    torch.testing.assert_close(loss, l0 + l1)
    assert per_level == pytest.approx([l0.item(), l1.item()])
    loss.backward()
    assert geo.tables[1].grad[[0, 2, 3]].abs().sum() == 0  # cells outside the batch get no gradient


def test_config_defaults_are_the_papers_and_overrides(tmp_path):
    cfg = TrainConfig()
    assert cfg.model.geo.tau_min == 50 and cfg.model.geo.tau_maxes == [25000, 10000, 5000, 2000, 1000, 750, 500]
    assert cfg.model.geo.embed_dim == 768 and cfg.model.geo.init_temperature == 0.07
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.batch_size, cfg.optim.lr_gamma, cfg.optim.patience) == (1e-4, 1e-4, 1024, 0.5, 4)
    assert cfg.data.val_fraction == 0.01
    f = cfg.model.fusion
    assert (f.num_blocks, f.query_dim, f.latent_dim) == (3, 128, 64)
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 0.5\nmodel:\n  geo: {embed_dim: 32}\n")
    c = load_train_config(p, ["optim.epochs=3", "run.variants=[fusion, rgb]"])
    assert c.optim.lr == 0.5 and c.optim.epochs == 3 and c.model.geo.embed_dim == 32 and c.run.variants == ["fusion", "rgb"]
    p.write_text("optim:\n  learning_rate: 0.5\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_train_config(p)


@pytest.mark.parametrize("override, allowed", [
    ("model.geo.head=mlp", "embeddings.*linear"),  # the geo-head registry's names
    ("model.geo.decision=mean", "argmax.*median.*within"),
    ("data.views=six", "five.*ten"),
    ("run.val_metric=acc_100km", "geoscore.*median_km.*acc_25km"),
    ("run.variants=[fusion, depth]", "fusion.*rgb"),
    ("run.amp=fp8", "bf16.*fp16.*off"),
    ("model.backbone.name=resnet-9000", "clip.*efficientnet-lite0"),
    ("model.segmenter.name=segformer", "deeplab-ade20k.*oneformer"),
])
def test_string_options_are_checked_when_the_config_is_read(tmp_path, override, allowed):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  epochs: 1\n")
    key, value = override.split("=")
    with pytest.raises(ValueError, match=f"{key.split('.', 1)[1] if key.startswith('model.') else key}.*{allowed}.*{value.strip('[]').split(', ')[-1]}"):
        load_train_config(p, [override])
    for name in list_geo_heads():
        assert load_train_config(p, [f"model.geo.head={name}"]).model.geo.head == name


def test_epoch_order_is_deterministic_and_splits_ranks():
    a = epoch_order(103, seed=1, epoch=2, rank=0, world=1, micro=10)
    assert [len(b) for b in a] == [10] * 10 + [3]
    assert np.array_equal(np.concatenate(a), np.concatenate(epoch_order(103, 1, 2, 0, 1, 10)))
    assert not np.array_equal(np.concatenate(a), np.concatenate(epoch_order(103, 1, 3, 0, 1, 10)))
    r0 = np.concatenate(epoch_order(103, 1, 2, 0, 2, 10))
    r1 = np.concatenate(epoch_order(103, 1, 2, 1, 2, 10))
    assert len(r0) == len(r1) == 51 and not set(r0) & set(r1)
