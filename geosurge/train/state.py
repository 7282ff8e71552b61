"""Resumable training state: model, optimizer, counters and RNGs in safetensors + JSON (no pickle)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..files import atomic_write

STATE = "train_state.safetensors"
META = "train_state.json"


@dataclass
class Counters:
    """Where a run stands: what a resumed run continues from, saved with the weights."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # micro-batches done in the current epoch
    step: int = 0  # optimizer steps in all
    best: float | None = None  # best validation score so far
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs since the last gain (early stopping)
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: train loss and validation scores
    scaler: dict[str, Any] | None = None  # float16 loss scaler's state


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith("opt."):
            _, pid, k = name.split(".", 2)
            state.setdefault(int(pid), {})[k] = t
    for name, v in meta["scalars"].items():
        pid, k = name.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_state(work_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, counters: Counters) -> None:
    """Everything needed to continue exactly: trainable weights, optimizer moments, counters, RNG states."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_t, opt_meta = _flatten_optimizer(opt)
    tensors.update(opt_t)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {"counters": asdict(counters), "optimizer": opt_meta, "numpy_rng": _np_state()}
    work_dir.mkdir(parents=True, exist_ok=True)
    # One atomic write holds everything (the JSON part in the safetensors header), so a kill at any
    # moment leaves the previous state or the new one, never a mix; the .json copy is for people to read.
    tensors["step"] = torch.tensor([counters.step])
    text = json.dumps(meta)
    atomic_write(work_dir / STATE, lambda p: save_file(tensors, p, metadata={"meta": text}))
    atomic_write(work_dir / META, lambda p: Path(p).write_text(json.dumps(meta, indent=1)))


def load_state(work_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> Counters | None:
    """Restore a saved state into ``model`` and ``opt``; returns the counters (None when nothing saved)."""
    if not (work_dir / STATE).is_file():
        return None
    tensors = load_file(str(work_dir / STATE))
    with safe_open(str(work_dir / STATE), "pt") as f:
        embedded = (f.metadata() or {}).get("meta")
    if embedded is not None:
        meta = json.loads(embedded)
    elif (work_dir / META).is_file():  # states saved before the JSON moved into the safetensors header
        meta = json.loads((work_dir / META).read_text())
    else:
        return None
    if int(tensors["step"][0]) != meta["counters"]["step"]:
        raise RuntimeError(f"{work_dir}: training state files disagree (interrupted while saving); delete them to restart")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    name, keys, pos, has_gauss, cached = meta["numpy_rng"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    return Counters(**meta["counters"])


def _np_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]
