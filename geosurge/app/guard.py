"""The ASGI middleware in front of the Gradio app: what a request may carry in, and what a response may give out.

* **Uploads** (``POST …/upload``) are parsed here, in memory, instead of by Gradio (whose parser writes the
  original, GPS and all, to a ``tmpXXXXXXXX`` file while it arrives): each file goes to
  :meth:`UploadStore.add`, which writes only its scrubbed copy, in a folder of 128 random bits. The bodies held
  at once and the decodes are bounded (:mod:`.admission`); a visitor who would wait too long gets 503 and a
  sentence saying the demo is busy.
* **Every other POST** has its body capped at what the largest allowed photo takes as base64 plus an envelope
  (a ``data:`` URL inside the queue request is refused with 413 before it is parsed), and a file named by an
  http(s) URL, in ``path`` or ``url``, is refused (400): Gradio would download it, whatever its size.
* **The private folder's path never leaves the server**: responses name it by an alias (:data:`ALIAS`), which
  requests map back. The file route serves from it only ``<alias>/<folder>/<file>`` without dot names: the
  scrubbed uploads and the generated images, nothing at its top, no staging file.
* A queue that is full answers with a sentence, not Gradio's counts.
"""
from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

from starlette.formparsers import MultiPartParser

from .admission import BODIES, BUSY, Budget, Busy

#: What responses call the private folder; requests naming it are mapped back to the real path.
ALIAS = "/geosurge-private"
QUEUE_FULL = "The demo is busy: {n} photos are already waiting. Please try again in a minute."


class _TooLarge(Exception):
    pass


class Guard:
    def __init__(self, app, files_dir: Path, store, max_bytes: int, bodies: Budget = BODIES, queue_size: int = 0):
        self.app, self.store, self.bodies, self.queue_size = app, store, bodies, queue_size
        self.files = Path(os.path.realpath(files_dir))
        self.real, self.alias = str(self.files).encode(), ALIAS.encode()
        # what responses say instead of the real paths: files/ first, then the folder holding it (.pid)
        self._out = [(self.real, self.alias), (str(self.files.parent).encode(), (ALIAS + "/..").encode())]
        self.max_file = max_bytes
        self.max_body = max_bytes * 4 // 3 + 64 * 1024

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/upload"):
            return await self._upload(scope, receive, send)
        if "/file=" in scope["path"]:
            scope = self._file_scope(scope)
            if scope is None:
                return await _respond(send, 404, "Not found.")
        send = self._rewriting(send, scope["path"])
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:
            body = await self._read_capped(scope, receive)
        except _TooLarge:
            return await _respond(send, 413, self._too_large())
        if _names_remote_file(body):
            return await _respond(send, 400, "Files are accepted as uploads only, not by URL.")
        body = body.replace(self.alias, self.real)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # http.disconnect, when the client goes away
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    # ---------------------------------------------------------------- requests
    def _too_large(self) -> str:
        return f"Request too large: photos are limited to {self.max_file // 2**20} MB, whatever the transport."

    async def _read_capped(self, scope, receive, cap: int | None = None) -> bytes:
        cap = self.max_body if cap is None else cap
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise _TooLarge
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > cap:
                raise _TooLarge
            if not msg.get("more_body"):
                break
        return b"".join(chunks)

    def _file_scope(self, scope) -> dict | None:
        """The file route's request with the alias mapped back; None for anything in the private folder but
        ``<folder>/<file>`` without dot names (Gradio itself refuses what lies outside its folders)."""
        head, _, target = scope["path"].partition("/file=")
        if target.startswith(ALIAS + "/") or target == ALIAS:
            target = str(self.files) + target[len(ALIAS):]
        real, root = Path(os.path.realpath(target)), self.files.parent  # root: the folder holding .pid and files/
        if real == root or root in real.parents:
            inside = real.relative_to(self.files).parts if self.files in real.parents else ()
            if len(inside) != 2 or any(p.startswith(".") for p in inside):
                return None
        path = f"{head}/file={target}"
        return {**scope, "path": path, "raw_path": urllib.parse.quote(path).encode()}

    async def _upload(self, scope, receive, send):
        headers = dict(scope.get("headers") or [])
        if not headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data"):
            return await _respond(send, 400, "Uploads must be multipart/form-data.")
        length = headers.get(b"content-length", b"")
        expected = int(length) if length.isdigit() else self.max_body
        if expected > self.max_body:
            return await _respond(send, 413, self._too_large())
        held = 2 * expected  # the body, then its parsed parts
        try:
            await self.bodies.acquire_async(held)
        except Busy as e:
            return await _respond(send, 503, str(e))
        try:
            status, answer = await self._store_files(scope, receive)
        finally:
            self.bodies.release(held)
        if status != 200:
            return await _respond(send, status, answer)
        await _respond(send, 200, answer, "application/json")

    async def _store_files(self, scope, receive) -> tuple[int, str]:
        import anyio
        from starlette.datastructures import Headers, UploadFile
        from starlette.formparsers import MultiPartException

        from .uploads import UploadRefused, safe_name

        try:
            body = await self._read_capped(scope, receive)
        except _TooLarge:
            return 413, self._too_large()

        async def stream():
            yield body

        try:
            form = await _InMemoryParser(Headers(scope=scope), stream()).parse()
        except MultiPartException as e:
            return 400, e.message
        paths = []
        try:
            for f in form.getlist("files"):
                if not isinstance(f, UploadFile):
                    continue
                data = await f.read()
                if len(data) > self.max_file:
                    return 413, f"File size exceeds the maximum allowed size of {self.max_file // 2**20} MB."
                try:
                    safe_name(f.filename or "photo")
                except UploadRefused as e:
                    return 400, f"Invalid file name: {e}"
                path = await anyio.to_thread.run_sync(self.store.add, data, f.filename or "photo", self.files)
                paths.append(ALIAS + str(path)[len(str(self.files)):])
        except Busy as e:
            return 503, str(e)
        finally:
            await form.close()
        return 200, json.dumps(paths)

    # ---------------------------------------------------------------- responses
    def _hide(self, body: bytes) -> bytes:
        for real, alias in self._out:
            body = body.replace(real, alias)
        return body

    def _rewriting(self, send, path: str):
        """``send`` with the private folder's path replaced by the alias in text responses (JSON, HTML,
        event streams), and a full queue's counts replaced by a sentence."""
        state: dict = {}
        queue_join = path.rstrip("/").endswith("/queue/join")

        async def wrapped(msg):
            if msg["type"] == "http.response.start":
                headers = dict(msg.get("headers") or [])
                state["text"] = headers.get(b"content-type", b"").startswith((b"application/json", b"text/"))
                state["buffer"] = state["text"] and b"content-length" in headers
                state["start"], state["chunks"] = msg, []
                if not state["buffer"]:
                    await send(msg)
                return
            if msg["type"] != "http.response.body" or not state.get("text"):
                return await send(msg)
            body = self._hide(msg.get("body", b""))
            if not state["buffer"]:
                return await send({**msg, "body": body})
            state["chunks"].append(body)
            if msg.get("more_body"):
                return
            body = b"".join(state["chunks"])
            start = state["start"]
            if queue_join and start["status"] == 503 and b"Queue is full" in body:
                body = json.dumps({"detail": QUEUE_FULL.format(n=self.queue_size or "many")}).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            await send({**start, "headers": headers + [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        return wrapped


class _InMemoryParser(MultiPartParser):
    """Starlette's multipart parser with its spooled files never rolled over to disk (the body is capped
    before it gets here): the original bytes stay in memory."""

    spool_max_size = 0  # SpooledTemporaryFile(max_size=0) never rolls over

    def __init__(self, headers, stream):
        super().__init__(headers, stream, max_files=16, max_fields=16)


async def _respond(send, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _names_remote_file(body: bytes) -> bool:
    """Whether a JSON request body holds a file object whose ``path`` is an http(s) URL, or whose ``url`` is
    one that is not this server's own file route (the browser sends that one back with every upload)."""
    if b"http" not in body:
        return False
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            for key in ("path", "url"):
                v = x.get(key)
                if isinstance(v, str) and v.strip().lower().startswith(("http://", "https://")):
                    if key == "path" or "/file=" not in v:
                        return True
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return False


__all__ = ["ALIAS", "BUSY", "Guard"]
