"""End-to-end latency and memory of the demo: `python benchmarks/app.py [--requests 40]`.

Starts `python app.py` on the embedded checkpoint, sends distinct test photos one after another through
`gradio_client` (the API the UI uses: upload, segmentation, both models, map, overlay, reference), and
prints p50 / p95 latency and the server's peak resident memory. The first request is reported apart
(the app warms up before it listens, so it is only the client's own first call). The server's own time per request (the "answered in"
line of the answer) is printed beside it, so the split between the model and the HTTP round trips shows.

These machines change speed by tens of percent from one minute to the next, so the benchmark also
times the DeepLab segmenter alone on the same photos right after (the server stopped) and prints the
end-to-end p50 as a multiple of it: that ratio is what to compare between runs and machines.

The client is made with ``ssl_verify=False``: the app is plain HTTP on localhost, where TLS settings do
nothing, but gradio_client otherwise builds a TLS context (loading the CA bundle) for each of the ~5 HTTP
calls of a request, ~100 ms per request on this machine that a browser keeping its connection never pays.
``--client-tls-context`` measures that default instead.

``gradio_client`` is a heavy Python client, and here it shares the server's 2 cores. Every other request
therefore goes through a light one instead, in turns on distinct photos: the HTTP requests a browser
makes (upload, queue join, the event stream, then the overlay and the nearest photo's image), over one
kept-alive connection. Both are printed.
"""
from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.app_testing import AppServer, locate_fn, upload_and_locate  # noqa: E402


def segmenter_alone_ms(photos: list[Path]) -> float | None:
    """p50 of the embedded checkpoint's segmenter (its model file, at its input size) on ``photos`` in
    this process (None without its model file)."""
    from PIL import Image

    from geosurge.model.segmenters import SegmenterUnavailable, create_segmenter

    from geosurge.model.embedded import EMBEDDED_CHECKPOINT
    from geosurge.model.checkpoint_dir import CheckpointDir
    from geosurge.model.variants import FUSION

    try:
        seg = create_segmenter(CheckpointDir.read(EMBEDDED_CHECKPOINT).variant(FUSION).segmenter_config())  # what the app runs
    except SegmenterUnavailable:
        return None
    images = [Image.open(p).convert("RGB") for p in photos]
    seg(images[0])
    times = []
    for im in images:
        t = time.perf_counter()
        seg(im)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def browser_like_locate(http, url: str, photo: Path, fusion: bool, fn: int) -> list:
    """One answer over raw HTTP as the page asks for it (upload, queue, then the images it shows), on the
    kept-alive client ``http``; returns the event's output list."""
    status, out = upload_and_locate(url, photo.read_bytes(), photo.name, fusion, fn, http=http)
    if status != 200 or not isinstance(out, list):
        raise RuntimeError(f"{photo.name}: no answer (HTTP {status}): {str(out)[:300]}")
    images = [o["url"] for o in out if isinstance(o, dict) and o.get("url")]  # the overlay
    images += [url + m for o in out if isinstance(o, str) for m in re.findall(r'src="(gradio_api/file=[^"]+)"', o)]
    for image in images:  # what the page loads next
        http.get(image).raise_for_status()
    return out


def summary_ms(summary: str) -> dict[str, float]:
    """The handler's own time and its stages, from the answer's "answered in" line."""
    assert summary.startswith("###"), summary
    return {"handler": float(re.search(r"answered in (\d+) ms", summary).group(1)),
            **{k: float(v) for k, v in re.findall(r"(\w[\w ]*?) (\d+) ms", summary.split("answered in")[1].split("(", 1)[1])}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=40, help="requests per client (each photo is sent once)")
    ap.add_argument("--fusion", choices=["on", "off"], default="on")
    ap.add_argument("--client-tls-context", action="store_true", help="keep gradio_client's per-call TLS context")
    ap.add_argument("--test-csv", default=str(ROOT.parent / "shared/data/im2gps3k-dev/test.csv"))
    args = ap.parse_args()
    import httpx
    from gradio_client import Client, handle_file

    test = Path(args.test_csv)
    rows = list(csv.DictReader(test.open()))
    photos = [test.parent / "images" / r["image"] for r in rows[: 2 * args.requests + 1]]
    fusion = args.fusion == "on"
    server = AppServer()
    try:
        client = Client(server.url, verbose=False, ssl_verify=args.client_tls_context)
        http = httpx.Client(timeout=120)
        fn = locate_fn(server.url)
        clients = {"gradio_client": lambda p: client.predict(handle_file(str(p)), fusion, api_name="/locate"),
                   "browser-like": lambda p: browser_like_locate(http, server.url, p, fusion, fn)}
        t = time.perf_counter()
        clients["gradio_client"](photos[0])
        first = time.perf_counter() - t
        lat = {k: [] for k in clients}
        server_ms = []
        for i, p in enumerate(photos[1:]):  # the two clients in turns, each photo once (no cached segmentation)
            name = list(clients)[i % 2]
            t = time.perf_counter()
            _, summary, *_ = clients[name](p)
            lat[name].append(time.perf_counter() - t)
            server_ms.append(summary_ms(summary))
        http.close()
        peak = server.peak_rss_bytes()
    finally:
        server.stop()
    seg_ms = segmenter_alone_ms(photos[1:])
    print(f"requests: {len(server_ms)} distinct photos (+1 warm-up: {first * 1000:.0f} ms), fusion {args.fusion}, sequential, "
          "the two clients in turns")
    for name, ms in lat.items():
        q = statistics.quantiles(ms, n=20)
        print(f"end to end, {name:>13}: p50 {statistics.median(ms) * 1000:.0f} ms   p95 {q[18] * 1000:.0f} ms   "
              f"max {max(ms) * 1000:.0f} ms   ({len(ms)} requests; target p50 <= 250 ms)")
    stages = {k: statistics.median(s[k] for s in server_ms) for k in server_ms[0]}
    print(f"in the handler  p50 {stages.pop('handler'):.0f} ms (target <= 200): " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
    if seg_ms is not None:
        print(f"DeepLab segmentation alone (as the checkpoint sets it), same photos, same machine just after: p50 {seg_ms:.0f} ms -> "
              f"end-to-end p50 (gradio_client) = {statistics.median(lat['gradio_client']) * 1000 / seg_ms:.2f} x segmentation alone")
    print(f"server peak memory  {peak / 2**30:.2f} GiB (VmHWM; target <= 2 GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
