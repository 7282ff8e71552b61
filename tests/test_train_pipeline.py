"""One command builds the whole checkpoint: cross-validation and the posterior inside `geosurge train`, and the
data a user actually has (a folder of geotagged photos, OSV-5M's layout on the Hub), with one-line errors."""
from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from geosurge.cli import main as cli
from geosurge.data.photo_folder import read_photo_folder
from geosurge.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "geosurge" / "app" / "examples"


def _dev_subset(shared: Path, split: str, n: int, out: Path, step: int) -> Path:
    """Every ``step``-th row of a dev CSV (photographers spread over the split), with its author column."""
    rows = list(csv.DictReader(open(shared / f"data/im2gps3k-dev/{split}.csv")))[::step][:n]
    path = out / f"{split}.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "author", "lat", "lon"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def _tiny(shared: Path, tmp: Path, data: dict, **sections) -> dict:
    """A few-second recipe: a frozen Lite0 at 96 px, a narrow fusion, cells from the training photos."""
    d = {
        "model": {
            "backbone": {"name": "efficientnet-lite0", "image_size": 96, "trainable_blocks": 0},
            "fusion": {"width": 32, "num_heads": 4, "label_samples": 4, "num_blocks": 2},
            "geo": {"embed_dim": 32, "tau_min": 2, "tau_maxes": [40, 12, 5]},
            "segmenter": {"path": str(shared / "models/deeplabv3-mobilenetv2-ade20k/model.tflite"), "input_size": 385},
        },
        "data": {"labels": str(tmp / "labels"), "cache_dir": str(tmp / "cache"), "segment_missing": True,
                 "view_cache": True, "views": "five", "num_workers": 0, **data},
        "optim": {"batch_size": 8, "micro_batch": 8, "epochs": 2, "lr": 1e-3},
        "run": {"output": str(tmp / "ckpt"), "progress": False, "checkpoint_every": 0, "log_every": 1},
    }
    for k, v in sections.items():
        d.setdefault(k, {}).update(v)
    return d


def _train(d: dict, tmp: Path) -> int:
    (tmp / "config.yaml").write_text(yaml.safe_dump(d))
    return cli(["train", "--config", str(tmp / "config.yaml")])


def test_train_with_cv_builds_a_checkpoint_with_a_calibrated_posterior(shared_dir, tmp_path):
    """40 photos of many photographers, 2 folds, both variants: the command alone writes a pair whose posterior
    was fitted under CV, whose config records how, and whose chances the Predictor states calibrated."""
    csvs = [str(_dev_subset(shared_dir, "train", 28, tmp_path, 40)), str(_dev_subset(shared_dir, "val", 12, tmp_path, 8))]
    images = str(shared_dir / "data/im2gps3k-dev/images")
    d = _tiny(shared_dir, tmp_path, {"train_csv": csvs, "images": images}, cv={"folds": 2, "group": "author"},
              run={"variants": ["fusion", "rgb"]})
    assert _train(d, tmp_path) == 0

    for variant in ("fusion", "rgb"):
        cfg = json.loads((tmp_path / "ckpt" / variant / "config.json").read_text())
        post = cfg["model"]["posterior"]
        assert post["enabled"] and len(post["level_weights"]) == 3 and post["calibration"]
        record = post["cv"]
        assert record["command"] == f"geosurge train --config {tmp_path / 'config.yaml'}"
        assert record["data"] == [{"csv": csvs[0], "photos": 28}, {"csv": csvs[1], "photos": 12}]
        assert record["photos"] == 40 and record["folds"] == 2 and sum(record["fold_photos"]) == 40
        acc = record["figures"]["accuracy_pct"]
        assert all(lo <= a <= hi for a, lo, hi in acc.values()) and acc["2500"][0] >= acc["200"][0]
        figures = record["figures"]
        assert 1 <= figures["distinct_answers"] <= 40 and 100 / 40 <= figures["most_common_answer_pct"] <= 100
        assert figures["distinct_answers"] == 1 or figures["most_common_answer_pct"] < 100
        training = cfg["training"]
        assert training["train_photos"] == 40 and training["val_photos"] == 0 and len(training["history"]) == 2
        assert training["command"] == record["command"]

    from geosurge import Predictor

    p = Predictor.from_pretrained(tmp_path / "ckpt")
    photo = Path(images) / next(csv.DictReader(open(csvs[1])))["image"]
    for fusion in (True, False):
        [r] = p.predict(photo, fusion=fusion)
        chances = [r.within_km[k] for k in sorted(r.within_km)]
        assert sorted(r.within_km) == [1, 25, 200, 750, 2500]
        assert all(0.0 <= c <= 1.0 for c in chances) and chances == sorted(chances), r.within_km


def _examples(folder: Path) -> list[Path]:
    """The shipped EXIF-GPS example photos split over two photographers' sub-folders, plus a photo without
    GPS, one whose EXIF names its artist, and a file that is not a photo."""
    photos = sorted(EXAMPLES.glob("*.jpg"))
    for i, src in enumerate(photos):
        dst = folder / ("ann" if i % 2 else "bob") / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    with Image.open(photos[0]) as img:
        img.convert("RGB").save(folder / "no-gps.jpg")  # re-encoded without EXIF
        exif = img.getexif()
        exif[0x013B] = "Carla Example"
        img.save(folder / "artist.jpg", exif=exif)
    (folder / "notes.txt").write_text("not a photo")
    return photos


def test_photo_folder_reads_exif_gps_and_photographers(tmp_path):
    photos = _examples(tmp_path)
    rec, report = read_photo_folder(tmp_path)
    assert report.counts["no EXIF GPS"] == 1 and report.examples["no EXIF GPS"] == ["no-gps.jpg"]
    assert len(rec) + report.total == len(photos) + 2
    groups = dict(zip(rec.ids, rec.groups))
    assert groups["artist.jpg"] == "artist:Carla Example"
    # photos whose EXIF names no artist or camera serial belong to their sub-folder's photographer
    assert {g for g in groups.values() if g.startswith("folder:")} == {"folder:ann", "folder:bob"}
    assert "artist:Ian Britton" in groups.values()  # named in the examples' own EXIF
    assert np.all(np.abs(rec.lats) <= 90) and np.all(np.abs(rec.lons) <= 180)


def test_train_from_a_photo_folder_with_cv(shared_dir, tmp_path):
    _examples(tmp_path / "photos")
    d = _tiny(shared_dir, tmp_path, {"photos": str(tmp_path / "photos")}, cv={"folds": 2}, run={"variants": ["rgb"]})
    assert _train(d, tmp_path) == 0
    cfg = json.loads((tmp_path / "ckpt" / "rgb" / "config.json").read_text())
    [source] = cfg["model"]["posterior"]["cv"]["data"]
    assert source["photos_folder"] == str(tmp_path / "photos") and source["skipped"] == 1
    assert cfg["training"]["skipped"]["counts"] == {"no EXIF GPS": 1}


@pytest.mark.parametrize("make, message", [
    (lambda d: d.mkdir(), "no photos in this folder"),
    (lambda d: (d.mkdir(), (d / "a.jpg").write_bytes(b"not a jpeg")), "carries usable EXIF GPS"),
])
def test_photo_folder_errors_name_the_folder(tmp_path, make, message):
    make(tmp_path / "mine")
    with pytest.raises(ValueError, match=message) as e:
        read_photo_folder(tmp_path / "mine")
    assert str(tmp_path / "mine") in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ OSV-5M on the Hub
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _osv5m_cache(shared: Path, hub: Path, n: int = 16, corrupt: bool = False, drop: str | None = None) -> list[dict]:
    """OSV-5M's layout in a Hugging Face cache: datasets--ORG--NAME/{refs/main, snapshots/<commit>/{train.csv,
    images/train/00.zip, 01.zip}}, the zips holding ``<shard>/<id>.jpg``."""
    rows = list(csv.DictReader(open(shared / "data/im2gps3k-dev/train.csv")))[:: 50][:n]
    repo = hub / "datasets--osv5m--mini"
    snap = repo / "snapshots" / COMMIT
    (snap / "images" / "train").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    out = []
    for k, r in enumerate(rows):
        out.append({"id": str(1000 + k), "latitude": r["lat"], "longitude": r["lon"], "sequence": r["author"], "country": "XX"})
    for shard in (0, 1):
        path = snap / "images" / "train" / f"{shard:02d}.zip"
        with zipfile.ZipFile(path, "w") as z:
            for k in range(shard, len(rows), 2):
                z.write(shared / "data/im2gps3k-dev/images" / rows[k]["image"], f"{shard:02d}/{out[k]['id']}.jpg")
        if corrupt and shard == 1:
            path.write_bytes(path.read_bytes()[:200])
    fields = [f for f in out[0] if f != drop]
    with (snap / "train.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(out)
    return out


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Only the local cache: HF_HUB_OFFLINE for huggingface_hub (its constant is read at import)."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_osv5m_layout_from_the_hub_cache(shared_dir, tmp_path, offline):
    from geosurge.data.osv5m import read_osv5m

    rows = _osv5m_cache(shared_dir, offline)
    rec, report = read_osv5m("osv5m/mini", "train", shards=[1], extract_to=tmp_path / "x", group="sequence")
    odd = rows[1::2]
    assert rec.ids == [f"01/{r['id']}.jpg" for r in odd] and report.counts["missing image file"] == len(rows) - len(odd)
    assert np.allclose(rec.lats, [float(r["latitude"]) for r in odd]) and list(rec.groups) == [r["sequence"] for r in odd]
    assert all(rec.path(i).is_file() for i in range(len(rec)))
    rec2, _ = read_osv5m("osv5m/mini", extract_to=tmp_path / "x")  # all shards; 01 unpacked once already
    assert len(rec2) == len(rows)


def test_train_from_osv5m_on_the_hub(shared_dir, tmp_path, offline):
    _osv5m_cache(shared_dir, offline)
    d = _tiny(shared_dir, tmp_path, {"hub": {"repo": "osv5m/mini"}}, cv={"folds": 2, "group": "sequence"}, run={"variants": ["rgb"]})
    assert _train(d, tmp_path) == 0
    cfg = json.loads((tmp_path / "ckpt" / "rgb" / "config.json").read_text())
    assert cfg["model"]["posterior"]["cv"]["data"] == [{"hub": "osv5m/mini", "split": "train", "shards": None, "revision": COMMIT, "photos": 16}]


@pytest.mark.parametrize("problem", ["corrupt zip", "missing column", "unknown repo"])
def test_osv5m_errors_are_one_line_naming_the_file(shared_dir, tmp_path, offline, problem):
    from geosurge.data.osv5m import read_osv5m

    _osv5m_cache(shared_dir, offline, corrupt=problem == "corrupt zip", drop="longitude" if problem == "missing column" else None)
    repo = "osv5m/other" if problem == "unknown repo" else "osv5m/mini"
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        read_osv5m(repo, extract_to=tmp_path / "x")
    msg = str(e.value)
    assert "\n" not in msg
    named = {"corrupt zip": "01.zip", "missing column": "train.csv", "unknown repo": "osv5m/other"}[problem]
    assert named in msg, msg


def test_cv_config_is_validated():
    base = {"data": {"train_csv": "a.csv", "view_cache": True}, "cv": {"folds": 5}}
    assert TrainConfig.from_dict(base).cv.enabled
    for change, message in [({"cv": {"folds": 1}}, "cv.folds"), ({"cv": {"folds": 5, "calibration": "x"}}, "cv.calibration"),
                            ({"data": {"train_csv": "a.csv", "val_csv": "b.csv", "view_cache": True}}, "val_csv"),
                            ({"data": {"train_csv": "a.csv"}}, "view_cache"),
                            ({"data": {"train_csv": "a.csv", "photos": "p", "view_cache": True}}, "one of"),
                            ({"cv": {"folds": 5, "groups": "x"}}, "unknown cv key")]:
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_dict({**base, **change})
