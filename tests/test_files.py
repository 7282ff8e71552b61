"""geosurge.files.atomic_write: the one atomic writer every layer uses."""
import stat

import numpy as np
import pytest

from geosurge.files import atomic_write
from geosurge.geo import build_hierarchy, Hierarchy


def test_writes_bytes_text_and_callables(tmp_path):
    assert atomic_write(tmp_path / "a.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic_write(tmp_path / "a.txt", "héllo").read_text(encoding="utf-8") == "héllo"
    atomic_write(tmp_path / "c.txt", lambda p: open(p, "w").write("from a writer"))
    assert (tmp_path / "c.txt").read_text() == "from a writer"
    atomic_write(tmp_path / "a.txt", "replaced", fsync=True)
    assert (tmp_path / "a.txt").read_text() == "replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.txt", "c.txt"]  # no staging file left


def test_mode_is_applied(tmp_path):
    assert stat.S_IMODE(atomic_write(tmp_path / "shared", b"x").stat().st_mode) == 0o644
    assert stat.S_IMODE(atomic_write(tmp_path / "private", b"x", mode=0o600).stat().st_mode) == 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = atomic_write(tmp_path / "keep.txt", "old")

    def broken(path):
        open(path, "w").write("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_hierarchy_save_is_atomic_and_round_trips(tmp_path):
    lats, lons = np.random.default_rng(0).uniform([-60, -180], [70, 180], (5000, 2)).T
    h = build_hierarchy(lats, lons, tau_min=5, tau_maxes=[2000, 500])
    h.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hierarchy.json", "hierarchy.npz"]
    back = Hierarchy.load(tmp_path)
    assert back.num_cells == h.num_cells
    np.testing.assert_array_equal(back.finest.ids, h.finest.ids)
