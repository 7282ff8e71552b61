"""End-to-end training on real photos from ../shared: checkpoint, Predictor, evaluation, resume, DDP, shards."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from geosurge.cli import main as cli
from geosurge.model.checkpoint_dir import training_images
from geosurge.train.config import TrainConfig
from geosurge.train.trainer import train

REPO = Path(__file__).resolve().parents[1]

ROOT = Path(__file__).resolve().parents[1]


def _subset(shared: Path, split: str, n: int, out: Path, step: int = 7) -> Path:
    rows = list(csv.DictReader(open(shared / f"data/im2gps3k-dev/{split}.csv")))[::step][:n]
    path = out / f"{split}.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "lat", "lon"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def _config(shared: Path, tmp: Path, n_train: int = 24, n_val: int = 6, **sections) -> dict:
    images = str(shared / "data/im2gps3k-dev/images")
    d = {
        "model": {
            "backbone": {"name": "efficientnet-lite0", "image_size": 96, "trainable_blocks": 1},
            "fusion": {"width": 32, "num_heads": 4, "label_samples": 4, "num_blocks": 2},
            "geo": {"embed_dim": 32, "tau_min": 2, "tau_maxes": [20, 8, 4]},
            "segmenter": {"path": str(shared / "models/deeplabv3-mobilenetv2-ade20k/model.tflite")},
        },
        "data": {"train_csv": str(_subset(shared, "train", n_train, tmp)), "val_csv": str(_subset(shared, "val", n_val, tmp, 3)),
                 "images": images, "val_images": images, "labels": str(tmp / "labels"), "cache_dir": str(tmp / "cache"),
                 "view_cache": True, "views": "five", "num_workers": 0},
        "optim": {"batch_size": 8, "micro_batch": 4, "epochs": 2, "lr": 1e-3},
        "run": {"output": str(tmp / "ckpt"), "progress": False, "checkpoint_every": 1, "log_every": 1},
    }
    for k, v in sections.items():
        d[k].update(v)
    return d


def test_ci_training_run_checkpoint_predictor_and_evaluate(shared_dir, tmp_path):
    """A short real run of both variants -> a checkpoint pair the Predictor loads -> `geosurge evaluate`."""
    d = _config(shared_dir, tmp_path, data={"segment_missing": True}, run={"variants": ["fusion", "rgb"]})
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(d))
    assert cli(["train", "--config", str(tmp_path / "demo.yaml")]) == 0
    out = tmp_path / "ckpt"
    images = shared_dir / "data/im2gps3k-dev/images"
    for v in ("fusion", "rgb"):
        cfg = json.loads((out / v / "config.json").read_text())
        assert cfg["model"]["fusion"]["enabled"] == (v == "fusion")
        assert cfg["training"]["steps"] == 6 and len(cfg["training"]["history"]) == 2
        # the app's reference photos: written relative to the repository when ../shared is a real folder beside
        # it (CI), absolute when it is elsewhere (a symlink); either way it must lead back to the same folder
        recorded = Path(cfg["training"]["images"])
        assert (recorded if recorded.is_absolute() else REPO / recorded).resolve() == images.resolve()
        assert training_images(out / v).resolve() == images.resolve()
        log = [json.loads(l) for l in (tmp_path / "ckpt.work" / v / "log.jsonl").read_text().splitlines()]
        assert {r["kind"] for r in log} >= {"start", "step", "epoch", "done"}
        assert all(np.isfinite(r["loss"]) for r in log if r["kind"] == "step")
    assert len(list((tmp_path / "labels").glob("*.png"))) == 30  # train + val label maps, computed once

    from geosurge import Predictor

    p = Predictor.from_pretrained(out)
    photo = shared_dir / "data/im2gps3k-dev/images" / csv.DictReader(open(tmp_path / "val.csv")).__next__()["image"]
    [fused] = p.predict(photo)
    [plain] = p.predict(photo, fusion=False)
    assert fused.fusion_used and not plain.fusion_used
    assert len(fused.levels) == 3 and fused.nearest_reference is not None
    assert -90 <= fused.lat <= 90 and -180 <= fused.lon <= 180

    test_csv = _subset(shared_dir, "test", 5, tmp_path, 11)
    args = ["evaluate", "--checkpoint", str(out), str(out / "rgb"), "--csv", str(test_csv), "--images",
            str(shared_dir / "data/im2gps3k-dev/images"), "--views", "ten", "--out", str(tmp_path / "eval"),
            "--labels", str(tmp_path / "labels"), "--cache-dir", str(tmp_path / "cache")]
    assert cli(args) == 0
    rep = json.loads((tmp_path / "eval/report.json").read_text())
    for k in ("acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km", "geoscore", "n", "level_acc"):
        assert k in rep
    assert rep["n"] == 5 and len(rep["results"]) == 2 and rep["results"][0]["fusion"] and not rep["results"][1]["fusion"]
    assert len(rep["level_acc"]) == 3 and all(r["views"] == "ten" for r in rep["results"])
    md = (tmp_path / "eval/results.md").read_text()
    assert "2500 km" in md and "ckpt/fusion" in md and "rgb" in md
    assert (tmp_path / "eval/accuracy.png").read_bytes()[:4] == b"\x89PNG"
    # a re-run is served from the feature cache and gives the same numbers
    cached = sorted((tmp_path / "cache").glob("eval-*.safetensors"))
    assert len(cached) == 2
    assert cli(args) == 0
    assert json.loads((tmp_path / "eval/report.json").read_text())["results"] == rep["results"]


@pytest.mark.parametrize("view_cache", [True, False], ids=["cached-views", "images"])
def test_resume_continues_exactly(shared_dir, tmp_path, view_cache):
    """An interrupted run resumed with --resume ends in the same state as an uninterrupted one."""
    def run(name, max_steps, resume=False):
        d = _config(shared_dir, tmp_path, n_train=20, model={"fusion": {"enabled": False}},
                    data={"view_cache": view_cache},
                    optim={"epochs": 3, "max_steps": max_steps, "micro_batch": 4, "batch_size": 8},
                    run={"output": str(tmp_path / name), "work_dir": str(tmp_path / f"{name}.work")})
        train(TrainConfig.from_dict(d), resume=resume)
        return load_file(str(tmp_path / f"{name}.work/train_state.safetensors"))

    straight = run("a", 5)  # 3 steps per epoch: stops inside epoch 1
    run("b", 2)
    resumed = run("b", 5, resume=True)
    keys = [k for k in straight if k.startswith(("model.", "opt."))]
    assert keys and int(straight["step"][0]) == int(resumed["step"][0]) == 5
    for k in keys:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=0, msg=k)
    log = [json.loads(l) for l in (tmp_path / "b.work/log.jsonl").read_text().splitlines()]
    assert [r["resumed"] for r in log if r["kind"] == "start"] == [False, True]


def test_ddp_two_processes_gloo(shared_dir, tmp_path):
    """torchrun with 2 CPU processes (gloo) trains and writes one checkpoint."""
    d = _config(shared_dir, tmp_path, n_train=16, model={"fusion": {"enabled": False}},
                data={"view_cache": False}, optim={"epochs": 1, "micro_batch": 4, "batch_size": 8})
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(d))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                        "-m", "geosurge", "train", "--config", str(tmp_path / "ddp.yaml")],
                       capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    start = json.loads((tmp_path / "ckpt.work/log.jsonl").read_text().splitlines()[0])
    assert start["world"] == 2 and start["accum"] == 1  # 8 = 4 per process x 2 processes
    cfg = json.loads((tmp_path / "ckpt/config.json").read_text())
    assert cfg["training"]["steps"] == 2  # 16 photos / (4 x 2) per step
    from geosurge import Predictor

    [pred] = Predictor.from_pretrained(tmp_path / "ckpt").predict(shared_dir / "data/im2gps3k-dev/images" /
                                                                  csv.DictReader(open(tmp_path / "val.csv")).__next__()["image"], fusion=False)
    assert np.isfinite(pred.lat)


def test_bad_rows_and_corrupt_images_never_crash_training(shared_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    src = list(csv.DictReader(open(shared_dir / "data/im2gps3k-dev/train.csv")))[:10]
    for r in src:
        (images / r["image"]).write_bytes((shared_dir / "data/im2gps3k-dev/images" / r["image"]).read_bytes())
    good = (images / src[0]["image"]).read_bytes()
    (images / "truncated.jpg").write_bytes(good[: len(good) // 3][:200])
    (images / "notes.jpg").write_text("not an image")
    rows = [(r["image"], r["lat"], r["lon"]) for r in src]
    rows += [("truncated.jpg", 1, 1), ("notes.jpg", 2, 2), ("gone.jpg", 3, 3), (src[1]["image"], "nan", 4), (src[2]["image"], 91, 0)]
    with (tmp_path / "bad.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("image", "lat", "lon"), *rows])
    for view_cache in (True, False):
        d = _config(shared_dir, tmp_path, model={"fusion": {"enabled": False}},
                    data={"train_csv": str(tmp_path / "bad.csv"), "images": str(images), "view_cache": view_cache},
                    optim={"epochs": 1}, run={"output": str(tmp_path / f"ck{view_cache}")})
        train(TrainConfig.from_dict(d))
        skipped = json.loads((tmp_path / f"ck{view_cache}/config.json").read_text())["training"]["skipped"]
        assert skipped["counts"]["missing image file"] == 1
        assert skipped["counts"]["NaN or out-of-range coordinates"] == 2
        assert skipped["counts"]["unreadable image"] >= 2  # truncated + not an image (the reference pass counts again)


def test_segment_cli_is_resumable(shared_dir, tmp_path, capsys):
    csv_path = _subset(shared_dir, "val", 3, tmp_path, 5)
    args = ["segment", "--csv", str(csv_path), "--images", str(shared_dir / "data/im2gps3k-dev/images"), "--out", str(tmp_path / "labels"),
            "--segmenter-path", str(shared_dir / "models/deeplabv3-mobilenetv2-ade20k/model.tflite")]
    assert cli(args) == 0
    pngs = sorted((tmp_path / "labels").glob("*.png"))
    assert len(pngs) == 3
    pngs[0].unlink()
    capsys.readouterr()
    assert cli(args) == 0
    assert "segmented 1, already present 2" in capsys.readouterr().out


def test_train_from_webdataset_shards(shared_dir, tmp_path):
    csv_path = _subset(shared_dir, "train", 12, tmp_path)
    assert cli(["shards", "--csv", str(csv_path), "--images", str(shared_dir / "data/im2gps3k-dev/images"),
                "--out", str(tmp_path / "shards"), "--max-count", "5"]) == 0
    assert len(list((tmp_path / "shards").glob("*.tar"))) == 3
    d = _config(shared_dir, tmp_path, model={"fusion": {"enabled": False}},
                data={"train_csv": None, "shards": str(tmp_path / "shards"), "view_cache": False, "num_workers": 2},
                optim={"epochs": 1, "micro_batch": 4, "batch_size": 4}, run={"reference_index": False})
    train(TrainConfig.from_dict(d))
    cfg = json.loads((tmp_path / "ckpt/config.json").read_text())
    # 2 workers read shards 0,2 and 1: batches of 4, 3 | 4, 1 (each worker ends with its partial batch)
    assert cfg["training"]["steps"] == 4 and cfg["training"]["train_photos"] == 12
