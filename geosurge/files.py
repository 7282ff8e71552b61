"""Atomic file writes: the one helper every layer uses, so an interrupted run never leaves a half-written file."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(
    path: str | Path,
    content: bytes | str | Callable[[str], None],
    *,
    mode: int = 0o644,
    fsync: bool = False,
) -> Path:
    """Write ``content`` to ``path`` under a temporary name beside it, then rename it into place.

    ``content`` is the bytes or text to write, or a function that writes the file at the temporary path it
    is given (``lambda p: save_file(tensors, p)``). Readers see the old file or the whole new one, never a
    part. ``mode`` is the file's permission (``0o600`` for files only this process may read); ``fsync``
    flushes the data to disk before the rename, for stores that must survive a power cut, not just a kill.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp's 0600 would hide shared outputs (labels, checkpoints) from other users
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode())
            elif isinstance(content, bytes | bytearray | memoryview):
                f.write(content)
        if callable(content):
            content(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
