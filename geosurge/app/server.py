"""Serving the demo: a private folder for everything uploaded or generated (readable by this user only,
swept by age, removed at shutdown or, after a crash, at the next start), Gradio's queue sized by
:mod:`.admission`, and the guard of :mod:`.guard` in front of it all.

``python app.py``, ``python -m geosurge.app`` and ``geosurge app`` all end in :func:`main`.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from .admission import return_freed_memory
from .settings import AppSettings, parse_settings


def sweep(folder: Path, max_age_s: float, now: float | None = None, keep: frozenset[str] = frozenset()) -> int:
    """Delete every file under ``folder`` last written more than ``max_age_s`` ago, but those in ``keep``
    (absolute paths), then empty folders; returns how many files went."""
    now = time.time() if now is None else now
    gone = 0
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            if name == ".pid" and Path(root) == Path(folder):
                continue  # the server's own marker (see remove_orphans)
            p = Path(root) / name
            if str(p) in keep:
                continue
            try:
                if now - p.lstat().st_mtime > max_age_s:
                    p.unlink()
                    gone += 1
            except OSError:
                pass
        for name in dirs:
            try:
                (Path(root) / name).rmdir()  # only succeeds when empty
            except OSError:
                pass
    return gone


class Sweeper(threading.Thread):
    """Runs :func:`sweep` every ``every_s`` seconds until stopped. ``keep`` names the files to leave (the
    example photos Gradio copied into the folder at start: the examples must keep working)."""

    def __init__(self, folder: Path, max_age_s: float, every_s: float):
        super().__init__(name="geosurge-sweeper", daemon=True)
        self.folder, self.max_age_s, self.every_s = folder, max_age_s, every_s
        self.keep = lambda: frozenset()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            sweep(self.folder, self.max_age_s, keep=self.keep())


def kept_by_gradio(demo) -> frozenset[str]:
    """The files Gradio marks to keep in its cache (the examples' copies)."""
    return frozenset(str(Path(p).resolve()) for b in demo.blocks.values() for p in getattr(b, "keep_in_cache", ()))


PREFIX = "geosurge-app-"


def remove_orphans(tmp: Path) -> list[Path]:
    """Remove the private folders of earlier servers that are gone without cleaning up (killed with SIGKILL,
    crashed): a restart must not keep what the last run was given. (Until then a folder is 0700: readable
    by this user only.)"""
    gone = []
    for d in tmp.glob(PREFIX + "*"):
        try:
            if not d.is_dir() or d.stat().st_uid != os.getuid():
                continue
            pid = int((d / ".pid").read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
        except PermissionError:
            pass
    return gone


def make_private_folder(tmp: Path) -> Path:
    """A new ``<tmp>/geosurge-app-XXXX`` (0700) holding this server's ``.pid`` and ``files/`` (0700, Gradio's
    folder: the only part the file route serves, see guard.py); returns ``files/``."""
    root = Path(tempfile.mkdtemp(prefix=PREFIX, dir=tmp))  # 0700
    (root / ".pid").write_text(str(os.getpid()))
    files = root / "files"
    files.mkdir(mode=0o700)
    return files


def serve(settings: AppSettings) -> int:
    """Load the model, build the demo and serve it until interrupted; the private folder goes at exit."""
    # uvicorn re-raises SIGTERM after its graceful shutdown; the default action would end the process
    # before the private folder is removed below, so it becomes an ordinary exit.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    os.umask(0o077)  # whatever this server writes (Gradio's copies too) is for this user only
    return_freed_memory()  # before anything large is allocated (see admission.py)
    remove_orphans(Path(tempfile.gettempdir()))
    files = make_private_folder(Path(tempfile.gettempdir()))
    os.environ["GRADIO_TEMP_DIR"] = str(files)  # read by Gradio when it is imported (below)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sweeper = Sweeper(files, settings.delete_after_s, max(10, min(300, settings.delete_after_s // 4)))
    try:
        return _run(settings, files, sweeper)
    finally:
        sweeper.stopped.set()
        shutil.rmtree(files.parent, ignore_errors=True)


def _run(settings: AppSettings, workdir: Path, sweeper: Sweeper) -> int:
    from .ui import PAGE_CSS, Locator, build_demo
    from ..predictor import Predictor

    try:
        predictor = Predictor.from_pretrained(settings.checkpoint, device=settings.device, segmenter_path=settings.segmenter_path)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"geosurge app: cannot load the checkpoint {settings.checkpoint}: {e}", file=sys.stderr)
        return 2
    locator = Locator(predictor, settings)
    if (note := locator.fusion_note) is not None:
        print(f"geosurge app: {note}; serving the RGB-only model", file=sys.stderr)
    print(f"geosurge app: warmed up in {locator.warm_up():.1f} s", file=sys.stderr)
    import gradio as gr
    import uvicorn
    from fastapi import FastAPI

    from .geomap import asset_app, mount_path
    from .uploads import UploadStore

    store = UploadStore(settings.max_upload_bytes, settings.delete_after_s, public=list(settings.examples))
    demo = build_demo(locator, store)
    demo.queue(default_concurrency_limit=1, max_size=settings.queue_size)
    app = FastAPI()
    app.mount(mount_path(), asset_app())  # the map's static assets, before Gradio's catch-all "/"
    app = gr.mount_gradio_app(app, demo, path="/", max_file_size=settings.max_upload_bytes,
                              allowed_paths=settings.allowed_paths, show_error=True, run_history=False, css=PAGE_CSS,
                              server_name=settings.host, server_port=settings.port)
    sweeper.keep = lambda: kept_by_gradio(demo)
    sweeper.start()
    print(f"geosurge app: serving http://{settings.host}:{settings.port}/; uploads and generated files in "
          f"{workdir}, deleted after {settings.delete_after_s} s and at shutdown", file=sys.stderr, flush=True)
    uvicorn.run(guarded(app, workdir, store, settings), host=settings.host, port=settings.port,
                log_level="warning", timeout_graceful_shutdown=5)
    return 0


def guarded(app, workdir: Path, store, settings: AppSettings):
    """The Gradio app behind the guard (guard.py): uploads in memory, the private folder under an alias."""
    from .guard import Guard

    return Guard(app, workdir, store, settings.max_upload_bytes, queue_size=settings.queue_size)


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    return serve(parse_settings(argv))
