"""The vectorized partition against the real, published MP-16 partition of GeoEstimation."""
import numpy as np
import pytest

from geosurge.geo import build_hierarchy, load_partition_csv, s2


def test_loader_rejects_mangled_tokens(shared_dir):
    path = shared_dir / "data/mp16/cells_50_1000.csv"
    with pytest.raises(ValueError, match="E\\+0"):
        load_partition_csv(path)


def test_reproduces_published_mp16_tokens(shared_dir):
    table = load_partition_csv(shared_dir / "data/mp16/cells_50_1000.csv", on_bad_token="skip")
    assert 100 < len(table.skipped) < 400  # the spreadsheet-mangled rows, counted and left out
    # mangled into scientific notation, or expanded back from it with trailing zeros
    assert all("E+" in tok.upper() or tok.endswith("0") for _, tok in table.skipped)
    pts = s2.sample_in_cells(table.ids, table.counts, np.random.default_rng(0))
    assert len(pts) == table.counts.sum() > 4_000_000
    h = build_hierarchy(pts[:, 0], pts[:, 1], tau_min=50, tau_maxes=[1000])
    published = set(s2.ids_to_tokens(table.ids))
    ours = set(h.finest.s2_tokens)
    reproduced = len(published & ours) / len(published)
    print(f"reproduced {reproduced:.2%} of {len(published)} well-formed published tokens")
    assert reproduced >= 0.95
