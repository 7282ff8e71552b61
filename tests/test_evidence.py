"""How much the photo told the model: KL(posterior || prior) in bits, and its wording at the band boundaries."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geosurge.model.evidence import EVIDENCE_BANDS, NOT_MEASURED, bits_text, describe_evidence, evidence_bits


def test_no_change_is_zero_bits_and_kl_is_in_bits():
    base = torch.log_softmax(torch.tensor([2.0, 1.0, 0.0, -1.0], dtype=torch.float64), dim=0)
    assert evidence_bits(base[None, :], base) == pytest.approx([0.0], abs=1e-12)
    # all the mass on one cell: -log2 base(cell) bits; half on each of two equally likely cells: 1 bit less than one
    sure = torch.log(torch.tensor([[1.0, 1e-300, 1e-300, 1e-300]], dtype=torch.float64))
    assert evidence_bits(sure, base)[0] == pytest.approx(-base[0].item() / math.log(2), rel=1e-9)
    flat = torch.log_softmax(torch.zeros(8, dtype=torch.float64), dim=0)
    half = torch.log(torch.tensor([[0.5, 0.5] + [1e-300] * 6], dtype=torch.float64))
    assert evidence_bits(half, flat)[0] == pytest.approx(2.0, rel=1e-9)  # 8 equal cells narrowed to 2: 2 bits
    rng = np.random.default_rng(0)
    post = torch.log_softmax(torch.from_numpy(rng.normal(size=(5, 8))), dim=1)
    manual = (post.exp() * (post - flat)).sum(1).numpy() / math.log(2)
    assert evidence_bits(post, flat) == pytest.approx(manual) and (evidence_bits(post, flat) > 0).all()


@pytest.mark.parametrize("bits, words", [(0.0, "little"), (0.21, "little"), (0.4999, "little"), (0.5, "something"),
                                          (1.99, "something"), (2.0, "a lot"), (40.0, "a lot")])
def test_wording_at_the_band_boundaries(bits, words):
    text = describe_evidence(bits)
    assert text.startswith(f"the photo told the model {words} (") and bits_text(bits) in text


def test_wording_names_the_flickr_prior_when_weak_and_refuses_nonsense():
    assert "mostly follows where Flickr photos are taken" in describe_evidence(0.2)
    assert [upper for upper, _ in EVIDENCE_BANDS] == sorted(upper for upper, _ in EVIDENCE_BANDS)
    assert describe_evidence(math.nan) == NOT_MEASURED
    with pytest.raises(ValueError, match=">= 0 bits"):
        describe_evidence(-0.1)
    assert bits_text(0.213) == "0.21 bits" and bits_text(1.0) == "1 bit" and bits_text(12.3) == "12 bits"
