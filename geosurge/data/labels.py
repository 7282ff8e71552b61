"""Precomputed ADE20K label maps, one PNG per image, so that training never runs the segmenter."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import atomic_write
from .images import ImageLoadError, load_image
from .records import GeoRecords, SkipReport
from .transforms import resize_label_map

#: Label maps are stored with their longer side at most this many pixels (the DeepLab output is
#: 513 px, so larger maps would only repeat pixels) and resized to the image, nearest-neighbour, at use.
MAX_SIDE = 640


class LabelStore:
    """A directory of 8-bit PNG label maps mirroring the image ids (``a/b.jpg`` -> ``a/b.png``).

    With ``segmenter`` (a :class:`~geosurge.model.config.SegmenterConfig`) the store is bound to the
    segmenter setting that makes its labels: the setting is recorded in ``segmenter.json`` the first time
    and checked every later time, so labels made at one input size never feed a model trained on another.
    """

    RECORD = "segmenter.json"

    def __init__(self, root: str | Path, segmenter=None):
        self.root = Path(root)
        if segmenter is not None:
            self._bind(segmenter)

    def _bind(self, segmenter) -> None:
        want = {"name": segmenter.name, "input_size": segmenter.input_size}
        record = self.root / self.RECORD
        if record.is_file():
            have = json.loads(record.read_text())
            if {k: have.get(k) for k in want} != want:
                raise ValueError(f"the label maps in {self.root} were made by segmenter {have}, not {want}: "
                                 f"point to another directory (e.g. .cache/labels/{segmenter.cache_name()})")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(record, json.dumps(want) + "\n")

    def path(self, image_id: str) -> Path:
        return self.root / Path(image_id).with_suffix(".png")

    def has(self, image_id: str) -> bool:
        return self.path(image_id).is_file()

    def save(self, image_id: str, labels: np.ndarray) -> None:
        if labels.max(initial=0) > 255:
            raise ValueError("label maps are stored as 8-bit PNG: labels must be < 256")
        labels = labels.astype(np.uint8)
        h, w = labels.shape
        if max(w, h) > MAX_SIDE:
            s = MAX_SIDE / max(w, h)
            labels = resize_label_map(labels, (max(1, round(w * s)), max(1, round(h * s))))
        img = Image.fromarray(labels, mode="L")
        path = self.path(image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic: an interrupted run leaves no truncated PNG, so resuming can trust every file present.
        atomic_write(path, lambda p: img.save(p, format="PNG"))

    def load(self, image_id: str, size: tuple[int, int] | None = None, unit: str | None = None) -> np.ndarray:
        """Label map (H, W) uint8, resized (nearest) to ``size`` = (width, height) when given.

        ``unit`` is accepted for the chunk store's interface; a PNG per photo needs no hint.
        """
        with Image.open(self.path(image_id)) as img:
            labels = np.asarray(img, dtype=np.uint8)
        return labels if size is None else resize_label_map(labels, size)


def open_label_store(root: str | Path, segmenter=None, label_side: int | None = None):
    """The label maps under ``root``: a chunk store (``geosurge segment --layout chunks``) or PNG files.

    A chunk store must hold maps at least as fine as the fusion lattice (``label_side``) it will feed.
    """
    from .label_chunks import ChunkStore, is_chunk_store

    if is_chunk_store(root):
        store = ChunkStore(root, segmenter)
        if label_side is not None and store.label_side < label_side:
            raise ValueError(f"the label chunks in {root} were stored for a fusion lattice of {store.label_side}, "
                             f"coarser than this model's {label_side}: segment again with --label-side {label_side}")
        return store
    return LabelStore(root, segmenter)


@dataclass
class SegmentReport:
    done: int = 0
    already: int = 0
    failed: SkipReport = field(default_factory=SkipReport)

    def summary(self) -> str:
        return f"segmented {self.done}, already present {self.already}; {self.failed.summary('images')}"


def segment_records(records: GeoRecords, segmenter, store: LabelStore, progress: bool = True, batch_size: int = 1) -> SegmentReport:
    """Write a label map for every image that has none yet (resumable); unreadable images are counted.
    ``batch_size`` photos go through ``segmenter.segment_batch`` at once (a ``Segmenter``: same maps as one by one)."""
    report = SegmentReport()
    todo = [i for i, name in enumerate(records.ids) if not store.has(name)]
    report.already = len(records) - len(todo)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"segmenting ({report.already} already done)", unit="img")
    for s in range(0, len(todo), batch_size):
        rows, images = [], []
        for i in todo[s : s + batch_size]:
            try:
                images.append(load_image(records.path(i)))
                rows.append(i)
            except ImageLoadError as e:
                report.failed.add("unreadable image", f"{records.ids[i]} ({e})")
        for i, labels in zip(rows, segmenter.segment_batch(images)):
            store.save(records.ids[i], labels)
            report.done += 1
        if bar is not None:
            bar.update(len(todo[s : s + batch_size]))
    if bar is not None:
        bar.close()
    return report
