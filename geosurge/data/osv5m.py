"""OpenStreetView-5M as its authors publish it on the Hugging Face Hub (dataset ``osv5m/osv5m``).

The repository holds ``train.csv`` / ``test.csv`` (``id,latitude,longitude,...``, one row per photo, columns
found by name) and the photos in zip shards ``images/<split>/00.zip``, ``01.zip`` … whose members are named
``<id>.jpg``. Files come through ``huggingface_hub.snapshot_download`` (its cache, revision and offline mode
as for any Hub file; ``HF_HUB_OFFLINE=1`` reads only the local cache). Each shard is unpacked once beside the
other caches (``<extract_to>/<repo>/<commit>/<split>/<shard>/``) so that training reads photos from files like
every other source. A shard that is not a readable zip is an error naming it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

from .records import GeoRecords, SkipReport, read_records

#: members of a shard taken as photos
_PHOTOS = (".jpg", ".jpeg", ".png", ".webp")
_DONE = ".complete"


def read_osv5m(repo: str, split: str = "train", shards: list[int] | None = None, revision: str | None = None,
               extract_to: str | Path = ".cache/geosurge/osv5m", group: str | None = None,
               cache_dir: str | Path | None = None) -> tuple[GeoRecords, SkipReport]:
    """The photos of ``split`` in the chosen zip shards (all when None), with their coordinates (and
    photographer column ``group``, e.g. ``creator_username`` or ``sequence``). Rows whose photo is in none of
    the chosen shards are counted as missing."""
    snapshot = _download(repo, split, shards, revision, cache_dir)
    csv_path = snapshot / f"{split}.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{repo}: no {split}.csv in the dataset repository ({snapshot})")
    zips = sorted((snapshot / "images" / split).glob("*.zip"))
    if shards is not None:
        zips = [z for z in zips if z.stem.isdigit() and int(z.stem) in set(shards)]
    if not zips:
        raise FileNotFoundError(f"{repo}: no zip shards{f' {shards}' if shards is not None else ''} under images/{split}/ ({snapshot})")
    out = Path(extract_to) / repo.replace("/", "--") / snapshot.name / split
    where: dict[str, str] = {}
    for z in zips:
        for name in _unpack(z, out / z.stem):
            where[Path(name).stem] = f"{z.stem}/{name}"
    return read_records(csv_path, out, group=group, locate=where.get)


def _download(repo: str, split: str, shards: list[int] | None, revision: str | None, cache_dir) -> Path:
    from huggingface_hub import snapshot_download

    zips = [f"images/{split}/*.zip"] if shards is None else [f"images/{split}/{s:02d}.zip" for s in shards]
    try:
        return Path(snapshot_download(repo, repo_type="dataset", revision=revision, cache_dir=cache_dir,
                                      allow_patterns=[f"{split}.csv", *zips]))
    except Exception as e:  # offline without a cached copy, unknown repository or revision
        raise FileNotFoundError(f"the dataset {repo!r} (revision {revision or 'main'}) could not be fetched from the Hugging Face "
                                f"Hub or its local cache: {type(e).__name__}: {e}") from None


def _unpack(shard: Path, folder: Path) -> list[str]:
    """File names of the photos of one zip shard, unpacked into ``folder`` once (flat: member folders dropped,
    so no member can write outside it)."""
    if (folder / _DONE).is_file():
        return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in _PHOTOS)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        names = _extract(shard, tmp)
        (tmp / _DONE).write_text(f"{len(names)}\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return names


def _extract(shard: Path, folder: Path) -> list[str]:
    names = []
    try:
        with zipfile.ZipFile(shard) as zf:
            for info in zf.infolist():
                name = Path(info.filename).name
                if info.is_dir() or not name.lower().endswith(_PHOTOS):
                    continue
                with zf.open(info) as src, open(folder / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                names.append(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise ValueError(f"{shard}: not a readable zip archive ({type(e).__name__}: {e})") from None
    return sorted(names)
