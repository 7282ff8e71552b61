"""The frozen backbone in onnxruntime: same outputs as torch (<= 1e-4), cached by weights, torch as the fallback."""
import sys
from pathlib import Path

import pytest
import torch

from geosurge.model.backbones import create_backbone
from geosurge.model.backbones import onnx_runtime as ortb
from geosurge.model.config import BackboneConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "geosurge/app/examples"


@pytest.fixture
def lite0():
    return create_backbone(BackboneConfig("efficientnet-lite0", trainable_blocks=1)).eval()


def test_onnx_matches_torch_and_is_cached(lite0, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    assert ortb.attach_onnx(lite0, cache=tmp_path)
    [cached] = tmp_path.glob("*.onnx")
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = lite0.forward_frozen(x)
        got = lite0.infer_frozen(x)  # through onnxruntime
    assert lite0.frozen_runtime is not None and got.shape == ref.shape
    assert float((got - ref).abs().max()) <= 1e-4
    with torch.enable_grad():  # gradients wanted (training): torch, whatever is attached
        assert torch.equal(lite0.infer_frozen(x[:1]), lite0.forward_frozen(x[:1]))
    # a second load reads the cached file instead of exporting again
    monkeypatch.setattr(ortb, "export_frozen", lambda bb: pytest.fail("exported again despite the cache"))
    other = create_backbone(BackboneConfig("efficientnet-lite0", trainable_blocks=1)).eval()
    assert ortb.attach_onnx(other, cache=tmp_path) and list(tmp_path.glob("*.onnx")) == [cached]
    with torch.no_grad():
        assert float((other.infer_frozen(x) - ref).abs().max()) <= 1e-4


def test_one_crop_keeps_the_arena_and_a_batch_runs_with_shrinkage(lite0, tmp_path, monkeypatch):
    """Runs of one crop (the demo's) keep onnxruntime's buffers; larger batches run with arena shrinkage, and
    both paths give the same features."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    assert ortb.attach_onnx(lite0, cache=tmp_path)
    runner = lite0.frozen_runtime
    assert runner.session.get_session_options().enable_cpu_mem_arena
    seen = []
    run = runner.session.run
    monkeypatch.setattr(runner.session, "run", lambda out, feed, opts=None: seen.append(opts) or run(out, feed, opts), raising=False)
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        batch = lite0.infer_frozen(x)
        singles = torch.cat([lite0.infer_frozen(x[i : i + 1]) for i in range(3)])
    assert seen[0].get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    assert seen[1:] == [None, None, None]
    assert float((batch - singles).abs().max()) <= 1e-4


def test_a_stack_runs_each_member_in_onnxruntime(tmp_path):
    """The stack as a whole does not export (ONNX has no antialiased resize): each member does, and the stack's
    inference output matches its torch forward."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    stack = create_backbone(BackboneConfig("efficientnet-lite-stack")).eval()
    assert stack.runtime_parts() == list(stack.members)
    assert ortb.wanted("efficientnet-lite-stack", torch.device("cpu"))
    assert ortb.attach_onnx(stack, cache=tmp_path)
    assert stack.frozen_runtime is None and all(m.frozen_runtime is not None for m in stack.members)
    assert len(list(tmp_path.glob("*.onnx"))) == 3
    x = torch.randn(2, 3, 260, 260, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, got = stack.forward_frozen(x), stack.infer_frozen(x)
    assert got.shape == ref.shape == (2, sum(stack.frozen_channels), stack.grid, stack.grid)
    assert float((got - ref).abs().max()) <= 1e-4


def test_the_cache_key_follows_the_frozen_weights(lite0):
    key = ortb.frozen_hash(lite0)
    top = lite0.trainable_modules(1)[0]
    with torch.no_grad():
        next(top.parameters()).add_(1.0)  # a trainable weight: the frozen part is unchanged
    assert ortb.frozen_hash(lite0) == key
    with torch.no_grad():
        lite0.net._conv_stem.weight.add_(1.0)
    assert ortb.frozen_hash(lite0) != key


def test_torch_is_the_fallback_without_onnxruntime(lite0, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    assert not ortb.attach_onnx(lite0, cache=tmp_path)
    assert lite0.frozen_runtime is None and not list(tmp_path.iterdir())


def test_torch_is_the_fallback_without_the_exporter(lite0, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    assert not ortb.attach_onnx(lite0, cache=tmp_path)  # quietly: no warning, nothing cached
    assert lite0.frozen_runtime is None and not list(tmp_path.iterdir())


def test_runtime_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert ortb.wanted("efficientnet-lite0", cpu) and not ortb.wanted("clip", cpu)
    assert ortb.wanted("clip", cpu, "onnx") and not ortb.wanted("efficientnet-lite0", cpu, "torch")
    assert not ortb.wanted("efficientnet-lite0", cuda)
    with pytest.raises(ValueError, match="auto, torch or onnx"):
        ortb.wanted("efficientnet-lite0", cpu, "tensorrt")


def test_predictor_answers_the_same_in_both_runtimes(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from geosurge import Predictor

    monkeypatch.setenv("GEOSURGE_CACHE", str(tmp_path))
    photos = sorted(EXAMPLES.glob("*.jpg"))[:3]
    fast = Predictor.from_pretrained(backbone_runtime="onnx")
    ref = Predictor.from_pretrained(backbone_runtime="torch")
    assert (fast.backbone_runtime, ref.backbone_runtime) == ("onnxruntime", "torch")
    for a, b in zip(fast.predict(photos), ref.predict(photos)):
        assert (a.lat, a.lon) == (b.lat, b.lon)
        assert a.within_km == pytest.approx(b.within_km, abs=1e-4)
