"""The one loading step of training, evaluation and the view cache: a photo and its label map, or why not."""
import numpy as np
from PIL import Image

from geosurge.data.examples import Skipped, example_batches, load_example
from geosurge.data.labels import LabelStore
from geosurge.data.records import GeoRecords, SkipReport


def _records(tmp_path) -> tuple[GeoRecords, LabelStore]:
    store = LabelStore(tmp_path / "labels")
    for name, size in (("a.jpg", (40, 30)), ("b.jpg", (20, 50)), ("c.jpg", (30, 30))):
        Image.new("RGB", size, (10, 20, 30)).save(tmp_path / name)
    (tmp_path / "broken.jpg").write_text("not an image")
    store.save("a.jpg", np.full((15, 20), 3, np.uint8))  # half size: resized to the photo at load
    store.save("broken.jpg", np.zeros((4, 4), np.uint8))
    store.save("c.jpg", np.full((30, 30), 7, np.uint8))
    ids = ["a.jpg", "broken.jpg", "b.jpg", "c.jpg"]
    return GeoRecords(ids, np.zeros(4), np.zeros(4), tmp_path), store


def test_load_example_gives_the_photo_its_label_map_or_the_reason(tmp_path):
    records, store = _records(tmp_path)
    image, labels = load_example(records, 0, store)
    assert image.size == (40, 30) and labels.shape == (30, 40) and (labels == 3).all()
    assert load_example(records, 0)[1] is None  # no store: no label map asked for
    bad = load_example(records, 1, store)
    assert isinstance(bad, Skipped) and bad.reason == "unreadable image" and bad.example.startswith("broken.jpg (")
    assert load_example(records, 2, store) == Skipped("no label map", "b.jpg")
    assert load_example(records, 2)[0].size == (20, 50)  # an RGB-only model needs no label map


def test_example_batches_keep_rows_aligned_and_count_what_they_skip(tmp_path):
    records, store = _records(tmp_path)
    report = SkipReport()
    batches = list(example_batches(records, store, batch_size=2, report=report))
    # rows 0-1 give a (1 is broken), rows 2-3 give c (2 has no label map)
    assert [b.rows for b in batches] == [[0], [3]]
    assert [b.images[0].size for b in batches] == [(40, 30), (30, 30)]
    assert [int(b.label_maps[0][0, 0]) for b in batches] == [3, 7]
    assert dict(report.counts) == {"unreadable image": 1, "no label map": 1}
    rgb = list(example_batches(records, None, batch_size=3, rows=[1, 2, 3]))
    assert [b.rows for b in rgb] == [[2, 3]] and rgb[0].label_maps is None
    assert list(example_batches(records, store, rows=[1])) == []  # nothing readable: no empty batch
