"""Start ``python app.py`` in a subprocess on a free port (for the app tests and benchmarks/app.py)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    def __init__(self, *args: str, env: dict | None = None, timeout: float = 240):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"geosurge-app-{self.port}.log"
        self._f = self.log.open("w")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(self.port), *args],
                                     cwd=ROOT, stdout=self._f, stderr=subprocess.STDOUT,
                                     env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})})
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"app.py did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._f.close()

    def peak_rss_bytes(self) -> int:
        """The server process's peak resident memory so far (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmHWM not found (Linux /proc needed)")


# ---------------------------------------------------------------------------- raw transport (tests, benchmarks)
def upload_raw(url: str, data: bytes, name: str) -> tuple[int, str | None]:
    """POST a file to Gradio's /upload; (HTTP status, server path or None)."""
    import httpx

    r = httpx.post(url + "gradio_api/upload", files={"files": (name, data)}, timeout=120)
    return r.status_code, (r.json()[0] if r.status_code == 200 else None)


def locate_raw(url: str, file_data: dict, fusion: bool = True, timeout: float = 180) -> tuple[int, list | str]:
    """Call the demo's /locate event through the queue with a hand-made FileData payload (e.g. a ``data:``
    URL, which gradio_client never sends); (HTTP status of the join, output list or error text)."""
    import json
    import secrets

    import httpx

    config = httpx.get(url + "config", timeout=30).json()
    fn = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "locate")
    fn = config["dependencies"][fn].get("id", fn)
    session = secrets.token_hex(6)
    body = {"data": [file_data, fusion], "fn_index": fn, "session_hash": session, "event_data": None, "trigger_id": None}
    r = httpx.post(url + "gradio_api/queue/join", json=body, timeout=timeout)
    if r.status_code != 200:
        return r.status_code, r.text
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}, timeout=timeout) as s:
        for line in s.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "process_completed":
                out = msg.get("output", {})
                return 200, out.get("data") if msg.get("success") else str(out.get("error"))
    return 200, "no answer"
