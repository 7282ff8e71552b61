import subprocess
import sys

import numpy as np

from geosurge.geo import Hierarchy, load_partition_csv


def _run(*args):
    return subprocess.run([sys.executable, "-m", "geosurge", *args], capture_output=True, text=True, timeout=300)


def test_partition_command(tmp_path):
    rng = np.random.default_rng(0)
    lat = np.r_[rng.normal(48.8, 0.05, 3000), rng.normal(40.7, 0.2, 2000), rng.uniform(-60, 60, 500)]
    lon = np.r_[rng.normal(2.35, 0.05, 3000), rng.normal(-74, 0.2, 2000), rng.uniform(-180, 180, 500)]
    csv = tmp_path / "coords.csv"
    # columns deliberately in lon,lat order: they must be found by name
    np.savetxt(csv, np.c_[lon, lat], delimiter=",", header="LON,LAT", comments="")
    out = tmp_path / "h"
    r = _run("partition", "--coords", str(csv), "--tau-min", "20", "--tau-max", "2000", "500", "100", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "tau_max" in r.stdout and "5,500 samples" in r.stdout
    h = Hierarchy.load(out)
    assert h.tau_maxes == [2000, 500, 100] and h.tau_min == 20
    # the cell holding Paris is centred near Paris, not at the swapped (2.35, 48.8)
    paris = h.assign([48.8], [2.35])[0]
    for k, idx in enumerate(paris):
        lat_c, lon_c = h.levels[k].centroids[idx]
        assert abs(lat_c - 48.8) < 1 and abs(lon_c - 2.35) < 1
    t = load_partition_csv(out / "cells_level2_tau100.csv")
    np.testing.assert_array_equal(np.sort(t.ids), h.levels[2].ids)


def test_partition_command_bad_rows(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("lat,lon\n10,20\n95,20\n")
    r = _run("partition", "--coords", str(csv), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "rows (0-based) 1" in r.stderr


def test_partition_command_missing_column(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("x,y\n10,20\n")
    r = _run("partition", "--coords", str(csv), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no column named" in r.stderr
