"""The package on its own: what ships inside it, the Hugging Face Hub loader (offline, from a laid-out
cache) and a non-editable wheel used from another folder. Needs nothing from ``../shared``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from geosurge.app.settings import EXAMPLES
from geosurge.model.checkpoint import bundled_segmenter
from geosurge.model.embedded import EMBEDDED_CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_checkpoint_is_complete_on_its_own():
    """The DeepLab model, its note, both variants and the 20 attributed example photos are in the package."""
    import geosurge

    assert Path(geosurge.__file__).resolve().is_relative_to(ROOT)  # the tests test this checkout (or its copy)
    assert EMBEDDED_CHECKPOINT.is_relative_to(ROOT / "geosurge")
    for variant in ("fusion", "rgb"):
        assert (EMBEDDED_CHECKPOINT / variant / "config.json").is_file()
    seg = bundled_segmenter(EMBEDDED_CHECKPOINT / "fusion")
    assert seg == EMBEDDED_CHECKPOINT / "segmenter" / "model.tflite" and 2e6 < seg.stat().st_size < 3e6
    note = (seg.parent / "README.md").read_text()
    assert "Apache-2.0" in note and "sayakpaul/lite-model/deeplabv3-mobilenetv2-ade20k" in note
    assert len(list(EXAMPLES.glob("*.jpg"))) == 20
    assert "metadata-extractor-images" in (EXAMPLES / "README.md").read_text()
    # configs/demo.yaml writes where the package reads
    import yaml

    out = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())["run"]["output"]
    assert (ROOT / out).resolve() == EMBEDDED_CHECKPOINT


def test_segmenter_resolution_order(monkeypatch, tmp_path):
    """The path asked for, then $GEOSURGE_DEEPLAB, then the checkpoint config's, then the bundled file."""
    from geosurge.model.config import SegmenterConfig
    from geosurge.model.checkpoint import segmenter_source as _segmenter_source

    cfg = SegmenterConfig("deeplab-ade20k", None, 385)
    monkeypatch.delenv("GEOSURGE_DEEPLAB", raising=False)
    bundled = str(EMBEDDED_CHECKPOINT / "segmenter" / "model.tflite")
    assert _segmenter_source(cfg, None, EMBEDDED_CHECKPOINT / "fusion") == bundled
    assert _segmenter_source(SegmenterConfig("deeplab-ade20k", "/x.tflite"), None, EMBEDDED_CHECKPOINT / "fusion") == "/x.tflite"
    monkeypatch.setenv("GEOSURGE_DEEPLAB", "/env.tflite")
    assert _segmenter_source(cfg, None, EMBEDDED_CHECKPOINT / "fusion") == "/env.tflite"
    assert _segmenter_source(cfg, "/flag.tflite", EMBEDDED_CHECKPOINT / "fusion") == "/flag.tflite"
    monkeypatch.delenv("GEOSURGE_DEEPLAB")
    assert _segmenter_source(cfg, None, tmp_path) is None  # no bundle: the segmenter's own default


def _hub_cache(root: Path, repo: str, commit: str, tags: dict[str, str]) -> Path:
    """The layout huggingface_hub keeps: models--ORG--NAME/{refs/<ref>, snapshots/<commit>/...}."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    shutil.copytree(EMBEDDED_CHECKPOINT, snap)
    (repo_dir / "refs").mkdir(parents=True)
    for ref, target in {"main": commit, **tags}.items():
        (repo_dir / "refs" / ref).write_text(target)
    return snap


def test_from_pretrained_takes_a_hub_repo_id_offline(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    _hub_cache(tmp_path / "hub", "geosurge/geosurge-lite-stack", commit, {"v0.1": commit})
    code = f"""
import json, sys
from PIL import Image
from geosurge import Predictor
photo = Image.open({str(sorted(EXAMPLES.glob('*.jpg'))[0])!r})
out = {{}}
for rev in (None, "v0.1", {commit!r}):
    p = Predictor.from_pretrained("geosurge/geosurge-lite-stack", revision=rev, cache_dir={str(tmp_path / 'hub')!r}, local_files_only=rev is None)
    [r] = p.predict(photo)
    out[str(rev)] = [r.lat, r.lon, r.fusion_used, str(p.segmenter.path)]
p = Predictor.from_pretrained()
[r] = p.predict(photo)
out["embedded"] = [r.lat, r.lon, r.fusion_used, str(p.segmenter.path)]
try:
    Predictor.from_pretrained("geosurge/not-there", cache_dir={str(tmp_path / 'hub')!r})
except FileNotFoundError as e:
    out["missing"] = str(e)
print(json.dumps(out))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    embedded = out.pop("embedded")
    missing = out.pop("missing")
    assert "geosurge/not-there" in missing and "Hugging Face Hub" in missing
    for rev, (lat, lon, fused, seg) in out.items():
        assert (lat, lon, fused) == tuple(embedded[:3]), rev  # the same checkpoint, the same answer
        assert seg.startswith(str(tmp_path / "hub")) and seg.endswith("segmenter/model.tflite")  # its own segmenter


def test_wheel_installs_and_runs_from_another_folder(tmp_path):
    """``pip wheel`` + ``pip install --no-deps`` into a fresh venv (dependencies from this environment via a
    .pth file), then ``geosurge predict photo.jpg`` from a folder with no checkout and no ../shared."""
    wheels = tmp_path / "wheels"
    had_build = (ROOT / "build").exists()
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT), "-w", str(wheels)],
                       capture_output=True, text=True, timeout=600)
    if not had_build:  # the in-tree build folder setuptools leaves (stale files there would reach later wheels)
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    assert r.returncode == 0, r.stderr[-3000:]
    [wheel] = wheels.glob("geosurge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in EMBEDDED_CHECKPOINT.rglob("*"):
        if f.is_file():
            assert str(f.relative_to(ROOT)) in names, f
    for f in list(EXAMPLES.iterdir()) + [p for p in (ROOT / "geosurge/app/assets").rglob("*") if p.is_file()]:
        assert str(f.relative_to(ROOT)) in names, f
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    here = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "torch").is_dir())
    (site / "deps.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "--no-deps", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    away = tmp_path / "elsewhere"
    away.mkdir()
    shutil.copy(sorted(EXAMPLES.glob("*.jpg"))[0], away / "photo.jpg")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GEOSURGE_DEEPLAB")}
    r = subprocess.run([str(venv / "bin/geosurge"), "predict", "photo.jpg", "--json"], capture_output=True, text=True,
                       timeout=600, cwd=away, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[0])
    assert out["model"] == "fusion" and out["prediction"]["fusion_used"]
    r = subprocess.run([str(venv / "bin/python"), "-c", "import geosurge, geosurge.app.geomap as g; print(geosurge.__file__, g.LEAFLET.is_dir() and g.BASEMAP.is_file())"],
                       capture_output=True, text=True, timeout=300, cwd=away, env=env)
    path, leaflet = r.stdout.split()
    assert path.startswith(str(venv)) and leaflet == "True"
