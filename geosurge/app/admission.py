"""How much work the demo lets in at once, so that a burst of visitors keeps the server under 1.5 GB.

Three bounds, each sized from what ``benchmarks/load.py`` and ``benchmarks/hostile_inputs.py`` measured on the
2-core machine (the server idles at ~0.9 GB with the embedded feature stack loaded, ~0.75 with Lite0 alone):

* **Upload bodies held in memory** (:data:`BODY_BUDGET`): an upload is read into memory, never to disk; the
  bytes of the bodies being received or scrubbed at once are bounded, the rest wait their turn.
* **Decodes** (:data:`DECODE_BUDGET`): every decode first estimates what it will take from the image's header
  (:func:`decode_cost`: 4 bytes a pixel for RGB, up to 9 for palette images, at the size JPEG draft mode
  decodes to) and waits until the decodes already running leave room for it. One decode larger than the
  whole budget runs alone. A 40 MP PNG takes 0.16-0.35 GB to decode, so each runs alone. With the stack, the
  bursts of benchmarks/load.py (8 PNGs mixed with bombs and photos; 16 PNGs) peaked at 1.71 / 1.73 GB with
  a budget of 320 MB, 1.42 / 1.61 at 160 MB and 1.46 / 1.63 at 64 MB (one run each): below 160 MB the decodes
  no longer set the peak, and the burst of 16 stays above 1.5 GB.
* **Inference**: one answer at a time (the model uses both cores), behind Gradio's queue of at most
  :data:`QUEUE_SIZE` waiting requests; a visitor in the queue sees its position and the expected wait, one
  turned away because it is full sees that the demo is busy.

A wait for a budget longer than :data:`WAIT_S` ends with :class:`Busy` (HTTP 503 and a clear sentence),
never a hang. The budgets only hold memory down if freed memory goes back to the system:
:func:`return_freed_memory` sees to that.
"""
from __future__ import annotations

import asyncio
import io
import threading
import time
from contextlib import contextmanager

MB = 2**20
#: Bytes of upload bodies held in memory at once (a 20 MB upload takes ~2x its size while it is parsed).
BODY_BUDGET = 64 * MB
#: Estimated bytes of image decodes running at once (see decode_cost and the module's docstring).
DECODE_BUDGET = 160 * MB
#: Requests waiting in Gradio's queue; more are refused with "busy".
QUEUE_SIZE = 64
#: Longest wait for a budget before the request is refused as busy.
WAIT_S = 60.0
#: Peak bytes a decode takes per pixel of the size it decodes at, by the image's mode (measured with
#: ``load_image`` on 40 MP PNGs: RGB 158 MB, RGBA 311, palette 349, 16-bit gray 235, gray 40).
BYTES_PER_PIXEL = {"1": 1, "L": 1, "LA": 3, "P": 9, "PA": 9, "RGB": 4, "RGBA": 8, "RGBa": 8, "CMYK": 8,
                   "YCbCr": 4, "I;16": 6, "I;16B": 6, "I;16L": 6, "I": 8, "F": 8}
BUSY = "The demo is busy with other visitors' photos right now. Please try again in a minute."


class Busy(RuntimeError):
    """A request waited longer than :data:`WAIT_S` for its turn; the message is for the visitor."""

    def __init__(self, text: str = BUSY):
        super().__init__(text)


class Budget:
    """An amount (bytes) shared by concurrent work: ``with budget.hold(n):`` waits until ``n`` fits beside
    what is held, or raises :class:`Busy` after ``timeout`` seconds. An amount larger than the whole
    budget is admitted alone, so nothing waits forever. Thread-safe; :meth:`hold_async` for the event loop."""

    def __init__(self, total: int):
        self.total, self.used, self.peak = total, 0, 0
        self._cond = threading.Condition()

    def _fits(self, amount: int) -> bool:
        return self.used == 0 or self.used + amount <= self.total

    def _take(self, amount: int) -> None:
        self.used += amount
        self.peak = max(self.peak, self.used)

    def release(self, amount: int) -> None:
        with self._cond:
            self.used -= amount
            self._cond.notify_all()

    @contextmanager
    def hold(self, amount: int, timeout: float = WAIT_S):
        with self._cond:
            if not self._cond.wait_for(lambda: self._fits(amount), timeout):
                raise Busy()
            self._take(amount)
        try:
            yield
        finally:
            self.release(amount)

    async def acquire_async(self, amount: int, timeout: float = WAIT_S) -> None:
        """Take ``amount`` without blocking the event loop (polls every 20 ms); :class:`Busy` on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if self._fits(amount):
                    self._take(amount)
                    return
            if time.monotonic() > deadline:
                raise Busy()
            await asyncio.sleep(0.02)


def decode_cost(data: bytes) -> int:
    """Peak bytes ``load_image(data)`` is expected to take, from the header alone (no pixels decoded):
    JPEGs at the size draft mode decodes them to. Unreadable data costs nothing (it is refused first)."""
    from PIL import Image

    from ..data.images import DRAFT_SIZE

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format == "JPEG":
                img.draft("RGB", (DRAFT_SIZE, DRAFT_SIZE))  # only sets the scale: no pixels decoded
            w, h = img.size
            per_pixel = BYTES_PER_PIXEL.get(img.mode, 9)
    except Exception:  # anything Pillow cannot open: load_image refuses it without decoding pixels
        return 0
    return int(w) * int(h) * per_pixel


def return_freed_memory() -> bool:
    """Make glibc give freed image buffers back to the system: allocations above 1 MB from their own mappings
    (the threshold stays fixed instead of growing to 32 MB after the first large free) and 2 malloc arenas
    instead of 8 per core. Without it, decodes run in worker threads left their memory in per-thread arenas:
    ``benchmarks/load.py`` measured 16 concurrent 40 MP PNGs at 3.32 GB of server memory with the decode budget
    holding, 1.39 GB with this (MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=1048576, which this sets from inside
    the process). False where there is no glibc (nothing to do)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_mmap_threshold, m_arena_max = -3, -8
    return bool(mallopt(m_mmap_threshold, 1 * MB)) and bool(mallopt(m_arena_max, 2))


#: The budgets this process's server shares between all its requests.
BODIES = Budget(BODY_BUDGET)
DECODES = Budget(DECODE_BUDGET)
