"""Label maps for MP-16-scale runs: chunk files at the fusion module's resolution, written by many processes.

``geosurge segment`` under ``torchrun`` splits the work into *units* (one msgpack shard, or
``chunk_size`` rows of a CSV); unit ``u`` belongs to rank ``u % world``, so the split is a pure function
of the input and the world size, on one node or many. A unit is written as chunk files of at most
``chunk_size`` photos, each written beside its final name and renamed into place: a chunk file that
exists is complete, and the set of chunk files is the done-index. A killed job is restarted with the same
command; it skips the chunks present and redoes only the one it was writing.

Chunk file layout: an 8-byte little-endian header length, a msgpack header ``{"ids", "offsets",
"lengths", "format"}``, then the label maps as 8-bit PNGs, back to back. Each map is stored with its
shorter side at ``short_side`` pixels (default: the fusion lattice of a ten-crop view, see
:func:`short_side_for`), never at the photo's full resolution.
"""
from __future__ import annotations

import io
import json
from collections import OrderedDict
from glob import escape as glob_escape
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import atomic_write
from .images import ImageLoadError, load_image
from .records import GeoRecords, SkipReport
from .transforms import resize_label_map

MANIFEST = "labels.json"
CHUNKS = "chunks"
SUFFIX = ".lbl"
FORMAT = 1
#: ten-crop evaluation resizes the shorter side to image_size / 0.875 (Preprocess): storing the labels at
#: the fusion lattice of that scale keeps every sample the fusion module takes (random crops zoom in a little).
CROP_FRACTION = 0.875


def short_side_for(label_side: int) -> int:
    """Stored shorter side for a fusion lattice of ``label_side`` samples per crop side."""
    return int(round(label_side / CROP_FRACTION))


def is_chunk_store(root: str | Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def encode_labels(labels: np.ndarray, short_side: int) -> bytes:
    """(H, W) uint8 labels -> PNG bytes with the shorter side at ``short_side`` (nearest neighbour)."""
    if labels.max(initial=0) > 255:
        raise ValueError("label maps are stored as 8-bit PNG: labels must be < 256")
    labels = labels.astype(np.uint8)
    h, w = labels.shape
    s = short_side / min(w, h)
    if s < 1:
        labels = resize_label_map(labels, (max(1, round(w * s)), max(1, round(h * s))))
    img = Image.fromarray(labels, mode="L")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def decode_labels(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """PNG bytes -> (H, W) uint8 labels, resized (nearest) to ``size`` = (width, height) when given."""
    with Image.open(io.BytesIO(data)) as img:
        labels = np.asarray(img, dtype=np.uint8)
    return labels if size is None else resize_label_map(labels, size)


class ChunkStore:
    """A directory of label chunk files; reads a map by image id, writes a chunk atomically."""

    def __init__(self, root: str | Path, segmenter=None, label_side: int | None = None):
        """Open (or create, with ``segmenter`` and ``label_side``) a chunk store.

        The segmenter setting and the stored side are recorded in ``labels.json`` the first time and
        checked every later time, so labels of one setting never mix with another's.
        """
        self.root = Path(root)
        path = self.root / MANIFEST
        if path.is_file():
            self.manifest = json.loads(path.read_text())
            if segmenter is not None:
                want = {"name": segmenter.name, "input_size": segmenter.input_size}
                if self.manifest["segmenter"] != want:
                    raise ValueError(f"the label chunks in {self.root} were made by segmenter {self.manifest['segmenter']}, not {want}")
            if label_side is not None and self.manifest["label_side"] != label_side:
                raise ValueError(f"the label chunks in {self.root} are for a fusion lattice of {self.manifest['label_side']}, "
                                 f"not {label_side}: use another directory")
        else:
            if segmenter is None or label_side is None:
                raise FileNotFoundError(f"{path} is missing: {self.root} is not a label chunk store (geosurge segment --layout chunks)")
            self.manifest = {"format": FORMAT, "segmenter": {"name": segmenter.name, "input_size": segmenter.input_size},
                             "label_side": int(label_side), "short_side": short_side_for(label_side)}
            (self.root / CHUNKS).mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps(self.manifest, indent=1) + "\n", fsync=True)
        self._index: dict[str, tuple[str, int, int]] | None = None
        self._units: OrderedDict[str, dict[str, tuple[str, int, int]]] = OrderedDict()
        self._files: dict[str, object] = {}

    @property
    def label_side(self) -> int:
        return int(self.manifest["label_side"])

    @property
    def short_side(self) -> int:
        return int(self.manifest["short_side"])

    # ------------------------------------------------------------------ writing
    def chunk_path(self, name: str) -> Path:
        return self.root / CHUNKS / f"{name}{SUFFIX}"

    def done(self, name: str) -> bool:
        return self.chunk_path(name).is_file()

    def write_chunk(self, name: str, items: list[tuple[str, bytes]]) -> Path:
        """Write ``(id, PNG bytes)`` pairs as one chunk file (atomic: it appears complete or not at all)."""
        import msgpack

        offsets, pos = [], 0
        for _, data in items:
            offsets.append(pos)
            pos += len(data)
        header = msgpack.packb({"format": FORMAT, "ids": [i for i, _ in items], "offsets": offsets,
                                "lengths": [len(d) for _, d in items]}, use_bin_type=True)
        path = self.chunk_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, struct.pack("<Q", len(header)) + header + b"".join(d for _, d in items), fsync=True)
        self._index = None
        return path

    # ------------------------------------------------------------------ reading
    @staticmethod
    def read_header(path: Path) -> tuple[dict, int]:
        import msgpack

        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            return msgpack.unpackb(f.read(n), raw=False), 8 + n

    def chunk_names(self) -> list[str]:
        return sorted(p.name[: -len(SUFFIX)] for p in (self.root / CHUNKS).glob(f"*{SUFFIX}"))

    def _read_index(self, paths: Iterable[Path]) -> dict[str, tuple[str, int, int]]:
        index = {}
        for path in paths:
            head, base = self.read_header(path)
            where = str(path)
            for rid, off, n in zip(head["ids"], head["offsets"], head["lengths"]):
                index[rid] = (where, base + off, n)
        return index

    def index(self) -> dict[str, tuple[str, int, int]]:
        """id -> (chunk file, byte offset, length) of every map, read from the chunk headers once.

        At MP-16 scale this is millions of entries per process: streamed training passes the unit
        (the shard a record came from) instead, and only that unit's chunks are indexed.
        """
        if self._index is None:
            self._index = self._read_index(self.chunk_path(n) for n in self.chunk_names())
        return self._index

    def unit_index(self, unit: str) -> dict[str, tuple[str, int, int]]:
        """The index of one unit's chunks (``<unit>-*.lbl``, or ``<unit>.lbl``); the last 4 are kept."""
        if unit not in self._units:
            d = self.root / CHUNKS
            paths = sorted(d.glob(f"{glob_escape(unit)}-*{SUFFIX}")) + [p for p in [d / f"{unit}{SUFFIX}"] if p.is_file()]
            self._units[unit] = self._read_index(paths)
            while len(self._units) > 4:
                self._units.popitem(last=False)
        self._units.move_to_end(unit)
        return self._units[unit]

    def _where(self, image_id: str, unit: str | None) -> tuple[str, int, int]:
        if unit is not None:
            found = self.unit_index(unit).get(image_id)
            if found is not None:
                return found
        # not where the unit's name says (chunks written by other means): the whole store, indexed once
        return self.index()[image_id]

    def __len__(self) -> int:
        return len(self.index())

    def has(self, image_id: str, unit: str | None = None) -> bool:
        try:
            self._where(image_id, unit)
            return True
        except KeyError:
            return False

    def read_bytes(self, image_id: str, unit: str | None = None) -> bytes:
        path, off, n = self._where(image_id, unit)
        f = self._files.get(path)
        if f is None:
            if len(self._files) > 64:  # bound the open files (DataLoader workers each hold their own)
                for old in self._files.values():
                    old.close()
                self._files.clear()
            f = self._files[path] = open(path, "rb")
        f.seek(off)
        return f.read(n)

    def load(self, image_id: str, size: tuple[int, int] | None = None, unit: str | None = None) -> np.ndarray:
        """Label map (H, W) uint8, resized (nearest) to ``size`` = (width, height) when given.

        ``unit`` (the msgpack shard's stem the photo came from) limits the lookup to that unit's chunks.
        """
        try:
            data = self.read_bytes(image_id, unit)
        except KeyError:
            raise FileNotFoundError(f"no label map for {image_id} in {self.root}") from None
        return decode_labels(data, size)

    def __getstate__(self):  # DataLoader workers: reopen files in the worker
        d = dict(self.__dict__)
        d["_files"] = {}
        return d


# ---------------------------------------------------------------------------------------- segmenting
@dataclass
class Unit:
    """One piece of work: a msgpack shard, or rows [start, stop) of a CSV's records."""

    name: str
    shard: Path | None = None
    records: GeoRecords | None = None
    start: int = 0
    stop: int = 0


def csv_units(records: GeoRecords, tag: str, chunk_size: int) -> list[Unit]:
    return [Unit(f"{tag}-{s // chunk_size:06d}", records=records, start=s, stop=min(s + chunk_size, len(records)))
            for s in range(0, len(records), chunk_size)]


def shard_units(shards: list[Path]) -> list[Unit]:
    return [Unit(p.stem, shard=p) for p in shards]


def my_units(units: list[Unit], rank: int, world: int) -> list[Unit]:
    """Deterministic split: unit u to rank u % world (ranks across nodes are global, as torchrun numbers them)."""
    return units[rank::world]


@dataclass
class ChunkReport:
    photos: int = 0  # segmented in this run
    chunks: int = 0  # written in this run
    chunks_already: int = 0  # found done
    seconds: float = 0.0
    failed: SkipReport = field(default_factory=SkipReport)

    def summary(self) -> str:
        rate = self.photos / self.seconds if self.seconds > 0 else 0.0
        return (f"segmented {self.photos} photos into {self.chunks} chunks ({self.chunks_already} chunks already done) "
                f"in {self.seconds:.1f} s, {rate:.2f} photos/s; {self.failed.summary('images')}")


def _unit_images(unit: Unit, report: SkipReport) -> Iterator[tuple[str, object]]:
    """(id, image source) of a unit, undecoded: shard records as bytes, CSV rows as paths."""
    if unit.shard is not None:
        from .msgpack_shards import iter_shard

        yield from iter_shard(unit.shard, report)
    else:
        for i in range(unit.start, unit.stop):
            yield unit.records.ids[i], unit.records.path(i)


def _chunks_of(it: Iterable, size: int) -> Iterator[list]:
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _segment_items(items: list, segmenter: Callable, short_side: int, report: ChunkReport) -> list[tuple[str, bytes]]:
    """``(id, encoded label map)`` of the readable photos of ``items``, segmented in one batch."""
    ids, images = [], []
    for rid, src in items:
        try:
            images.append(load_image(src))
            ids.append(rid)
        except ImageLoadError as e:
            report.failed.add("unreadable image", f"{rid} ({e})")
    return [(rid, encode_labels(lab, short_side)) for rid, lab in zip(ids, segmenter.segment_batch(images))]


def segment_units(units: list[Unit], segmenter: Callable, store: ChunkStore, chunk_size: int = 256,
                  progress: bool = True, batch_size: int = 1) -> ChunkReport:
    """Segment the photos of ``units`` into chunks ``<unit>-<k>`` of the store; chunks already present are
    skipped. ``batch_size`` photos go through the segmenter's ``segment_batch`` at once."""
    report = ChunkReport()
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="segmenting", unit="img")
    for unit in units:
        for k, items in enumerate(_chunks_of(_unit_images(unit, report.failed), chunk_size)):
            name = unit.name if unit.shard is None else f"{unit.name}-{k:05d}"
            if store.done(name):
                report.chunks_already += 1
                continue
            out = []
            for s in range(0, len(items), batch_size):
                out += _segment_items(items[s : s + batch_size], segmenter, store.short_side, report)
                if bar is not None:
                    bar.update(len(items[s : s + batch_size]))
            store.write_chunk(name, out)
            report.photos += len(out)
            report.chunks += 1
    if bar is not None:
        bar.close()
    report.seconds = time.perf_counter() - t0
    return report
