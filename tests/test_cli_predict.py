"""``geosurge predict`` as a user runs it on a fresh machine: the embedded checkpoint by default, files and
folders, CSV / GeoJSON output, unreadable files reported, JSON errors. Needs nothing from ``../shared``."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from geosurge.app.settings import EXAMPLES
from geosurge.model.checkpoint_dir import CheckpointDir
from geosurge.model.decisions import describe_decision
from geosurge.model.embedded import EMBEDDED_CHECKPOINT


ROOT = Path(__file__).resolve().parents[1]


def geosurge(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH: this checkout's package, also when it is a copy run apart from the installed one (.ci/run)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "geosurge", *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three example photos, one in a sub-folder, plus an unreadable file and a non-image."""
    root = tmp_path_factory.mktemp("photos")
    names = sorted(p.name for p in EXAMPLES.glob("*.jpg"))[:3]
    shutil.copy(EXAMPLES / names[0], root / names[0])
    shutil.copy(EXAMPLES / names[1], root / names[1].replace(".jpg", ".JPG"))
    (root / "trip" / "day2").mkdir(parents=True)
    shutil.copy(EXAMPLES / names[2], root / "trip" / "day2" / names[2])
    (root / "trip" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    (root / "notes.txt").write_text("not a photo, and not looked at")
    return root


def test_single_photo_with_the_embedded_checkpoint(tmp_path):
    photo = sorted(EXAMPLES.glob("*.jpg"))[0]
    r = geosurge("predict", str(photo), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    line = r.stdout.splitlines()[0]
    rule = CheckpointDir.read(EMBEDDED_CHECKPOINT).variant("fusion").model_config().posterior.decision
    assert line.startswith(f"{photo}: ") and f"[fusion, {rule}]" in line
    assert "% within 2,500 km, " in r.stdout and "level 1: cell" in r.stdout and "level 7: cell" in r.stdout
    assert "score 0.000" not in r.stdout
    assert "the photo told the model " in r.stdout  # how much it said, in words
    assert f"cells holding the answer, with their posterior probability (answer chosen by {describe_decision(rule)}" in r.stdout
    assert "also " in r.stdout and "product score" not in r.stdout  # runners-up labelled by what ranks them


def test_folder_to_csv_and_geojson(folder, tmp_path):
    r = geosurge("predict", str(folder), "--out", str(tmp_path / "results.csv"), cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # one unreadable file
    assert "no such image file" not in r.stderr
    assert f"{folder / 'trip' / 'broken.jpg'}: error: not a readable image" in r.stderr
    assert "predict: 100%" in r.stderr and "4/4" in r.stderr  # the progress bar
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 4 and rows[0].keys() >= {"image", "lat", "lon", "confidence", "score", "top_cells", "error"}
    ok = [row for row in rows if not row["error"]]
    assert len(ok) == 3 and any("day2" in row["image"] for row in ok)
    for row in ok:
        assert float(row["evidence_bits"]) >= 0 and row["evidence"].startswith("the photo told the model ")
        assert row["views"] == "center"  # the embedded pair's own: the crop it was trained on
        # numbers that agree: the first top cell is the answer's own cell, and score/confidence are its figures
        token, lat, lon, cell_score = row["top_cells"].split(";")[0].split(":")
        assert (float(lat), float(lon)) == pytest.approx((float(row["lat"]), float(row["lon"])), abs=1e-3)
        assert float(cell_score) == pytest.approx(float(row["score"]), rel=1e-3) and row["ranked_by"] == "posterior probability"
        others = [float(c.split(":")[3]) for c in row["top_cells"].split(";")[1:]]
        assert others == sorted(others, reverse=True)  # runners-up by the same figure, best first
        assert -90 <= float(row["lat"]) <= 90 and 0 < float(row["confidence"]) <= 1 and len(row["top_cells"].split(";")) == 3
    [bad] = [row for row in rows if row["error"]]
    assert bad["image"].endswith("broken.jpg") and bad["lat"] == ""

    r = geosurge("predict", str(folder), "--out", str(tmp_path / "results.geojson"), "--no-fusion", cwd=tmp_path)
    doc = json.loads((tmp_path / "results.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 4
    points = [f for f in doc["features"] if f["geometry"]]
    assert len(points) == 3 and all(f["properties"]["model"] == "rgb" for f in points)
    lon, lat = points[0]["geometry"]["coordinates"]
    assert -180 <= lon <= 180 and -90 <= lat <= 90
    assert [f["properties"]["error"] for f in doc["features"] if not f["geometry"]][0].startswith("not a readable image")


def test_json_errors_are_json(folder, tmp_path):
    r = geosurge("predict", str(folder / "trip"), str(folder / "missing.jpg"), "--json", cwd=tmp_path)
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert {o["image"].rsplit("/", 1)[-1] for o in out} == {"broken.jpg", "missing.jpg", sorted(p.name for p in EXAMPLES.glob("*.jpg"))[2]}
    errors = {o["image"].rsplit("/", 1)[-1]: o["error"] for o in out if o.get("error")}
    assert "no such image file" in errors["missing.jpg"] and "not a readable image" in errors["broken.jpg"]
    [located] = [o for o in out if not o.get("error")]
    assert located["evidence_bits"] == pytest.approx(located["prediction"]["evidence_bits"], abs=1e-4) and located["evidence_bits"] > 0
    assert located["evidence"] == located["prediction"]["evidence_text"]
    assert located["views"] == located["prediction"]["views"] == "center"
    for line in r.stderr.splitlines():
        if "error" in line:
            json.loads(line)  # stderr errors are JSON too
    r = geosurge("predict", str(folder), "--checkpoint", str(tmp_path / "nowhere"), "--json", cwd=tmp_path)
    assert r.returncode == 2 and "nowhere" in json.loads(r.stderr.strip().splitlines()[-1])["error"]
