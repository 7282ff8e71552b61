import pytest
import torch
import torch.nn.functional as F

from geosurge.model.config import FusionConfig
from geosurge.model.fusion import LatentCrossAttention, RGBHead, SemanticFusion, SemanticTokenizer


def naive_tokens(tok: SemanticTokenizer, labels: torch.Tensor) -> torch.Tensor:
    """What ``tok(labels)`` computes, through an explicit one-hot tensor (memory hungry: the reference)."""
    idx = tok.patch_indices(labels) - tok.offsets  # class per position
    onehot = F.one_hot(idx, tok.num_classes).float().flatten(2)  # (B, N, s*s*C)
    semantic = onehot @ tok.proj.weight + tok.bias  # weight rows (s*s*C, dim) match the flattening above
    return torch.cat([tok.cls.expand(labels.shape[0], -1, -1), semantic], dim=1) + tok.pos


@pytest.mark.parametrize("grid,label_samples,side", [(3, 4, 12), (2, 5, 10), (4, 2, 32)])
def test_tokenizer_equals_naive_one_hot_projection(grid, label_samples, side):
    torch.manual_seed(0)
    tok = SemanticTokenizer(grid, label_samples, num_classes=151, dim=16)
    labels = torch.randint(0, 151, (2, side, side))
    torch.testing.assert_close(tok(labels), naive_tokens(tok, labels), rtol=1e-5, atol=1e-6)
    assert tok(labels).shape == (2, 1 + grid * grid, 16)


def test_tokenizer_rejects_bad_labels():
    tok = SemanticTokenizer(2, 2, num_classes=151, dim=8)
    with pytest.raises(ValueError, match="labels must be in"):
        tok(torch.full((1, 4, 4), 151))


def test_paper_size_clip_l14_336_shapes():
    """Full-size paper configuration: 24x24 patches of 14 px, 1024-wide tokens, 3 blocks, q 128, latent 64."""
    cfg = FusionConfig()
    fusion = SemanticFusion(backbone_dim=1024, grid=24, patch_size=14, embed_dim=768, cfg=cfg)
    assert len(fusion.blocks) == 3
    attn = fusion.blocks[0].attn
    assert attn.q_down.out_features == 128 and attn.kv_down.out_features == 64
    assert attn.k_up.out_features == attn.v_up.out_features == 1024 and attn.h == 16
    assert fusion.tokenizer.proj.num_embeddings == 14 * 14 * 151  # one-hot 14x14 patch -> 128
    tokens = torch.randn(2, 1 + 24 * 24, 1024)
    labels = torch.randint(0, 151, (2, 336, 336))
    with torch.no_grad():
        out = fusion(tokens, labels)
    assert out.shape == (2, 768) and torch.isfinite(out).all()


def test_fusion_depends_on_both_inputs():
    torch.manual_seed(0)
    fusion = SemanticFusion(64, 4, 8, 32, FusionConfig(num_heads=4, width=None))
    tokens = torch.randn(1, 17, 64)
    labels = torch.randint(0, 151, (1, 32, 32))
    base = fusion(tokens, labels)
    assert not torch.allclose(base, fusion(tokens, torch.randint(0, 151, (1, 32, 32))))
    assert not torch.allclose(base, fusion(torch.randn(1, 17, 64), labels))


def test_fusion_width_projection_and_gradients():
    fusion = SemanticFusion(1280, 7, 32, 768, FusionConfig(width=256, num_heads=8, label_samples=8))
    assert fusion.rgb_proj.in_features == 1280 and fusion.rgb_proj.out_features == 256
    out = fusion(torch.randn(2, 50, 1280), torch.randint(0, 151, (2, 224, 224)))
    out.sum().backward()
    assert all(p.grad is not None for p in fusion.parameters())


def test_latent_attention_shapes():
    attn = LatentCrossAttention(query_in=128, kv_in=256, width=256, num_heads=8, query_dim=128, latent_dim=64)
    stream = torch.randn(3, 5, 128)
    assert attn(stream, torch.randn(3, 11, 256), stream).shape == (3, 5, 256)


def test_cls_only_last_block_matches_full_computation():
    torch.manual_seed(0)
    fusion = SemanticFusion(64, 4, 8, 32, FusionConfig(num_heads=4)).eval()
    tokens, labels = torch.randn(2, 17, 64), torch.randint(0, 151, (2, 32, 32))
    full = fusion.head(fusion.norm(fusion.fused_tokens(tokens, labels)[:, 0]))
    torch.testing.assert_close(fusion(tokens, labels), full, rtol=1e-5, atol=1e-5)


def test_rgb_head():
    assert RGBHead(1280, 768)(torch.randn(2, 50, 1280)).shape == (2, 768)


def test_label_samples_config_reads_its_old_name():
    """``fusion.label_samples`` was ``seg_cells``: configs written before the rename (the embedded checkpoint's
    until it was rebuilt, 78df8b1) still load."""
    from geosurge.model.checkpoint import read_config
    from geosurge.model.embedded import EMBEDDED_CHECKPOINT
    from geosurge.model.config import ModelConfig

    old = read_config(EMBEDDED_CHECKPOINT / "fusion")["model"]
    old["fusion"]["seg_cells"] = old["fusion"].pop("label_samples")  # as checkpoints wrote it before the rename
    cfg = ModelConfig.from_dict(old)
    assert cfg.fusion.label_samples == old["fusion"]["seg_cells"]
    assert "seg_cells" not in cfg.to_dict()["fusion"] and ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="seg_cells is the old name of fusion.label_samples"):
        ModelConfig.from_dict({"fusion": {"seg_cells": 4, "label_samples": 4}})
