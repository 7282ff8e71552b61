"""Where training batches come from: cached views, images listed in a CSV, webdataset or msgpack shards.

Every source yields micro-batches ``(inputs, labels, cells)`` in an order that is a pure function of
(seed, epoch, rank), so a resumed run skips the batches it has done and sees exactly the batches it would
have seen. Its ``encode`` is the model method that turns its ``inputs`` into features: ``GeoSURGE.encode``
for pixels, ``GeoSURGE.encode_hidden`` for cached frozen-backbone outputs.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..data.examples import Skipped, load_example
from ..data.images import ImageLoadError, load_image
from ..data.label_chunks import decode_labels
from ..data.labels import LabelStore
from ..data.records import GeoRecords, SkipReport
from ..data.transforms import Preprocess, resample_labels
from ..model.geosurge import GeoSURGE
from ..model.views import ViewSet

Batch = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]


def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int, micro: int) -> list[np.ndarray]:
    """This process's micro-batches of sample indices for an epoch (equal count on every process)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    per_rank = (n // world) if world > 1 else n
    mine = perm[rank::world][:per_rank]
    return [mine[s : s + micro] for s in range(0, len(mine), micro) if len(mine[s : s + micro]) > 0]


class ViewSource:
    """One random cached view per image per epoch."""

    encode = staticmethod(GeoSURGE.encode_hidden)

    def __init__(self, views: ViewSet, cells: np.ndarray, seed: int, rank: int = 0, world: int = 1):
        self.views, self.cells = views, torch.from_numpy(cells[views.keep]).long()
        self.seed, self.rank, self.world = seed, rank, world
        self.skipped = SkipReport()

    def num_batches(self, epoch: int, micro: int) -> int:
        return len(epoch_order(len(self.views), self.seed, epoch, self.rank, self.world, micro))

    def batches(self, epoch: int, micro: int, start: int = 0) -> Iterator[Batch]:
        order = epoch_order(len(self.views), self.seed, epoch, self.rank, self.world, micro)
        pick = np.random.default_rng([self.seed, epoch, 1]).integers(0, self.views.hidden.shape[1], len(self.views))
        for idx in order[start:]:
            t = torch.from_numpy(idx)
            v = torch.from_numpy(pick[idx])
            hidden = self.views.hidden[t, v].float()
            labels = self.views.labels[t, v].long() if self.views.labels is not None else None
            yield hidden, labels, self.cells[t]


class ImageDataset(torch.utils.data.Dataset):
    """Images with random-resized-crop augmentation; an unreadable photo yields its :class:`Skipped` (counted by the source)."""

    def __init__(self, records: GeoRecords, cells: np.ndarray, preprocess: Preprocess, store: LabelStore | None,
                 label_side: int | None, seed: int):
        self.records, self.cells, self.pre, self.store, self.side, self.seed = records, cells, preprocess, store, label_side, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        got = load_example(self.records, i, self.store if self.side is not None else None)
        if isinstance(got, Skipped):
            return got
        img, lab = got
        # Per-sample generator from (seed, epoch, index): augmentations do not depend on worker count.
        x, y = self.pre(img, lab, crops="random", rng=np.random.default_rng([self.seed, self.epoch, int(i)]))
        if y is not None:
            y = resample_labels(y, self.side)
        return x[0], (y[0] if y is not None else None), torch.from_numpy(self.cells[i]).long()


def collate(items):
    """Stack the good samples; return the skipped ones' reasons beside them."""
    good = [it for it in items if len(it) == 3]
    bad = [it for it in items if len(it) == 2]
    if not good:
        return None, None, None, bad
    x = torch.stack([g[0] for g in good])
    y = torch.stack([g[1] for g in good]) if good[0][1] is not None else None
    return x, y, torch.stack([g[2] for g in good]), bad


class ImageSource:
    """Decode, segment-map and augment images on the fly with DataLoader workers (MP-16 style training)."""

    encode = staticmethod(GeoSURGE.encode)

    def __init__(self, dataset: ImageDataset, num_workers: int, seed: int, rank: int = 0, world: int = 1):
        self.ds, self.num_workers, self.seed, self.rank, self.world = dataset, num_workers, seed, rank, world
        self.skipped = SkipReport()

    def num_batches(self, epoch: int, micro: int) -> int:
        return len(epoch_order(len(self.ds), self.seed, epoch, self.rank, self.world, micro))

    def batches(self, epoch: int, micro: int, start: int = 0) -> Iterator[Batch]:
        self.ds.epoch = epoch
        order = [b.tolist() for b in epoch_order(len(self.ds), self.seed, epoch, self.rank, self.world, micro)][start:]
        loader = torch.utils.data.DataLoader(
            self.ds, batch_sampler=order, num_workers=self.num_workers, collate_fn=collate,
            persistent_workers=False, pin_memory=torch.cuda.is_available(),
        )
        for x, y, cells, bad in loader:
            for reason, example in bad:
                self.skipped.add(reason, example)
            if x is not None:
                yield x, y, cells


class _ShardStream(torch.utils.data.IterableDataset):
    """Micro-batches from this process's shards; DataLoader worker ``w`` of ``W`` reads shards w, w+W, ...

    The DataLoader takes batches from its workers round-robin, so batch ``j`` comes from worker
    ``j % W``: to resume after ``start`` batches, each worker drops its first batches without decoding
    them. Augmentation draws from a generator seeded by (seed, epoch, sample key), so skipping changes
    nothing downstream.
    """

    def __init__(self, source: "ShardSource", epoch: int, micro: int, start: int):
        self.src, self.epoch, self.micro, self.start = source, epoch, micro, start

    def __iter__(self):
        import hashlib
        import json

        import webdataset as wds

        info = torch.utils.data.get_worker_info()
        w, nw = (info.id, info.num_workers) if info else (0, 1)
        src = self.src
        urls = list(np.random.default_rng([src.seed, self.epoch]).permutation(src.urls))[src.rank :: src.world][w::nw]
        skip = max(0, -(-(self.start - w) // nw))  # own batches among the first `start` overall
        xs, ys, cs, bad, n_batches = [], [], [], [], 0
        for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=_identity, workersplitter=_identity):
            if n_batches < skip:
                xs.append(None)
                if len(xs) == self.micro:
                    xs, n_batches = [], n_batches + 1
                continue
            key = sample.get("__key__", "?")
            try:
                meta = json.loads(sample["json"])
                img = load_image(sample["jpg"])
                lat, lon = float(meta["lat"]), float(meta["lon"])
            except (KeyError, ValueError, TypeError, ImageLoadError) as e:
                bad.append(("unreadable sample", f"{key} ({e})"))
                continue
            if not (np.isfinite(lat) and np.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
                bad.append(("NaN or out-of-range coordinates", key))
                continue
            lab = None
            if src.side is not None:
                if "seg.png" not in sample:
                    bad.append(("no label map", key))
                    continue
                lab = decode_labels(sample["seg.png"], img.size)
            kseed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
            x, y = src.pre(img, lab, crops="random", rng=np.random.default_rng([src.seed, self.epoch, kseed]))
            xs.append(x[0])
            ys.append(resample_labels(y, src.side)[0] if y is not None else None)
            cs.append(torch.from_numpy(src.h.assign([lat], [lon])[0]).long())
            if len(xs) == self.micro:
                yield torch.stack(xs), (torch.stack(ys) if ys[0] is not None else None), torch.stack(cs), bad
                xs, ys, cs, bad, n_batches = [], [], [], [], n_batches + 1
        if xs and xs[0] is not None:
            yield torch.stack(xs), (torch.stack(ys) if ys[0] is not None else None), torch.stack(cs), bad


class ShardSource:
    """webdataset tar shards (``geosurge shards`` writes them): ``jpg`` + ``json`` (+ ``seg.png``) per sample."""

    uneven = True  # see MsgpackSource
    encode = staticmethod(GeoSURGE.encode)

    def __init__(self, urls: list[str], num_samples: int, hierarchy, preprocess: Preprocess, label_side: int | None,
                 seed: int, num_workers: int, rank: int = 0, world: int = 1):
        self.urls, self.n = urls, num_samples
        self.h, self.pre, self.side, self.seed = hierarchy, preprocess, label_side, seed
        self.num_workers, self.rank, self.world = max(0, num_workers), rank, world
        self.skipped = SkipReport()

    def num_batches(self, epoch: int, micro: int) -> int:
        # An estimate (shards differ in size); it only sizes progress bars and the learning-rate log.
        return max(1, -(-self.n // (micro * self.world)))

    def batches(self, epoch: int, micro: int, start: int = 0) -> Iterator[Batch]:
        stream = _ShardStream(self, epoch, micro, start)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                                             pin_memory=torch.cuda.is_available())
        for x, y, cells, bad in loader:
            for reason, example in bad:
                self.skipped.add(reason, example)
            yield x, y, cells


def _identity(urls):
    # Shards are split between processes and workers above, deterministically; webdataset must not split again.
    return urls


class _MsgpackStream(torch.utils.data.IterableDataset):
    """Micro-batches of ``micro`` consecutive records from this process's msgpack shards.

    Process ``r`` of ``R`` reads the epoch's shard permutation at r, r+R, ...; DataLoader worker ``w``
    of ``W`` reads every W-th of those, and batch ``j`` comes from worker ``j % W``. A batch is
    ``micro`` records *before* decoding (an undecodable one leaves the batch one short), so the batches
    to skip on resume are found without decoding anything.
    """

    def __init__(self, source: "MsgpackSource", epoch: int, micro: int, start: int):
        self.src, self.epoch, self.micro, self.start = source, epoch, micro, start

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, nw = (info.id, info.num_workers) if info else (0, 1)
        src = self.src
        order = np.random.default_rng([src.seed, self.epoch]).permutation(len(src.ds.shards))
        shards = [src.ds.shards[i] for i in order][src.rank :: src.world][w::nw]
        skip = max(0, -(-(self.start - w) // nw))  # own batches among the first `start` overall
        report = SkipReport()
        batch, n = [], 0
        for rec in _with_shard(src.ds, shards, report):
            batch.append(rec)
            if len(batch) < self.micro:
                continue
            if n >= skip:
                yield self._collate(batch, report)
                report = SkipReport()
            batch, n = [], n + 1
        if batch and n >= skip:
            yield self._collate(batch, report)

    def _collate(self, batch: list, report: SkipReport):
        import hashlib

        src = self.src
        xs, ys, lats, lons = [], [], [], []
        for rid, data, lat, lon, shard in batch:
            try:
                img = load_image(data)
            except ImageLoadError as e:
                report.add("undecodable image", f"{rid} ({e})")
                continue
            lab = None
            if src.side is not None:
                try:
                    lab = src.store.load(rid, img.size, unit=shard)
                except FileNotFoundError:
                    report.add("no label map", rid)
                    continue
            # Augmentation from (seed, epoch, id): independent of the worker count and of resuming.
            kseed = int.from_bytes(hashlib.blake2b(rid.encode(), digest_size=8).digest(), "little")
            x, y = src.pre(img, lab, crops="random", rng=np.random.default_rng([src.seed, self.epoch, kseed]))
            xs.append(x[0])
            ys.append(resample_labels(y, src.side)[0] if y is not None else None)
            lats.append(lat)
            lons.append(lon)
        if not xs:
            return None, None, None, report.as_dict()
        cells = torch.from_numpy(src.h.assign(np.asarray(lats), np.asarray(lons))).long()
        return torch.stack(xs), (torch.stack(ys) if ys[0] is not None else None), cells, report.as_dict()


def _with_shard(dataset, shards, report: SkipReport):
    """(id, image bytes, lat, lon, shard stem): the stem names the shard's label chunks (geosurge segment)."""
    for shard in shards:
        for rec in dataset.samples([shard], report=report, decode=False):
            yield (*rec, shard.stem)


class MsgpackSource:
    """MP-16 msgpack shards as GeoEstimation ships them, with coordinates from the metadata CSV and
    label maps from a label store keyed by the record id (``geosurge segment --msgpack``)."""

    #: processes may run out of batches at different times (shards differ in size): the trainer stops
    #: every process at the first one's end of data
    uneven = True
    encode = staticmethod(GeoSURGE.encode)

    def __init__(self, dataset, hierarchy, preprocess: Preprocess, store, label_side: int | None, seed: int,
                 num_workers: int, rank: int = 0, world: int = 1):
        self.ds, self.h, self.pre, self.store, self.side, self.seed = dataset, hierarchy, preprocess, store, label_side, seed
        self.num_workers, self.rank, self.world = max(0, num_workers), rank, world
        self.skipped = SkipReport()

    def num_batches(self, epoch: int, micro: int) -> int:
        # An estimate (from the metadata CSV): it sizes progress bars only.
        return max(1, -(-len(self.ds.coords) // (micro * self.world)))

    def batches(self, epoch: int, micro: int, start: int = 0) -> Iterator[Batch]:
        stream = _MsgpackStream(self, epoch, micro, start)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                                             pin_memory=torch.cuda.is_available(),
                                             prefetch_factor=4 if self.num_workers else None)
        for x, y, cells, report in loader:
            self.skipped.merge(SkipReport.from_dict(report))
            if x is not None:
                yield x, y, cells
