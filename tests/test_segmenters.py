import json

import numpy as np
import pytest
import torch
from PIL import Image

from geosurge.model.config import SegmenterConfig
from geosurge.model.segmenters import (
    ADE20K_CLASSES, SegmenterUnavailable, create_segmenter, label_name, list_segmenters, main_classes, overlay,
)


def test_registry_and_names():
    assert {"deeplab-ade20k", "oneformer"} <= set(list_segmenters())
    assert len(ADE20K_CLASSES) == 150 and label_name(0) == "other" and label_name(3) == "sky"


def test_deeplab_missing_file_is_explained(tmp_path):
    with pytest.raises(SegmenterUnavailable, match="not found"):
        create_segmenter(SegmenterConfig("deeplab-ade20k", str(tmp_path / "missing.tflite")))


def test_deeplab_on_real_photos(shared_dir):
    seg = create_segmenter(SegmenterConfig("deeplab-ade20k", str(shared_dir / "models/deeplabv3-mobilenetv2-ade20k/model.tflite")))
    names = [l.split("\t")[1] for l in (shared_dir / "models/deeplabv3-mobilenetv2-ade20k/labels.txt").read_text().split("\n") if l]
    assert tuple(names) == ADE20K_CLASSES
    import csv

    rows = list(csv.DictReader(open(shared_dir / "data/im2gps3k-dev/val.csv")))[:6]
    seen = set()
    for row in rows:
        img = Image.open(shared_dir / "data/im2gps3k-dev/images" / row["image"]).convert("RGB")
        lab = seg(img)
        assert lab.shape == (img.height, img.width) and lab.dtype == np.uint8 and lab.max() <= 150
        top = main_classes(lab)
        assert top and sum(f for _, _, f in top) > 0.5
        assert main_classes(lab.astype(np.int64)) == top  # Pillow's count of a uint8 map = numpy's of any ints
        seen.update(n for _, n, _ in top)
        out = overlay(img, lab)
        photo_h = round(img.height * 768 / max(img.size))
        assert out.height > photo_h + 30 and out.width >= round(img.width * 768 / max(img.size))  # legend below
    # the legend keeps its size whatever the photo's: a phone photo and a thumbnail give the same rows
    big, small = Image.new("RGB", (4032, 3024), (90, 140, 200)), Image.new("RGB", (160, 120), (90, 140, 200))
    lab = np.zeros((3024, 4032), np.uint8)
    lab[:1500] = 3  # sky
    a, b = overlay(big, lab), overlay(small, np.asarray(Image.fromarray(lab).resize((160, 120), Image.NEAREST)))
    assert a.size == b.size and max(a.size) < 1400
    # outdoor photos: at least one of the usual outdoor classes is found
    assert seen & {"sky", "tree", "building", "water", "road", "grass", "mountain"}


def test_deeplab_dilated_convolution_fusion_is_exact(shared_dir):
    """The in-memory rewrite (space/batch chains -> dilated convolutions) must not change a single logit."""
    from ai_edge_litert.interpreter import Interpreter

    from geosurge.model.segmenters._tflite import fuse_dilated_convolutions

    path = shared_dir / "models/deeplabv3-mobilenetv2-ade20k/model.tflite"
    raw = path.read_bytes()
    fused, n = fuse_dilated_convolutions(raw)
    assert n == 10  # the ten atrous depthwise convolutions of DeepLabV3-MobileNetV2
    assert fuse_dilated_convolutions(fused)[1] == 0  # nothing left to fuse
    runs = {}
    for name, content in (("original", raw), ("fused", fused)):
        it = Interpreter(model_content=content, num_threads=2)
        it.allocate_tensors()
        ops = {o["op_name"] for o in it._get_ops_details()}
        assert ("SPACE_TO_BATCH_ND" in ops) == (name == "original")
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (1, 513, 513, 3)).astype(np.float32)
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        runs[name] = it.get_tensor(it.get_output_details()[0]["index"])
    assert np.allclose(runs["original"], runs["fused"], atol=1e-4)
    assert (runs["original"].argmax(-1) == runs["fused"].argmax(-1)).mean() > 0.9999
    seg = create_segmenter(SegmenterConfig("deeplab-ade20k", str(path)))
    assert seg.fused_convolutions == 10


def test_deeplab_input_size_rewrite(shared_dir):
    """set_input_size maps every spatial size of the graph; taking 513 -> 385 -> 513 must give back
    exactly the original logits, and 385 must give whole-image labels that mostly agree with 513's."""
    import csv

    from ai_edge_litert.interpreter import Interpreter

    from geosurge.model.segmenters._tflite import fuse_dilated_convolutions, set_input_size

    path = shared_dir / "models/deeplabv3-mobilenetv2-ade20k/model.tflite"
    fused, _ = fuse_dilated_convolutions(path.read_bytes())
    assert set_input_size(fused, 513) is fused
    small = set_input_size(fused, 385)
    back = set_input_size(small, 513)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 513, 513, 3)).astype(np.float32)
    outs = {}
    for name, content in (("fused", fused), ("385", small), ("back", back)):
        it = Interpreter(model_content=content, num_threads=2)
        it.allocate_tensors()
        n = it.get_input_details()[0]["shape"][1]
        assert n == (385 if name == "385" else 513)
        it.set_tensor(it.get_input_details()[0]["index"], x[:, :n, :n])
        it.invoke()
        outs[name] = it.get_tensor(it.get_output_details()[0]["index"])
    assert outs["385"].shape == (1, 385, 385, 151)
    np.testing.assert_array_equal(outs["back"], outs["fused"])
    with pytest.raises(ValueError, match="input_size"):
        create_segmenter(SegmenterConfig("deeplab-ade20k", str(path), input_size=32))

    full = create_segmenter(SegmenterConfig("deeplab-ade20k", str(path)))
    fast = create_segmenter(SegmenterConfig("deeplab-ade20k", str(path), input_size=385))
    assert (full.input_size, fast.input_size) == (513, 385)
    rows = list(csv.DictReader(open(shared_dir / "data/im2gps3k-dev/val.csv")))[:4]
    agree = []
    for row in rows:
        img = Image.open(shared_dir / "data/im2gps3k-dev/images" / row["image"]).convert("RGB")
        a, b = full(img), fast(img)
        assert b.shape == a.shape == (img.height, img.width)
        agree.append((a == b).mean())
    # Same model on a coarser grid: most pixels keep their class (a broken rewrite gives noise, ~1/150).
    assert np.mean(agree) > 0.6, agree


def test_segmenter_input_size_is_checked_against_label_cache(tmp_path):
    from geosurge.data.labels import LabelStore

    assert SegmenterConfig().cache_name() == "deeplab-ade20k"
    assert SegmenterConfig(input_size=385).cache_name() == "deeplab-ade20k-385"
    LabelStore(tmp_path, SegmenterConfig(input_size=385))
    assert json.loads((tmp_path / "segmenter.json").read_text()) == {"name": "deeplab-ade20k", "input_size": 385}
    LabelStore(tmp_path, SegmenterConfig(path="/elsewhere/model.tflite", input_size=385))  # the file's place may differ
    with pytest.raises(ValueError, match="deeplab-ade20k-385|not"):
        LabelStore(tmp_path, SegmenterConfig())
    with pytest.raises(ValueError, match="input_size applies to deeplab"):
        create_segmenter(SegmenterConfig("oneformer", str(tmp_path), input_size=385))


def _tiny_oneformer(d):
    from transformers import CLIPTokenizer, OneFormerConfig, OneFormerForUniversalSegmentation, OneFormerProcessor, SwinConfig
    from transformers.models.oneformer.image_processing_pil_oneformer import OneFormerImageProcessorPil

    swin = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                      window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = OneFormerConfig(
        backbone_config=swin, num_labels=150, hidden_dim=32, encoder_feedforward_dim=64, dim_feedforward=64,
        num_queries=8, text_encoder_width=32, text_encoder_num_layers=1, text_encoder_context_length=16,
        text_encoder_proj_layers=1, text_encoder_n_ctx=2, conv_dim=32, mask_dim=32, encoder_layers=1,
        decoder_layers=2, num_attention_heads=2, task_seq_len=16, max_seq_len=16, text_encoder_vocab_size=100,
        is_training=False, use_auxiliary_loss=False,
    )
    torch.manual_seed(0)
    OneFormerForUniversalSegmentation(cfg).save_pretrained(d)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for w in "the task is semantic instance panoptic".split():
        vocab[w + "</w>"] = len(vocab)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    proc = OneFormerProcessor(image_processor=OneFormerImageProcessorPil(size={"shortest_edge": 64}, num_text=4),
                              tokenizer=tok, max_seq_length=16, task_seq_length=16)
    proc.save_pretrained(d)


def test_tiny_oneformer_through_real_loader(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _tiny_oneformer(tmp_path)
    seg = create_segmenter(SegmenterConfig("oneformer", str(tmp_path)))
    img = Image.fromarray((np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8))
    lab = seg(img)
    assert lab.shape == (48, 80) and lab.dtype == np.uint8
    assert lab.min() >= 1 and lab.max() <= 150  # OneFormer never says "other"


def test_oneformer_unavailable_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SegmenterUnavailable, match="could not load OneFormer"):
        create_segmenter(SegmenterConfig("oneformer", str(tmp_path / "nothing")))


def _small_segmenter(name: str, tmp_path) -> SegmenterConfig:
    """An offline configuration of each registered segmenter: a tiny random OneFormer, the packaged DeepLab."""
    if name == "oneformer":
        _tiny_oneformer(tmp_path)
        return SegmenterConfig(name, str(tmp_path))
    from geosurge.model.checkpoint import bundled_segmenter
    from geosurge.model.embedded import EMBEDDED_CHECKPOINT

    return SegmenterConfig(name, str(bundled_segmenter(EMBEDDED_CHECKPOINT)))


@pytest.mark.parametrize("name", list_segmenters())
def test_every_segmenter_labels_at_image_size_or_says_why_not(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seg = create_segmenter(_small_segmenter(name, tmp_path))
    img = Image.fromarray((np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8))
    lab = seg(img)
    assert lab.shape == (48, 80) and lab.dtype == np.uint8 and lab.max() <= 150
    with pytest.raises(SegmenterUnavailable):
        create_segmenter(SegmenterConfig(name, str(tmp_path / "missing" / "model.tflite")))


def test_unknown_segmenter_lists_the_registry():
    with pytest.raises(ValueError, match="unknown segmenter 'segformer'.*deeplab-ade20k.*oneformer"):
        create_segmenter(SegmenterConfig("segformer"))


@pytest.mark.parametrize("name", list_segmenters())
def test_every_segmenter_batches_like_one_at_a_time(name, tmp_path, monkeypatch):
    """``segment_batch`` (what ``geosurge segment --batch-size`` runs) gives each photo the label map it gets alone."""
    from pathlib import Path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seg = create_segmenter(_small_segmenter(name, tmp_path))
    examples = sorted((Path(__file__).resolve().parents[1] / "geosurge/app/examples").glob("*.jpg"))[:3]
    photos = [Image.open(p).convert("RGB").reduce(8) for p in examples]
    rng = np.random.default_rng(1)
    noise = [Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)) for h, w in ((48, 80), (48, 80), (64, 40))]
    images = [photos[0], noise[0], photos[1], noise[1], noise[2], photos[2]]  # sizes repeat and differ
    batched = seg.segment_batch(images)
    assert len(batched) == len(images)
    for img, lab in zip(images, batched):
        alone = seg(img)
        assert lab.shape == alone.shape == (img.height, img.width)
        np.testing.assert_array_equal(lab, alone)
    assert seg.segment_batch([]) == []
