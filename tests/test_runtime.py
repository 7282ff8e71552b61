"""The thread policy: one torch thread by default, a user's explicit choice kept, applied by the entry points."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import torch
from geosurge.runtime import configure_threads
{before}
got = configure_threads()
assert got == torch.get_num_threads(), (got, torch.get_num_threads())
assert configure_threads() == got  # idempotent
print(got)
"""


def _threads(before: str = "", **env: str) -> int:
    """torch threads after ``configure_threads`` in a fresh interpreter (torch's thread state is per process)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GEOSURGE_THREADS")}
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], env={**clean, **env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: every setting is one thread")
def test_default_is_one_thread_and_explicit_choices_win():
    assert _threads() == 1
    assert _threads(OMP_NUM_THREADS="2") == 2
    assert _threads(GEOSURGE_THREADS="2") == 2
    assert _threads("torch.set_num_threads(3)") == 3


def test_bad_setting_is_explained(monkeypatch):
    from geosurge.runtime import configure_threads

    monkeypatch.setenv("GEOSURGE_THREADS", "many")
    with pytest.raises(ValueError, match="GEOSURGE_THREADS must be a whole number"):
        configure_threads()
    with pytest.raises(ValueError, match=">= 1"):
        configure_threads(0)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: every setting is one thread")
def test_entry_points_apply_the_policy():
    """Every way in runs it: Predictor.from_pretrained (scripts, the app) and the CLI, for all commands."""
    import inspect

    from geosurge.cli import main

    load = "from geosurge import Predictor; Predictor.from_pretrained(segmenter=None, backbone_runtime='torch')"
    probe = f"import torch; {load}; print(torch.get_num_threads())"
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GEOSURGE_THREADS")}
    out = subprocess.run([sys.executable, "-c", probe], env={**clean, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.split()[-1] == "1", out.stderr[-2000:]
    assert "configure_threads()" in inspect.getsource(main)
