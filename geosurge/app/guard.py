"""The ASGI middleware in front of the Gradio app: what a request may carry in, and what a response may give out.

* **Uploads** (``POST …/upload``) are parsed here, in memory, instead of by Gradio (whose parser writes the
  original, GPS and all, to a ``tmpXXXXXXXX`` file while it arrives): each file goes to
  :meth:`UploadStore.add`, which writes only its scrubbed copy, in a folder of 128 random bits. The bodies held
  at once and the decodes are bounded (:mod:`.admission`); a visitor who would wait too long gets 503 and a
  sentence saying the demo is busy.
* **Every other POST** has its body capped at what the largest allowed photo takes as base64 plus an envelope
  (a ``data:`` URL inside the queue request is refused with 413 before it is parsed), and a file named by an
  http(s) URL, in ``path`` or ``url``, is refused (400): Gradio would download it, whatever its size. A photo
  sent as a ``data:`` URL is stored like an upload before Gradio sees the request (a queued request then holds
  a path, not megabytes of base64); large bodies count against the same body budget as uploads.
* **The private folder's path never leaves the server**: responses name it by an alias (:data:`ALIAS`), which
  requests map back. The file route serves from it only ``<alias>/<folder>/<file>`` without dot names: the
  scrubbed uploads and the generated images, nothing at its top, no staging file.
* A queue that is full answers with a sentence, not Gradio's counts.
* An upload's progress stream (``GET …/upload_progress``) ends at once: Gradio tracks progress only for uploads
  its own parser reads, and for ours answered 404 after 3 s.
"""
from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

from starlette.formparsers import MultiPartParser

from .admission import BODIES, Budget, Busy

#: What responses call the private folder; requests naming it are mapped back to the real path.
ALIAS = "/geosurge-private"
QUEUE_FULL = "The demo is busy: {n} photos are already waiting. Please try again in a minute."


class _TooLarge(Exception):
    pass


class _Refused(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


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
        if scope["method"] == "GET" and scope["path"].rstrip("/").endswith("/upload_progress"):
            # Gradio tracks progress only for the uploads its own parser reads; for ours it would wait 3 s and
            # answer 404 (a failed request in the visitor's browser whenever an upload takes longer). The
            # progress stream is only a progress bar: end it at once, the upload's own response carries the file.
            return await _respond(send, 200, 'data: {"msg": "done"}\n\n', "text/event-stream")
        if "/file=" in scope["path"]:
            scope = self._file_scope(scope)
            if scope is None:
                return await _respond(send, 404, "Not found.")
        send = self._rewriting(send, scope["path"], scope["method"] == "HEAD")
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        # large bodies (a data: URL, most likely) count against the body budget; one without a length (chunked:
        # no browser or gradio_client sends that) as the largest it may grow to
        held = (2 * int(length) if int(length) > 2**20 else 0) if length.isdigit() else 2 * self.max_body
        try:
            await self.bodies.acquire_async(held)
        except Busy as e:
            return await _respond(send, 503, str(e))
        try:
            body = await self._read_capped(scope, receive)
            if _names_remote_file(body):
                return await _respond(send, 400, "Files are accepted as uploads only, not by URL.")
            body = await self._store_data_urls(body)
            if not self._names_only_uploads(body):
                return await _respond(send, 400, "Files are accepted as uploads to this server only.")
        except _TooLarge:
            return await _respond(send, 413, self._too_large())
        except _Refused as e:
            return await _respond(send, e.status, e.text)
        finally:
            self.bodies.release(held)
        body = body.replace(self.alias + b"/", self.real + b"/")
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

    async def _store_data_urls(self, body: bytes) -> bytes:
        """A photo sent as a ``data:`` URL inside a request becomes an upload like any other (read, scrubbed,
        stored) before Gradio sees the request, so a queued request holds a path, not megabytes of base64."""
        if b'"data:' not in body:
            return body
        import anyio

        from .uploads import UploadRefused, decode_data_url

        try:
            doc = json.loads(body)
        except ValueError:
            return body
        files = [x for x in _dicts(doc) if isinstance(x.get("url"), str) and x["url"].startswith("data:")]
        for x in files:
            try:
                data = decode_data_url(x.pop("url"), self.max_file)
            except UploadRefused as e:
                raise _Refused(413 if "limit" in str(e) else 400, f"This photo cannot be used: {e}.") from None
            try:
                path = await anyio.to_thread.run_sync(self.store.add, data, "upload", self.files)
            except Busy as e:
                raise _Refused(503, str(e)) from None
            x.update(path=str(path), orig_name=path.name, meta={"_type": "gradio.FileData"})
        return json.dumps(doc).encode()

    def _names_only_uploads(self, body: bytes) -> bool:
        """Whether every file a JSON request names (a ``path`` key) is one the file route would serve from the
        private folder: an upload's scrubbed copy, a generated image, an example's copy. Anything else (a
        path elsewhere on the server, the folder's ``.pid``) would reach the handler, which reads it."""
        if b'"path"' not in body:
            return True
        try:
            doc = json.loads(body.replace(self.alias + b"/", self.real + b"/"))
        except ValueError:
            return True  # not JSON: Gradio refuses it
        return all(self._servable(x["path"]) for x in _dicts(doc) if isinstance(x.get("path"), str))

    def _servable(self, path: str) -> bool:
        real = Path(os.path.realpath(path))
        if self.files not in real.parents:
            return False
        inside = real.relative_to(self.files).parts
        return len(inside) == 2 and not any(p.startswith(".") for p in inside)

    def _file_scope(self, scope) -> dict | None:
        """The file route's request with the alias mapped back; None for anything in the private folder but
        ``<folder>/<file>`` without dot names (Gradio itself refuses what lies outside its folders)."""
        head, _, target = scope["path"].partition("/file=")
        if target.startswith(ALIAS + "/") or target == ALIAS:
            target = str(self.files) + target[len(ALIAS):]  # (an upload's name never holds a "/")
        real, root = Path(os.path.realpath(target)), self.files.parent  # root: the folder holding .pid and files/
        if (real == root or root in real.parents) and not self._servable(target):
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

    def _rewriting(self, send, path: str, head: bool = False):
        """``send`` with the private folder's path replaced by the alias in text responses (JSON, HTML,
        event streams), and a full queue's counts replaced by a sentence."""
        state: dict = {}
        queue_join = path.rstrip("/").endswith("/queue/join")

        async def wrapped(msg):
            if msg["type"] == "http.response.start":
                headers = dict(msg.get("headers") or [])
                state["text"] = not head and headers.get(b"content-type", b"").startswith((b"application/json", b"text/"))
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
    for x in _dicts(doc):
        for key in ("path", "url"):
            v = x.get(key)
            if isinstance(v, str) and v.strip().lower().startswith(("http://", "https://")):
                if key == "path" or "/file=" not in v:
                    return True
    return False


def _dicts(doc):
    """Every dict inside a JSON document."""
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            yield x
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)


__all__ = ["ALIAS", "Guard"]
