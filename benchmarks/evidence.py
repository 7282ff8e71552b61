"""Are the evidence sentences' thresholds honest?  `python benchmarks/evidence.py`

Runs a checkpoint pair trained on ``train.csv`` only (``--checkpoint``; both variants, each on its own views, as
the demo and ``geosurge predict`` do) on the dev photos it was not trained on (``val.csv`` + ``test.csv``: 548
photos; its posterior's weights and calibration were fitted by grouped CV over all dev photos, so those two
are not entirely unseen). The embedded pair trains on all dev photos, so it is refused: its evidence on them
is not held out. Per evidence band (``geosurge.model.evidence.EVIDENCE_BANDS``) and per quartile of
evidence prints: photos, photographers, % within 750 / 2,500 km with 95 % photographer-bootstrap intervals,
the same for the no-photo answer (the posterior's rule applied to the prior alone) on the same photos, the mean
evidence (KL(posterior || prior), bits) and the mean bits the posterior put on the true cell beyond the prior.
Thread setting: ``torch.set_num_threads(1)`` (the figures do not depend on it).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geosurge.data.records import GeoRecords, read_records  # noqa: E402
from geosurge.eval.cv import bootstrap_mean, score  # noqa: E402
from geosurge.eval.evaluate import checkpoint_features  # noqa: E402
from geosurge.geo.distance import haversine_km  # noqa: E402
from geosurge.model.embedded import EMBEDDED_CHECKPOINT  # noqa: E402
from geosurge.model.checkpoint_dir import CheckpointDir  # noqa: E402
from geosurge.model.variants import FUSION  # noqa: E402
from geosurge.model.decode import Decoder  # noqa: E402
from geosurge.model.evidence import EVIDENCE_BANDS  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "im2gps3k-dev"


def held_out(dev: Path) -> tuple[GeoRecords, list[str]]:
    """val.csv + test.csv as one record set, with each photo's photographer."""
    parts = [read_records(dev / name)[0] for name in ("val.csv", "test.csv")]
    authors = {r["image"]: r["author"] for name in ("val.csv", "test.csv") for r in csv.DictReader(open(dev / name))}
    records = GeoRecords(sum((p.ids for p in parts), []), np.concatenate([p.lats for p in parts]),
                         np.concatenate([p.lons for p in parts]), parts[0].root)
    return records, [authors[i] for i in records.ids]


def per_photo(checkpoint: Path, records: GeoRecords, fusion: bool) -> dict[str, np.ndarray]:
    """Per photo: evidence bits, error of the answer and of the no-photo answer (km), bits on the true cell."""
    model, hierarchy, feats, keep, directory, _ = checkpoint_features(checkpoint, records, fusion=fusion)
    decoder = Decoder.for_checkpoint(model, hierarchy, directory)
    d, post = decoder(feats.float()), decoder.posterior
    lat, lon = records.lats[keep], records.lons[keep]
    [none] = post.decide(post.log_base[None, :])  # what the rule answers without any photo
    true = hierarchy.assign(lat, lon)[:, -1]
    inside = true >= 0
    bits_true = np.full(len(true), np.nan)
    rows = np.flatnonzero(inside)
    bits_true[rows] = ((d.log_post[rows, true[rows]] - post.log_base[true[rows]]) / math.log(2)).numpy()
    return {"bits": d.evidence_bits, "err": haversine_km(d.latlon[:, 0], d.latlon[:, 1], lat, lon),
            "err_none": haversine_km(*post.centroids[none], lat, lon), "bits_true": bits_true, "keep": keep}


def band_row(name: str, m: np.ndarray, r: dict[str, np.ndarray], groups: np.ndarray) -> str:
    """One markdown row for the photos selected by mask ``m``."""
    if not m.any():
        return f"| {name} | 0 | 0 | – | – | – | – | – | – |"
    s, s0 = score(r["err"][m], groups[m]), score(r["err_none"][m], groups[m])
    cell = lambda x, k: f"{x.acc[k]:.1f} [{x.low[k]:.1f}, {x.high[k]:.1f}]"  # noqa: E731
    t = r["bits_true"][m]
    ok = ~np.isnan(t)
    bt = bootstrap_mean(t[ok], groups[m][ok]) if ok.any() else (math.nan,) * 3
    return (f"| {name} | {m.sum()} | {len(set(groups[m]))} | {cell(s, 750)} | {cell(s, 2500)} | {s0.acc[750]:.1f} | "
            f"{s0.acc[2500]:.1f} | {r['bits'][m].mean():.3f} | {bt[0]:+.3f} [{bt[1]:+.3f}, {bt[2]:+.3f}] |")


def table(r: dict[str, np.ndarray], groups: np.ndarray) -> list[str]:
    """The band rows (the wording's thresholds), then quartiles of evidence, then all photos."""
    lines = ["| evidence (bits) | photos | photographers | % within 750 km | % within 2,500 km | no-photo answer 750 km | "
             "no-photo answer 2,500 km | mean evidence, bits | bits on the true cell beyond the prior |",
             "|" + "---|" * 9]
    lower = 0.0
    for upper, text in EVIDENCE_BANDS:
        word = text.split("told the model ")[1].split(" (")[0]
        lines.append(band_row(f"{lower:g}–{upper:g} ({word})", (r["bits"] >= lower) & (r["bits"] < upper), r, groups))
        lower = upper
    q = np.quantile(r["bits"], [0, 0.25, 0.5, 0.75, 1.0])
    for k in range(4):
        m = (r["bits"] >= q[k]) & ((r["bits"] < q[k + 1]) if k < 3 else (r["bits"] <= q[k + 1]))
        lines.append(band_row(f"quartile {k + 1}: {q[k]:.3f}–{q[k + 1]:.3f}", m, r, groups))
    lines.append(band_row("all", np.ones(len(r["bits"]), bool), r, groups))
    return lines


def trained_on_held_out(checkpoint: Path) -> list[str]:
    """The held-out CSVs (val.csv, test.csv) that ``checkpoint``'s fusion model was trained on, if any: such a
    pair has seen these photos and its evidence on them says nothing about new photos."""
    data = CheckpointDir.read(checkpoint).variants[FUSION].training.get("config", {}).get("data", {})
    csvs = data.get("train_csv") or []
    return [c for c in ([csvs] if isinstance(csvs, str) else csvs) if Path(c).name in ("val.csv", "test.csv")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=EMBEDDED_CHECKPOINT)
    ap.add_argument("--dev", type=Path, default=DEV, help="folder with val.csv, test.csv and images/")
    args = ap.parse_args()
    if seen := trained_on_held_out(args.checkpoint):
        sys.exit(f"{args.checkpoint} was trained on {', '.join(seen)}: its evidence on those photos is not held out. "
                 "Pass --checkpoint of a pair trained on train.csv only (docs/results.md names one).")
    torch.set_num_threads(1)
    records, authors = held_out(args.dev)
    for fusion in (True, False):
        r = per_photo(args.checkpoint, records, fusion)
        groups = np.asarray(authors)[r["keep"]]
        outside = int(np.isnan(r["bits_true"]).sum())
        print(f"\n{'fusion' if fusion else 'RGB-only'}: {len(groups)} photos ({outside} outside every kept cell: "
              f"no bits on truth), evidence {np.percentile(r['bits'], 0):.3f}–{r['bits'].max():.3f} bits\n")
        print("\n".join(table(r, groups)))


if __name__ == "__main__":
    main()
