"""Process setup of a training run: one process or many (``torchrun``), its device, work directory and log."""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..data.records import SkipReport

LOG = "log.jsonl"


@dataclass
class Processes:
    """This process's place among the training processes (one, or several under torchrun)."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_distributed(device: str | None) -> tuple[Processes, torch.device]:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    processes = Processes(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        dev = torch.device(f"cuda:{processes.local}") if world > 1 or device in (None, "cuda") else torch.device(device)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device or "cpu")
    return processes, dev


class Logger:
    """JSON lines in the work directory, written by the main process only."""

    def __init__(self, work_dir: Path, enabled: bool):
        self.path, self.enabled = work_dir / LOG, enabled

    def __call__(self, **record: Any) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


@dataclass
class Run:
    """What every step of one training run shares: processes, device, work directory, log and skip report."""

    processes: Processes
    device: torch.device
    work_dir: Path
    log: Logger
    say: Callable[..., None]  # print on the main process, nothing elsewhere
    skipped: SkipReport
    t0: float


def start_run(device: str | None, work_dir: Path, resume: bool) -> Run:
    """Join the process group; a fresh (non-resumed) run starts from an empty log and no saved state."""
    t0 = time.time()
    processes, dev = init_distributed(device)
    work_dir.mkdir(parents=True, exist_ok=True)
    if not resume and processes.main:
        for f in (work_dir / LOG, work_dir / "train_state.json", work_dir / "train_state.safetensors"):
            f.unlink(missing_ok=True)
    processes.barrier()
    say = print if processes.main else _silent
    return Run(processes, dev, work_dir, Logger(work_dir, processes.main), say, SkipReport(), t0)


def _silent(*args: Any, **kwargs: Any) -> None:
    """The non-main processes' ``say``: one line per run, not one per process."""


def command_line() -> str:
    """The command as typed (``geosurge train --config ...``), for the record in the checkpoint."""
    prog = Path(sys.argv[0]).name if sys.argv else "python"
    prog = "geosurge" if prog in ("geosurge", "__main__.py", "-m") else prog
    return " ".join([prog, *sys.argv[1:]])
