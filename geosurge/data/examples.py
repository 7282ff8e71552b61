"""A listed photo and its label map, or why it is skipped: the one loading step of training, evaluation
and the view cache, so that all three read, skip and count photos alike."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

from .images import ImageLoadError, load_image
from .records import GeoRecords, SkipReport


class Skipped(NamedTuple):
    """Why a photo is left out (a :class:`SkipReport` reason) and which photo."""

    reason: str
    example: str


def load_example(records: GeoRecords, row: int, store=None) -> tuple[Image.Image, np.ndarray | None] | Skipped:
    """Photo ``row`` of ``records`` as upright RGB and, with a label ``store``, its label map at the photo's
    size; or :class:`Skipped` when the photo cannot be read or has no label map."""
    rid = records.ids[row]
    try:
        image = load_image(records.path(row))
    except ImageLoadError as e:
        return Skipped("unreadable image", f"{rid} ({e})")
    if store is None:
        return image, None
    try:
        return image, store.load(rid, image.size)
    except FileNotFoundError:
        return Skipped("no label map", rid)


@dataclass
class ExampleBatch:
    """The readable photos of a run of rows: their rows in the records, images and label maps (None without a store)."""

    rows: list[int]
    images: list[Image.Image]
    label_maps: list[np.ndarray] | None


def example_batches(records: GeoRecords, store=None, batch_size: int = 64, report: SkipReport | None = None,
                    rows: Sequence[int] | None = None, progress: str | None = None) -> Iterator[ExampleBatch]:
    """:func:`load_example` over ``rows`` (default: every record), ``batch_size`` rows at a time.

    Skipped photos go to ``report``; a batch whose photos were all skipped is not yielded. ``progress``
    names a progress bar over the batches.
    """
    rows = np.arange(len(records)) if rows is None else np.asarray(rows)
    report = report if report is not None else SkipReport()
    starts = range(0, len(rows), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=progress, unit="batch")
    for s in starts:
        batch = ExampleBatch([], [], [] if store is not None else None)
        for row in rows[s : s + batch_size]:
            got = load_example(records, int(row), store)
            if isinstance(got, Skipped):
                report.add(*got)
                continue
            batch.rows.append(int(row))
            batch.images.append(got[0])
            if store is not None:
                batch.label_maps.append(got[1])
        if batch.rows:
            yield batch
