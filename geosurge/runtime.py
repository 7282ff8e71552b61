"""How many CPU threads torch computes with: one policy, applied by every entry point (the CLI, ``Predictor``,
the app), chosen by measurement (``python benchmarks/inference.py``; figures in the README).

On the 2-core machines this project runs on, shared with other jobs, torch's default (one intra-op thread
per core, OpenMP threads that spin while they wait) made one photo take 1.6-2.0 s from the main thread
against 190-280 ms with one thread, with identical answers: the threads fight each other and every other
process for the same two cores. One thread is never far from the best setting measured, idle or loaded, so
it is the default. A user's explicit choice always wins: ``$OMP_NUM_THREADS``, ``$MKL_NUM_THREADS``,
``torch.set_num_threads(n)`` called before, or ``$GEOSURGE_THREADS``.
"""
from __future__ import annotations

import os

#: torch intra-op threads when nobody asked for a number (see the module docstring for why one)
DEFAULT_THREADS = 1
ENV_VAR = "GEOSURGE_THREADS"
_USER_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads by the policy and return the number in use.

    ``threads`` (or ``$GEOSURGE_THREADS``) sets it outright. Otherwise a number the user chose
    (``$OMP_NUM_THREADS``, ``$MKL_NUM_THREADS``, or ``torch.set_num_threads`` to anything but torch's
    default) is kept, and torch's default is replaced by :data:`DEFAULT_THREADS`. Cheap and idempotent:
    every entry point calls it.
    """
    import torch

    if threads is None and os.environ.get(ENV_VAR):
        threads = _parse(os.environ[ENV_VAR])
    if threads is None:
        if any(os.environ.get(v) for v in _USER_ENV) or torch.get_num_threads() not in _torch_defaults():
            return torch.get_num_threads()
        threads = DEFAULT_THREADS
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def _torch_defaults() -> set[int]:
    """What torch may have picked by itself: one thread per usable CPU, or per physical core. A value
    outside this set was chosen by someone (or by this policy, on an earlier call)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    out = {usable, os.cpu_count() or usable}
    try:
        import psutil

        out.add(psutil.cpu_count(logical=False) or usable)
    except ImportError:
        pass
    return out


def _parse(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"${ENV_VAR} must be a whole number of threads, got {text!r}") from None
    if n < 1:
        raise ValueError(f"${ENV_VAR} must be >= 1, got {n}")
    return n
