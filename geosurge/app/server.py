"""Serving the demo: a private folder for everything uploaded or generated, swept by age and removed at
shutdown, and a guard in front of Gradio that holds every transport to the upload size limit.

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

from .settings import AppSettings, parse_settings


class _TooLarge(Exception):
    pass


class UploadGuard:
    """ASGI middleware in front of the Gradio app.

    * Every POST but ``/upload`` (Gradio limits that one itself) has its body capped at what the largest
      allowed photo takes as base64 plus an envelope: an image sent as a ``data:`` URL inside the queue
      request is refused with 413 before it is parsed, instead of being decoded whatever its size.
    * A file given by an http(s) URL in a request is refused (400): Gradio would download it, with no size
      limit, and the demo's browser page never sends one.
    * A successful ``/upload`` is handed to ``on_upload`` (the app's :class:`UploadStore`, which reads the
      original and its EXIF GPS into memory and replaces the file by a copy without metadata) before the
      client learns the file's path: the original is never on disk where a visitor can fetch it.
    * When an ``/upload`` is refused (a name Gradio rejects, a file over the limit), the temporary file
      Gradio's multipart parser left at the top of the upload folder is removed; legitimate uploads live
      in sub-folders. Only done while no other upload is in flight, so a concurrent one is never touched
      (the age sweep removes any stray file later).
    """

    def __init__(self, app, upload_dir: Path, max_bytes: int, on_upload=None):
        self.app, self.upload_dir, self.on_upload = app, Path(upload_dir), on_upload
        self.max_body = max_bytes * 4 // 3 + 64 * 1024
        self._uploads = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        if scope["path"].rstrip("/").endswith("/upload"):
            return await self._upload(scope, receive, send)
        try:
            body = await self._read_capped(scope, receive)
        except _TooLarge:
            return await self._refuse(send)
        if _names_remote_file(body):
            return await self._refuse(send, 400, "Files are accepted as uploads only, not by URL.")
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # http.disconnect, when the client goes away
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read_capped(self, scope, receive) -> bytes:
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise _TooLarge
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                raise _TooLarge
            if not msg.get("more_body"):
                break
        return b"".join(chunks)

    async def _refuse(self, send, status: int = 413, text: str | None = None) -> None:
        text = (text or f"Request too large: photos are limited to {self.max_body * 3 // 4 // 2**20} MB, whatever the transport.").encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())]})
        await send({"type": "http.response.body", "body": text})

    async def _upload(self, scope, receive, send):
        held = []  # the response, sent once the uploaded files are scrubbed (a small JSON list of paths)

        async def hold(msg):
            held.append(msg)

        self._uploads += 1
        try:
            await self.app(scope, receive, hold)
        finally:
            self._uploads -= 1
        status = next((m["status"] for m in held if m["type"] == "http.response.start"), 500)
        if status >= 400 and self._uploads == 0:
            remove_strays(self.upload_dir)
        if status == 200 and self.on_upload is not None:
            await self._scrub(b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body"))
        for msg in held:
            await send(msg)

    async def _scrub(self, body: bytes) -> None:
        import json

        import anyio

        try:
            paths = [p for p in json.loads(body) if isinstance(p, str)]
        except ValueError:
            return
        for p in paths:
            if Path(p).is_file() and Path(p).resolve().is_relative_to(self.upload_dir.resolve()):
                await anyio.to_thread.run_sync(self.on_upload, p)


def _names_remote_file(body: bytes) -> bool:
    """Whether a JSON request body holds a file object whose path or url is an http(s) URL."""
    if b"http" not in body:
        return False
    import json

    try:
        doc = json.loads(body)
    except ValueError:
        return False
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            if any(isinstance(x.get(k), str) and x[k].lower().startswith(("http://", "https://")) for k in ("path",)):
                return True
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return False


def remove_strays(upload_dir: Path) -> None:
    """Delete the files at the top of the upload folder (Gradio's temporary upload files) and empty folders."""
    for p in list(upload_dir.iterdir()) if upload_dir.is_dir() else []:
        try:
            if p.name == ".pid":
                continue
            if p.is_file() or p.is_symlink():
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        except OSError:
            pass


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
    """Remove the private folders of earlier servers that are gone without cleaning up (killed, crashed):
    a restart must not keep what the last run was given."""
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


def serve(settings: AppSettings) -> int:
    """Load the model, build the demo and serve it until interrupted; the private folder goes at exit."""
    # uvicorn re-raises SIGTERM after its graceful shutdown; the default action would end the process
    # before the private folder is removed below, so it becomes an ordinary exit.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    remove_orphans(Path(tempfile.gettempdir()))
    workdir = Path(tempfile.mkdtemp(prefix=PREFIX))
    (workdir / ".pid").write_text(str(os.getpid()))
    os.environ["GRADIO_TEMP_DIR"] = str(workdir)  # read by Gradio when it is imported (below)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sweeper = Sweeper(workdir, settings.delete_after_s, max(10, min(300, settings.delete_after_s // 4)))
    try:
        return _run(settings, workdir, sweeper)
    finally:
        sweeper.stopped.set()
        shutil.rmtree(workdir, ignore_errors=True)


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
    demo.queue(default_concurrency_limit=1, max_size=64)
    app = FastAPI()
    app.mount(mount_path(), asset_app())  # the map's static assets, before Gradio's catch-all "/"
    app = gr.mount_gradio_app(app, demo, path="/", max_file_size=settings.max_upload_bytes,
                              allowed_paths=settings.allowed_paths, show_error=True, run_history=False, css=PAGE_CSS,
                              server_name=settings.host, server_port=settings.port)
    sweeper.keep = lambda: kept_by_gradio(demo)
    sweeper.start()
    print(f"geosurge app: serving http://{settings.host}:{settings.port}/; uploads and generated files in "
          f"{workdir}, deleted after {settings.delete_after_s} s and at shutdown", file=sys.stderr, flush=True)
    uvicorn.run(UploadGuard(app, workdir, settings.max_upload_bytes, on_upload=store.from_file), host=settings.host, port=settings.port,
                log_level="warning", timeout_graceful_shutdown=5)
    return 0


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    return serve(parse_settings(argv))
