"""The paper's models with random weights, built locally from ``transformers`` configurations (no download),
and FLOP counts per photo; shared by ``paper_rehearsal.py`` and ``gpu_check.py``.

CLIP ViT-L/14-336 and OneFormer (ADE20K, Swin-L backbone) have the shapes of
``openai/clip-vit-large-patch14-336`` and ``shi-labs/oneformer_ade20k_swin_large``; ``tiny=True`` gives
small models of the same families for smoke runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

CLIP_L14_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14, hidden_act="quick_gelu", projection_dim=768)
CLIP_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 image_size=112, patch_size=14, hidden_act="quick_gelu", projection_dim=64)

# shi-labs/oneformer_ade20k_swin_large: Swin-L (192-wide, depths 2-2-18-2, window 12) + 6 pixel-decoder
# layers + 10 transformer-decoder layers, 250 queries, 150 ADE20K classes; its processor resizes the
# shorter side to 512.
SWIN_L = dict(image_size=384, patch_size=4, embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48],
              window_size=12, drop_path_rate=0.0, out_features=["stage1", "stage2", "stage3", "stage4"])
ONEFORMER_SWIN_L = dict(num_labels=150, hidden_dim=256, encoder_feedforward_dim=1024, dim_feedforward=2048,
                        num_queries=250, conv_dim=256, mask_dim=256, encoder_layers=6, decoder_layers=10,
                        num_attention_heads=8, text_encoder_width=256, text_encoder_num_layers=6,
                        text_encoder_context_length=77, text_encoder_proj_layers=2, text_encoder_n_ctx=16,
                        task_seq_len=77, max_seq_len=77, is_training=False, use_auxiliary_loss=False)
SWIN_TINY = dict(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                 out_features=["stage1", "stage2", "stage3", "stage4"])
ONEFORMER_TINY = dict(num_labels=150, hidden_dim=32, encoder_feedforward_dim=64, dim_feedforward=64, num_queries=8,
                      text_encoder_width=32, text_encoder_num_layers=1, text_encoder_context_length=16,
                      text_encoder_proj_layers=1, text_encoder_n_ctx=2, conv_dim=32, mask_dim=32, encoder_layers=1,
                      decoder_layers=2, num_attention_heads=2, task_seq_len=16, max_seq_len=16,
                      text_encoder_vocab_size=100, is_training=False, use_auxiliary_loss=False)
ONEFORMER_SHORT_SIDE = 512


def save_clip(directory: Path, tiny: bool = False, seed: int = 0) -> Path:
    """A random-weight CLIP vision tower saved with save_pretrained (what backbone.pretrained points to)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    CLIPVisionModel(CLIPVisionConfig(**(CLIP_TINY if tiny else CLIP_L14_336))).save_pretrained(directory)
    return directory


def save_oneformer(directory: Path, short_side: int, tiny: bool = False, seed: int = 0) -> Path:
    """A random-weight OneFormer (ADE20K semantic) with a processor resizing the shorter side to ``short_side``.

    The task prompt ("the task is semantic") is tokenized with a small CLIP-style vocabulary written
    here: the real tokenizer's files would be a download, and the prompt's token ids only index a
    random embedding table anyway.
    """
    from transformers import OneFormerConfig, OneFormerForUniversalSegmentation, SwinConfig

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = OneFormerConfig(backbone_config=SwinConfig(**(SWIN_TINY if tiny else SWIN_L)), **(ONEFORMER_TINY if tiny else ONEFORMER_SWIN_L))
    OneFormerForUniversalSegmentation(cfg).save_pretrained(directory)
    save_oneformer_processor(directory, short_side, cfg.task_seq_len)
    return directory


def save_oneformer_processor(directory: Path, short_side: int, seq_len: int) -> None:
    from transformers import CLIPTokenizer, OneFormerProcessor
    from transformers.models.oneformer.image_processing_pil_oneformer import OneFormerImageProcessorPil

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for w in "the task is semantic instance panoptic".split():
        vocab[w + "</w>"] = len(vocab)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    proc = OneFormerProcessor(image_processor=OneFormerImageProcessorPil(size={"shortest_edge": short_side, "longest_edge": 4 * short_side}, num_text=seq_len),
                              tokenizer=tok, max_seq_length=seq_len, task_seq_length=seq_len)
    proc.save_pretrained(directory)


def count_flops(fn) -> int:
    """FLOPs (2 per multiply-add) of the matrix products and convolutions ``fn()`` runs."""
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    with mode:
        fn()
    return int(mode.get_total_flops())


def train_step_flops(model, pixels: torch.Tensor, labels: torch.Tensor | None, cells: torch.Tensor) -> int:
    """FLOPs per photo of one training step (frozen forward, trainable forward and backward, loss)."""

    def step():
        feats = model.encode(pixels, labels)
        loss, _, _ = model.geo.loss(feats.float(), cells)
        loss.backward()

    model.train()
    n = count_flops(step)
    model.zero_grad(set_to_none=True)
    return n // pixels.shape[0]


def segmenter_flops(segmenter, image) -> int:
    """FLOPs of one OneFormer forward on ``image`` (through its processor, as `geosurge segment` runs it)."""
    # the counter's module tracker hooks tensors that require grad; under no_grad those have no graph
    segmenter.model.requires_grad_(False)
    return count_flops(lambda: segmenter(image))
