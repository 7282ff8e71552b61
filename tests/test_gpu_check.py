"""benchmarks/gpu_check.py stays runnable: its code paths with tiny models on the CPU; a clear exit without CUDA."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_check  # noqa: E402


def test_gpu_check_dry_run_on_cpu(capsys):
    assert gpu_check.main(["--device", "cpu", "--dry"]) == 0
    out = capsys.readouterr().out
    for row in ("training step, bf16", "training step, fp16 + GradScaler", "Predictor, batch 1, with OneFormer",
                "Predictor, batch 4, label maps given", "OneFormer segmentation, 2 photo(s) per forward",
                "OneFormer label maps, batch 2 vs 1", "app handler"):
        assert f"| {row}" in out, out[-2000:]
    assert "all checks passed on cpu" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_check_without_cuda_says_so(capsys):
    assert gpu_check.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_gpu_check_fails_loudly(monkeypatch, capsys):
    def broken(*a, **k):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_check, "app_timing", broken)
    monkeypatch.setattr(gpu_check, "predictor_timing", broken)
    assert gpu_check.main(["--device", "cpu", "--dry", "--no-segmenter"]) == 1
    err = capsys.readouterr().err
    assert "gpu_check FAILED" in err and "illegal memory access" in err
