"""The frozen part of a backbone exported to ONNX and run by ``onnxruntime`` at inference, where it wins.

torch stays the reference: the export is made from the loaded backbone's own weights with
``torch.onnx.export``, checked against torch on export (and in ``tests/test_onnx_backbone.py``, <= 1e-4),
and cached in the user's cache folder under a hash of those weights, so later loads skip the export.
Only families measured faster in onnxruntime on the CPU are exported (``python benchmarks/inference.py
--backbones``: EfficientNet-Lite0 2-4x faster per photo on 2 cores); others, GPUs, and machines without
``onnxruntime`` (an optional dependency) keep torch.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...files import atomic_write
from ._registry import Backbone

#: backbone families whose frozen part runs faster in onnxruntime than in torch on the CPU (measured)
ONNX_FAMILIES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "efficientnet-lite-stack")
#: choose the backbone runtime: "auto" (onnxruntime where it wins), "torch" or "onnx" (whenever it can)
ENV_VAR = "GEOSURGE_BACKBONE_RUNTIME"
OPSET = 17
TOLERANCE = 1e-4


def cache_dir() -> Path:
    """``$GEOSURGE_CACHE/onnx``, else ``$XDG_CACHE_HOME/geosurge/onnx`` (``~/.cache/geosurge/onnx``)."""
    root = os.environ.get("GEOSURGE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "geosurge"
    return Path(root) / "onnx"


class OnnxFrozen:
    """Callable pixels (B, 3, S, S) -> the frozen part's output, through an onnxruntime session."""

    def __init__(self, model: bytes | str | Path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()  # the thread policy's choice
        opts.inter_op_num_threads = 1
        # onnxruntime's memory arena keeps a run's buffers for the next. Without it, in a process where glibc gives
        # every allocation above 1 MB its own mmap (the demo's server: admission.return_freed_memory), each answer
        # page-faulted ~8,000 times and the embedded stack's frozen pass took 92-94 ms instead of 76-77 (one crop,
        # 1 thread, interleaved in one process). Kept for one crop at a time (the demo's answer with a centre-crop
        # checkpoint: ~55 MB for the stack's three sessions); a run of more crops (a batch, or one photo's five
        # views) hands what it added back when it ends (_shrinking_run, which needs the arena), else a batch of
        # 16 left ~700 MB resident. The arena's first block is sized by the first run and kept: one crop in the
        # demo (its warm-up answer), a whole batch in `geosurge predict` (~100 MB a session; no page faults per batch).
        opts.enable_cpu_mem_arena = True
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(pixels.detach().float().numpy())
        return torch.from_numpy(self.session.run(None, {"pixels": x}, _shrinking_run() if x.shape[0] > 1 else None)[0])


@functools.lru_cache(maxsize=1)
def _shrinking_run():
    """onnxruntime run options that return what the run added to the CPU arena when it ends."""
    import onnxruntime as ort

    opts = ort.RunOptions()
    opts.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return opts


def wanted(backbone_name: str, device: torch.device, runtime: str | None = None) -> bool:
    """Whether the backbone should run in onnxruntime: ``runtime`` (or ``$GEOSURGE_BACKBONE_RUNTIME``)
    "torch" never, "onnx" whenever on the CPU, "auto" (default) for the families measured faster."""
    runtime = runtime or os.environ.get(ENV_VAR) or "auto"
    if runtime not in ("auto", "torch", "onnx"):
        raise ValueError(f"backbone runtime must be auto, torch or onnx, not {runtime!r}")
    if runtime == "torch" or device.type != "cpu":
        return False
    return runtime == "onnx" or backbone_name in ONNX_FAMILIES


def attach_onnx(backbone: Backbone, cache: Path | None = None, threads: int | None = None) -> bool:
    """Export (or load from the cache) ``backbone``'s frozen part and attach it as its ``frozen_runtime``.
    Returns False, leaving torch in place, when onnxruntime or the exporter's ``onnx`` package is
    missing, or the export fails or disagrees with torch (with a warning saying why). A backbone that wraps
    others (``runtime_parts``) gets each part's export; True only when every part has one."""
    if backbone.runtime_parts() != [backbone]:
        return all([attach_onnx(part, cache, threads) for part in backbone.runtime_parts()])
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    path = (cache or cache_dir()) / f"{type(backbone).__name__}-{frozen_hash(backbone)}.onnx"
    if not path.is_file() and importlib.util.find_spec("onnx") is None:  # torch.onnx.export needs it
        return False
    try:
        if path.is_file():
            runner = OnnxFrozen(path, threads)
        else:
            model = export_frozen(backbone)
            runner = OnnxFrozen(model, threads)
            check_against_torch(backbone, runner)
            _store(path, model)
    except Exception as e:  # noqa: BLE001 - any failure leaves the reference in place
        warnings.warn(f"the backbone runs in torch: its onnxruntime export failed ({type(e).__name__}: {e})", stacklevel=2)
        return False
    backbone.frozen_runtime = runner
    return True


class _Frozen(nn.Module):
    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_frozen(pixels)


def export_frozen(backbone: Backbone) -> bytes:
    """The frozen part as an ONNX model (dynamic batch), from the backbone's weights as loaded."""
    s = backbone.image_size
    buf = io.BytesIO()
    was_training = backbone.training
    backbone.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's constant-folding notes
            torch.onnx.export(_Frozen(backbone), (torch.zeros(2, 3, s, s),), buf, input_names=["pixels"], output_names=["hidden"],
                              dynamic_axes={"pixels": {0: "batch"}, "hidden": {0: "batch"}}, opset_version=OPSET, dynamo=False)
    finally:
        backbone.train(was_training)
    return buf.getvalue()


def check_against_torch(backbone: Backbone, runner: OnnxFrozen, batch: int = 2) -> float:
    """Largest absolute difference between onnxruntime and torch on random pixels; raises above the tolerance."""
    s = backbone.image_size
    x = torch.randn(batch, 3, s, s, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = backbone.forward_frozen(x)
    diff = float((runner(x) - ref).abs().max())
    if not diff <= TOLERANCE:
        raise ValueError(f"onnxruntime differs from torch by {diff:.2e} (> {TOLERANCE})")
    return diff


def frozen_hash(backbone: Backbone) -> str:
    """16 hex digits naming the frozen part: its class, input size, split and every frozen tensor."""
    trainable = {id(t) for m in backbone.trainable_modules(backbone.trainable_blocks) for t in [*m.parameters(), *m.buffers()]}
    h = hashlib.sha256(f"{type(backbone).__name__}/{backbone.image_size}/{backbone.trainable_blocks}/{OPSET}/{torch.__version__}".encode())
    for name, t in backbone.state_dict(keep_vars=True).items():
        if id(t) not in trainable:
            h.update(name.encode())
            h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _store(path: Path, model: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, model)
    except OSError:  # a read-only home: export again next time
        pass
