"""Training on MP-16-format msgpack shards: 2 gloo processes, gradient accumulation, SIGKILL, --resume."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from geosurge.data.label_chunks import ChunkStore, encode_labels
from geosurge.data.labels import LabelStore
from geosurge.model.config import SegmenterConfig

from .mp16_synth import jpeg, write_mp16
from .test_segment_distributed import _kill_all

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mp16(tmp_path_factory):
    """Shards, metadata CSV, validation photos and label chunks for a tiny random CLIP (64 px, patch 8)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    root = tmp_path_factory.mktemp("mp16")
    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     image_size=64, patch_size=8)).save_pretrained(root / "clip")
    shards, meta, coords = write_mp16(root, 4, 8)
    rng = np.random.default_rng(5)
    (root / "val").mkdir()
    val = []
    for i, (rid, (lat, lon)) in enumerate(list(coords.items())[::5]):
        name = f"v{i}.jpg"
        (root / "val" / name).write_bytes(jpeg(rng))
        val.append((name, lat, lon))
    with (root / "val.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("image", "lat", "lon"), *val])
    store = ChunkStore(root / "labels", SegmenterConfig(), label_side=64)
    maps = [(rid, encode_labels(rng.integers(0, 151, (72, 96)).astype(np.uint8), store.short_side)) for rid in coords]
    store.write_chunk("shard_0-00000", maps[:8])  # chunks named after their shards, as geosurge segment names them
    store.write_chunk("shard_1-00000", maps[8:16])
    store.write_chunk("misc", maps[16:])  # not a shard's name: found through the whole-store index
    # validation photos' maps in a store of their own (PNG per photo, the CSV layout)
    val_store = LabelStore(root / "val-labels", SegmenterConfig())
    for name, _, _ in val:
        val_store.save(name, rng.integers(0, 151, (72, 96)).astype(np.uint8))
    return root


def _config(root: Path, out: Path, **optim) -> Path:
    d = {
        "model": {"backbone": {"name": "clip", "pretrained": str(root / "clip"), "trainable_blocks": 1},
                  "fusion": {"width": 32, "num_heads": 4, "num_blocks": 1, "query_dim": 16, "latent_dim": 8},
                  "geo": {"embed_dim": 16, "tau_min": 1, "tau_maxes": [40, 10]}},
        "data": {"msgpack": str(root / "shards"), "msgpack_meta": str(root / "mp16_places365.csv"),
                 "val_csv": str(root / "val.csv"), "val_images": str(root / "val"), "labels": str(root / "labels"),
                 "val_labels": str(root / "val-labels"), "num_workers": 1},
        # 16 = 4 per micro-batch x 2 accumulation steps x 2 processes
        "optim": {"batch_size": 16, "micro_batch": 4, "epochs": 6, "lr": 1e-3, **optim},
        "run": {"output": str(out / "ckpt"), "progress": False, "checkpoint_every": 1, "log_every": 1,
                "reference_max": 5},
    }
    path = out / "train.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(d))
    return path


def _torchrun(config: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "geosurge", "train", "--config", str(config), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=config.parent)


def _finish(proc: subprocess.Popen) -> str:
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-4000:]
    return log


def _ids(root: Path) -> list[str]:
    with (root / "mp16_places365.csv").open() as f:
        return [r["IMG_ID"] for r in csv.DictReader(f)]


def _steps(log: Path) -> list[int]:
    if not log.is_file():
        return []
    return [r["step"] for r in map(json.loads, log.read_text().splitlines()) if r.get("kind") == "step"]


def test_two_process_msgpack_training_killed_and_resumed(mp16, tmp_path):
    straight = tmp_path / "straight"
    _finish(_torchrun(_config(mp16, straight), 29641))
    start = json.loads((straight / "ckpt.work/log.jsonl").read_text().splitlines()[0])
    assert start["world"] == 2 and start["accum"] == 2 and start["effective_batch"] == 16
    final = load_file(str(straight / "ckpt.work/train_state.safetensors"))
    assert int(final["step"][0]) == 12  # 6 epochs x 32 records / 16 per step

    cut = tmp_path / "cut"
    cfg = _config(mp16, cut)
    proc = _torchrun(cfg, 29642)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and max(_steps(cut / "ckpt.work/log.jsonl"), default=0) < 5:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed:\n" + proc.communicate()[0][-3000:]
    _kill_all(proc)
    saved = load_file(str(cut / "ckpt.work/train_state.safetensors"))
    assert 1 <= int(saved["step"][0]) < 12

    # the epoch export is a complete checkpoint the Predictor loads (also while a run writes the next one)
    latest = cut / "ckpt.work/latest"
    assert latest.is_symlink()
    from geosurge import Predictor

    from geosurge.model.segmenters import Segmenter

    class StoredLabels(Segmenter):  # the label maps segment-time wrote, instead of running a segmenter
        name = "deeplab-ade20k"

        def __call__(self, image):
            return LabelStore(mp16 / "val-labels").load("v0.jpg", image.size)

    [r] = Predictor.from_pretrained(latest, segmenter=StoredLabels()).predict(mp16 / "val/v0.jpg")
    assert r.fusion_used and np.isfinite(r.lat) and np.isfinite(r.lon)

    log = _finish(_torchrun(cfg, 29643, "--resume"))
    assert "resuming at" in log
    resumed = load_file(str(cut / "ckpt.work/train_state.safetensors"))
    keys = [k for k in final if k.startswith(("model.", "opt."))]
    assert keys and int(resumed["step"][0]) == 12
    for k in keys:
        torch.testing.assert_close(resumed[k], final[k], rtol=0, atol=0, msg=k)
    cfg_json = json.loads((cut / "ckpt/config.json").read_text())
    assert cfg_json["training"]["train_photos"] == 32 and cfg_json["model"]["fusion"]["enabled"]
    ref_ids = json.loads((cut / "ckpt/reference.json").read_text())["ids"]
    assert len(ref_ids) == 5 and set(ref_ids) <= set(_ids(mp16))


def test_batch_and_precision_settings_are_validated():
    from geosurge.train.config import OptimConfig, RunConfig, TrainConfig

    assert OptimConfig(batch_size=1024, micro_batch=128).accumulation(8) == 1
    assert OptimConfig(batch_size=1024, micro_batch=128).accumulation(2) == 4
    with pytest.raises(ValueError, match="not a multiple of micro_batch x processes"):
        OptimConfig(batch_size=1024, micro_batch=128).accumulation(3)
    with pytest.raises(ValueError, match="multiple of optim.micro_batch"):
        TrainConfig.from_dict({"optim": {"batch_size": 1000, "micro_batch": 128}})
    assert RunConfig(amp="fp16").amp_dtype() == torch.float16 and RunConfig().amp_dtype() == torch.bfloat16
    assert RunConfig(amp=False).amp_dtype() is None
    with pytest.raises(ValueError, match="run.amp"):
        RunConfig(amp="fp8")


def test_published_checkpoint_versions_are_whole(mp16, tmp_path):
    from geosurge.geo.hierarchy import build_hierarchy
    from geosurge.model import GeoSURGE, ModelConfig
    from geosurge.model.checkpoint import load_checkpoint, publish_checkpoint

    h = build_hierarchy(np.array([1.0, 2, 40, 41]), np.array([1.0, 2, 50, 51]), 1, [2, 1])
    cfg = ModelConfig.from_dict({"backbone": {"name": "clip", "pretrained": str(mp16 / "clip")},
                                 "fusion": {"enabled": False}, "geo": {"embed_dim": 16, "tau_min": 1, "tau_maxes": [2, 1]}})
    link = tmp_path / "work/latest"
    seen = []
    for epoch in range(5):
        torch.manual_seed(epoch)
        model = GeoSURGE(cfg, h.num_cells)
        publish_checkpoint(link, model, h, extra={"epoch": epoch}, keep=3)
        seen.append(link.resolve())
        loaded, _, _, raw = load_checkpoint(link)
        assert raw["training"]["epoch"] == epoch
        torch.testing.assert_close(loaded.geo.state_dict()[next(iter(loaded.geo.state_dict()))],
                                   model.geo.state_dict()[next(iter(model.geo.state_dict()))])
    assert len(set(seen)) == 5 and link.is_symlink()
    assert sorted(p for p in link.parent.iterdir() if p.name.startswith(".latest.v")) == sorted(seen[-3:])
