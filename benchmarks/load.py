"""The demo under load: N concurrent visitors sending real photos, then mixed bursts of 40 MP PNGs and bombs.

    python benchmarks/load.py [--duration 20] [--visitors 1 4 16 64] [--root DIR ...]

Starts ``python app.py`` (embedded checkpoint, fusion on; torch with 1 thread unless ``OMP_NUM_THREADS`` says
otherwise) and, for each N in ``--visitors``, runs N visitors for ``--duration`` seconds (default 20; the issue's
figure is 60): each uploads a photo (the 20 examples shipped in the package, then the IM2GPS3k dev photos in
``../shared`` when present), asks /locate about it over the queue, and starts again when answered, as a browser
does. Then the bursts: 8 at once of 40 MP PNGs of the four worst modes to decode (RGB, RGBA, palette, 16-bit)
with header bombs and photos mixed in, and 16 40 MP PNGs at once. Every request goes to 127.0.0.1 only, is
bounded in time (``--timeout``) and in count (the duration, or the burst's size).

Per row: answers/s, p50/p95/p99 latency (upload to answer), errors (anything but an answer or, for bombs, the
expected message; a visitor told the demo is busy counts as "busy", not as an error), and the server's peak
resident memory, the whole process tree (sampled every 20 ms with psutil). Targets (issue 22): zero errors, peak
<= 1.5 GB at every N, p50 at N=1 unchanged. ``--root`` adds other checkouts (e.g. the code before issue 22) run
one after the other in the same invocation, so the figures sit side by side.

The machine is shared: these figures were taken with other jobs on the same 2 cores; compare rows of one run,
not runs.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geosurge.app.settings import EXAMPLES  # noqa: E402
from tests.app_testing import AppServer, locate_fn, png_header_bomb, upload_and_locate  # noqa: E402

TARGET_GB = 1.5


class TreePeak(threading.Thread):
    """Peak resident memory of a process and all its children, sampled every 20 ms."""

    def __init__(self, pid: int):
        import psutil

        super().__init__(daemon=True)
        self.proc, self.peak, self.done = psutil.Process(pid), 0, threading.Event()

    def sample(self) -> int:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def run(self):
        while not self.done.wait(0.02):
            self.peak = max(self.peak, self.sample())

    def reset(self) -> int:
        peak, self.peak = self.peak, self.sample()
        return max(peak, self.peak)


def photos(limit: int) -> list[tuple[str, bytes]]:
    shared = Path(os.environ.get("GEOSURGE_SHARED", ROOT.parent / "shared")) / "data" / "im2gps3k-dev" / "images"
    files = sorted(EXAMPLES.glob("*.jpg"))
    if shared.is_dir():
        files += sorted(shared.glob("*.jpg"))[: max(0, limit - len(files))]
    return [(f.name, f.read_bytes()) for f in files[:limit]]


def _png(img) -> bytes:
    b = io.BytesIO()
    img.save(b, "PNG")
    return b.getvalue()


def heavy_pngs() -> list[tuple[str, bytes]]:
    """40 MP PNGs (7,700 x 5,190) in the modes that cost most to decode, each well under 20 MB."""
    from PIL import Image

    w, h = 7700, 5190
    grad = np.add.outer(np.arange(h, dtype=np.uint32) % 251, np.arange(w, dtype=np.uint32) % 241).astype(np.uint8)
    rgb = Image.fromarray(np.stack([grad, grad[::-1], grad[:, ::-1]], -1))
    return [("rgb40.png", _png(rgb)), ("rgba40.png", _png(rgb.convert("RGBA"))),
            ("palette40.png", _png(rgb.convert("P"))),
            ("gray16_40.png", _png(Image.fromarray(grad.astype(np.uint16) * 257)))]


def outcome(status: int, out) -> str:
    if status == 503 or (isinstance(out, str) and "busy" in out.lower()):
        return "busy"
    if status != 200 or not isinstance(out, list):
        return "error"
    summary = out[1] or ""
    return "answer" if summary.startswith("### ") else "message" if "cannot be used" in summary else "error"


def visitors(url: str, fn: int, n: int, duration: float, pool: list, timeout: float) -> dict:
    stop_at = time.monotonic() + duration
    lat, kinds, lock = [], {"answer": 0, "message": 0, "busy": 0, "error": 0}, threading.Lock()
    errors: list[str] = []

    def visitor(i: int):
        k = i
        while time.monotonic() < stop_at:
            name, data = pool[k % len(pool)]
            k += n
            t = time.perf_counter()
            try:
                status, out = upload_and_locate(url, data, name, fn=fn, timeout=timeout)
            except Exception as e:  # a timeout or a refused connection is an error of the server
                status, out = 0, f"{type(e).__name__}: {e}"
            kind = outcome(status, out)
            with lock:
                kinds[kind] += 1
                if kind == "answer":
                    lat.append(time.perf_counter() - t)
                elif kind == "error" and len(errors) < 3:
                    errors.append(f"{name}: {status} {str(out)[:200]}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as ex:
        list(ex.map(visitor, range(n)))
    return {"wall": time.perf_counter() - t0, "lat": lat, "kinds": kinds, "errors": errors}


def burst(url: str, fn: int, items: list, timeout: float) -> dict:
    lat, kinds, errors = [], {"answer": 0, "message": 0, "busy": 0, "error": 0}, []

    def one(item):
        name, data, expect = item
        t = time.perf_counter()
        try:
            status, out = upload_and_locate(url, data, name, fn=fn, timeout=timeout)
        except Exception as e:
            status, out = 0, f"{type(e).__name__}: {e}"
        return name, expect, outcome(status, out), time.perf_counter() - t, out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(items)) as ex:
        for name, expect, kind, dt, out in ex.map(one, items):
            bad = kind == "error" or (kind in ("answer", "message") and kind != expect)
            kinds["error" if bad else kind] += 1
            lat.append(dt)
            if bad and len(errors) < 3:
                errors.append(f"{name}: expected {expect}, got {kind}: {str(out)[:200]}")
    return {"wall": time.perf_counter() - t0, "lat": lat, "kinds": kinds, "errors": errors}


def row(label: str, r: dict, peak: int) -> str:
    lat = np.array(r["lat"]) if r["lat"] else np.array([np.nan])
    k = r["kinds"]
    done = k["answer"] + k["message"]
    p50, p95, p99 = (np.percentile(lat, q) for q in (50, 95, 99))
    mark = "" if peak <= TARGET_GB * 2**30 else " **over**"
    return (f"| {label} | {done} | {done / r['wall']:.2f} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {k['error']} | "
            f"{k['busy']} | {peak / 2**30:.2f}{mark} |")


def run_server(root: Path, args, pool, mixes) -> list[str]:
    server = AppServer(env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}, root=root)
    rows = []
    try:
        url, fn = server.url, locate_fn(server.url)
        watch = TreePeak(server.proc.pid)
        idle = watch.sample()
        watch.start()
        upload_and_locate(url, pool[0][1], pool[0][0], fn=fn)  # first request paths warmed up
        rows.append(f"| idle (after warm-up) | | | | | | | | {idle / 2**30:.2f} |")
        watch.reset()
        for n in args.visitors:
            r = visitors(url, fn, n, args.duration, pool, args.timeout)
            rows.append(row(f"{n} visitor{'s' if n > 1 else ''}, {args.duration:.0f} s", r, watch.reset()))
            rows.extend(f"|   error: {e} |" for e in r["errors"])
        for label, items in mixes:
            r = burst(url, fn, items, args.timeout)
            rows.append(row(label, r, watch.reset()))
            rows.extend(f"|   error: {e} |" for e in r["errors"])
        watch.done.set()
        alive = server.alive
    finally:
        server.stop()
    rows.append(f"| server {'still up' if alive else 'DIED'} at the end | | | | | | | | |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per visitor count (default 20; issue 22 asks 60)")
    ap.add_argument("--visitors", type=int, nargs="*", default=[1, 4, 16, 64], help="visitor counts (default 1 4 16 64; none: bursts only)")
    ap.add_argument("--photos", type=int, default=200, help="distinct real photos to cycle through (default 200)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds one request may take before it counts as an error")
    ap.add_argument("--root", type=Path, nargs="*", default=[ROOT],
                    help="checkouts whose app.py to run, one after the other (default: this one)")
    ap.add_argument("--no-bursts", action="store_true", help="skip the 40 MP PNG and bomb bursts")
    args = ap.parse_args()
    pool = photos(args.photos)
    mixes = []
    if not args.no_bursts:
        heavy = heavy_pngs()
        bombs = [("bomb_30000x30000.png", png_header_bomb(30000, 30000)), ("bomb_100000x20000.png", png_header_bomb(100000, 20000))]
        mixed = ([(n, d, "answer") for n, d in heavy] * 2 + [(n, d, "message") for n, d in bombs] * 2
                 + [(n, d, "answer") for n, d in pool[:4]])
        mixes = [("burst: 8 x 40 MP PNG + 4 bombs + 4 photos", mixed),
                 ("burst: 16 x 40 MP PNG (4 modes)", [(n, d, "answer") for n, d in heavy] * 4)]
    print(f"{len(pool)} photos; {os.cpu_count()} CPUs seen, load average {os.getloadavg()[0]:.1f} at start "
          f"(a shared machine: other jobs ran beside this); server OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}\n")
    for root in args.root:
        print(f"### {root} ({_commit(root)})\n")
        print("| load | answered | answers/s | p50 s | p95 s | p99 s | errors | busy | peak server tree GB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for line in run_server(root, args, pool, mixes):
            print(line, flush=True)
        print()
    print(f"targets: zero errors, peak <= {TARGET_GB} GB at every load, p50 at 1 visitor unchanged")
    return 0


def _commit(root: Path) -> str:
    import subprocess

    r = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return r.stdout.strip()[:80] or "not a git checkout"


if __name__ == "__main__":
    sys.exit(main())
