"""`geosurge segment` over 2 gloo processes (torchrun): a deterministic split, SIGKILL mid-run, resume, same labels."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from geosurge.cli import main as cli
from geosurge.data.label_chunks import ChunkStore

from .mp16_synth import write_mp16

ROOT = Path(__file__).resolve().parents[1]


def _launch(args: list[str], port: int, script_mode: bool = False) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    target = ["--no-python", "geosurge"] if script_mode else ["-m", "geosurge"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port), *target, *args]
    # a session of its own: the kill below takes the launcher and both ranks at once, like a lost node
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every rank (torchrun starts the ranks in sessions of their own)."""
    import psutil

    launcher = psutil.Process(proc.pid)
    everyone = [launcher, *launcher.children(recursive=True)]
    for p in everyone:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)
    psutil.wait_procs(everyone[1:], timeout=30)


def test_distributed_segmentation_survives_a_kill(shared_dir, tmp_path):
    shards, _, coords = write_mp16(tmp_path, 6, 8, size=(320, 240))
    deeplab = str(shared_dir / "models/deeplabv3-mobilenetv2-ade20k/model.tflite")
    common = ["segment", "--msgpack", str(shards), "--segmenter-path", deeplab, 
              "--chunk-size", "2", "--label-side", "56", "--no-progress"]

    # reference: one process, uninterrupted
    assert cli([*common, "--out", str(tmp_path / "ref")]) == 0
    ref = ChunkStore(tmp_path / "ref")
    assert len(ref) == 48 and len(ref.chunk_names()) == 24

    out = tmp_path / "dist"
    # the ranks segment 2 photos per forward: the stored labels must still match the one-by-one reference
    proc = _launch([*common, "--batch-size", "2", "--out", str(out)], 29631)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "chunks").is_dir() and len(list((out / "chunks").glob("*.lbl"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.communicate()[0][-3000:]
    _kill_all(proc)
    done_before = len(list((out / "chunks").glob("*.lbl")))
    assert 3 <= done_before < 24

    # the same command finishes the job (here through torchrun's script mode), redoing no finished chunk
    proc = _launch([*common, "--batch-size", "2", "--out", str(out)], 29632, script_mode=True)
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-3000:]
    # the ranks print to one pipe at once, so their lines may run together: match, do not split lines
    already = [int(n) for n in re.findall(r"\((\d+) chunks already done\)", log)]
    assert len(already) == 2 and sum(already) == done_before, log[-3000:]
    assert "photos/s in all" in log and "bytes per photo" in log

    got = ChunkStore(out)
    assert got.chunk_names() == ref.chunk_names()
    assert set(got.index()) == set(ref.index()) == set(coords)
    for rid in coords:
        assert got.read_bytes(rid) == ref.read_bytes(rid), rid
    # each shard was segmented by one rank only: shard k by rank k % 2
    assert "rank 0" in log and "rank 1" in log
