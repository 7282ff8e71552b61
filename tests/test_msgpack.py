"""The field's data formats read as they are: MP-16 msgpack shards + IMG_ID,LAT,LON CSVs; label chunks."""
from __future__ import annotations

import csv

import msgpack
import numpy as np
import pytest

from geosurge.data.label_chunks import ChunkStore, csv_units, decode_labels, encode_labels, my_units, short_side_for
from geosurge.data.labels import LabelStore, open_label_store
from geosurge.data.msgpack_shards import MsgpackDataset, iter_shard, list_shards
from geosurge.data.records import read_records
from geosurge.model.config import SegmenterConfig

from .mp16_synth import jpeg, write_mp16


def test_msgpack_shards_images_ids_coordinates_and_bad_records(tmp_path):
    rng = np.random.default_rng(1)
    bad = [{"image": b"\xff\xd8 not really a jpeg", "id": "00/bad/undecodable.jpg"},
           {"image": jpeg(rng), "id": "zz/no/coords.jpg"},
           {"id": "no-image-key"}]
    shards, meta, coords = write_mp16(tmp_path, 3, 4, bad_records=bad,
                                      extra_rows=[["00/bad/undecodable.jpg", 10.0, 20.0], ["gone.jpg", "nan", 3]])
    # shard_10 sorts after shard_2, as written
    (shards / "shard_10.msg").write_bytes((shards / "shard_2.msg").read_bytes())
    assert [p.name for p in list_shards(shards)] == ["shard_0.msg", "shard_1.msg", "shard_2.msg", "shard_10.msg"]
    (shards / "shard_10.msg").unlink()

    ds, csv_report = MsgpackDataset.open(shards, meta)
    assert csv_report.counts == {"NaN or out-of-range coordinates": 1}
    lats, lons = ds.coordinates()
    assert len(lats) == 13 and np.all(np.abs(lats) <= 90)
    got = {}
    from geosurge.data.records import SkipReport

    report = SkipReport()
    for rid, image, lat, lon in ds.samples(report=report):
        got[rid] = (lat, lon, image.size)
    assert set(got) == set(coords)  # every good record, ids as written
    for rid, (lat, lon, size) in got.items():
        assert (lat, lon) == pytest.approx(coords[rid]) and size == (96, 72)
    assert report.counts == {"undecodable image": 1, "id without coordinates": 1, "malformed record": 1}


def test_legacy_raw_shards_and_truncated_shards(tmp_path):
    rng = np.random.default_rng(2)
    img = jpeg(rng)
    path = tmp_path / "shard_0.msg"
    # packed without the bin type (older msgpack): the image arrives as a raw string
    path.write_bytes(msgpack.packb({"image": img, "id": "a.jpg"}, use_bin_type=False) +
                     msgpack.packb({"image": img, "id": "b.jpg"}, use_bin_type=False)[:50])
    from geosurge.data.records import SkipReport

    rep = SkipReport()
    recs = list(iter_shard(path, rep))
    assert [r[0] for r in recs] == ["a.jpg"] and recs[0][1] == img
    assert rep.total == 0 or list(rep.counts) == ["truncated or corrupt shard"]


def test_benchmark_csvs_as_the_field_ships_them(tmp_path):
    """im2gps3k_places365.csv / yfcc4k_places365.csv: IMG_ID, LAT, LON first, more columns after."""
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(3)
    rows = [("1234_abc@N00.jpg", 48.1, 11.5), ("99.jpg", -33.9, 151.2)]
    for name, _, _ in rows:
        (tmp_path / "images" / name).write_bytes(jpeg(rng))
    path = tmp_path / "im2gps3k_places365.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["IMG_ID", "LAT", "LON", "S3_Label", "S16_Label", "S365_Label", "Prob_indoor", "Prob_natural", "Prob_urban"])
        for name, lat, lon in rows:
            w.writerow([name, lat, lon, 0, 1, 2, 0.3, 0.3, 0.4])
    recs, report = read_records(path)  # images/ beside the CSV
    assert report.total == 0 and recs.ids == [r[0] for r in rows]
    assert recs.lats.tolist() == [48.1, -33.9] and recs.lons.tolist() == [11.5, 151.2]


def test_label_chunks_roundtrip_split_and_settings(tmp_path):
    seg = SegmenterConfig("deeplab-ade20k", None, 385)
    store = ChunkStore(tmp_path / "labels", seg, label_side=56)
    assert store.short_side == short_side_for(56) == 64
    rng = np.random.default_rng(0)
    maps = {f"x/{i}.jpg": rng.integers(0, 151, (300 + i, 400)).astype(np.uint8) for i in range(5)}
    store.write_chunk("a-000000", [(k, encode_labels(v, store.short_side)) for k, v in list(maps.items())[:3]])
    store.write_chunk("a-000001", [(k, encode_labels(v, store.short_side)) for k, v in list(maps.items())[3:]])
    again = open_label_store(tmp_path / "labels", seg, label_side=56)
    assert isinstance(again, ChunkStore) and len(again) == 5 and again.done("a-000001")
    for k, v in maps.items():
        small = again.load(k)
        assert min(small.shape) == 64  # stored at the fusion lattice, not the photo's resolution
        full = again.load(k, (v.shape[1], v.shape[0]))
        assert full.shape == v.shape
        assert np.array_equal(decode_labels(encode_labels(v, 10_000)), v)  # lossless when not downsized
    with pytest.raises(ValueError, match="coarser"):
        open_label_store(tmp_path / "labels", seg, label_side=112)
    with pytest.raises(ValueError, match="made by segmenter"):
        ChunkStore(tmp_path / "labels", SegmenterConfig("oneformer"))
    with pytest.raises(FileNotFoundError):
        again.load("nope.jpg")
    assert isinstance(open_label_store(tmp_path / "png", seg), LabelStore)

    # every unit goes to exactly one rank, the same way every time
    recs = read_records.__globals__["GeoRecords"](list(maps), np.zeros(5), np.zeros(5))
    units = csv_units(recs, "t", 2)
    split = [[u.name for u in my_units(units, r, 2)] for r in range(2)]
    assert split == [["t-000000", "t-000002"], ["t-000001"]]


def test_label_chunks_lookup_by_unit_reads_only_that_units_chunks(tmp_path):
    seg = SegmenterConfig()
    store = ChunkStore(tmp_path, seg, label_side=8)
    rng = np.random.default_rng(0)
    for unit in ("shard_1", "shard_10"):
        for k in range(2):
            store.write_chunk(f"{unit}-{k:05d}", [(f"{unit}/{k}/{i}", encode_labels(rng.integers(0, 151, (9, 12)).astype(np.uint8), 9))
                                                  for i in range(3)])
    store.write_chunk("val0-000000", [("v.jpg", encode_labels(np.ones((9, 12), np.uint8), 9))])
    fresh = ChunkStore(tmp_path)
    assert fresh.has("shard_1/1/2", unit="shard_1")
    assert set(fresh.unit_index("shard_1")) == {f"shard_1/{k}/{i}" for k in range(2) for i in range(3)}
    assert fresh._index is None  # the whole store was never indexed
    assert fresh.has("shard_10/0/0", unit="shard_1")  # elsewhere: found through the whole-store index
    assert fresh.load("v.jpg", unit="val0-000000").max() == 1
    assert np.array_equal(fresh.load("shard_10/1/1", unit="shard_10"), fresh.load("shard_10/1/1"))
