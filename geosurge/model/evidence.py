"""How much a photo told the model: the information its posterior holds beyond the no-photo distribution.

    evidence_bits = KL(posterior || base) = sum_f p(f | x) * log2(p(f | x) / base(f))

over the finest cells, where ``base`` is what the posterior would be without the photo: MP-16's photo density
(where Flickr photos are taken) raised to the posterior's ``prior_weight`` and normalized. Why this measure:
it is 0 exactly when the photo changed nothing, it is the expected value, under the model's own posterior, of
the bits the posterior puts on the true cell beyond the prior (the figure docs/results.md reports per photo
under cross-validation, which needs the truth), and 2 ** bits reads as "how many times narrower than where
Flickr photos are taken" for a posterior that keeps a part of the prior's cells. The wording thresholds are
measured on held-out photos in docs/results.md (``python benchmarks/evidence.py``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

#: (upper bound in bits, sentence) from the weakest band up; the last band has no upper bound. Below 0.5 bits
#: no band of held-out photos was located better than the no-photo answer (docs/results.md); 2 bits means the
#: posterior is about 4 times narrower than the Flickr prior, far above anything the embedded checkpoint reaches.
EVIDENCE_BANDS: tuple[tuple[float, str], ...] = (
    (0.5, "the photo told the model little ({bits}): this answer mostly follows where Flickr photos are taken"),
    (2.0, "the photo told the model something ({bits}): it narrowed down where Flickr photos are taken, "
          "and the answer leans on both"),
    (math.inf, "the photo told the model a lot ({bits}): the answer comes mainly from what the photo shows"),
)
#: What a person reads when the checkpoint has no fitted posterior (no prior to measure against).
NOT_MEASURED = "how much the photo told the model is not measured: this checkpoint has no fitted prior"


def evidence_bits(log_post: torch.Tensor, log_base: torch.Tensor) -> np.ndarray:
    """KL(posterior || base) in bits, per photo: ``log_post`` (B, n) and ``log_base`` (n,) are normalized
    natural-log distributions over the same cells."""
    p = log_post.double().exp()
    kl = (p * (log_post.double() - log_base.double()[None, :])).sum(dim=1) / math.log(2.0)
    return kl.clamp_min(0.0).cpu().numpy()  # >= 0 in exact arithmetic; rounding can leave -1e-16


def bits_text(bits: float) -> str:
    """"0.21 bits", "1.4 bits", "12 bits": two significant digits."""
    return f"{bits:.2g} bit" + ("" if f"{bits:.2g}" == "1" else "s")


def describe_evidence(bits: float) -> str:
    """The plain-words sentence for ``bits`` of evidence (see :data:`EVIDENCE_BANDS`); NaN: not measured."""
    if math.isnan(bits):
        return NOT_MEASURED
    if bits < 0:
        raise ValueError(f"evidence must be >= 0 bits, got {bits}")
    for upper, text in EVIDENCE_BANDS:
        if bits < upper:
            return text.format(bits=bits_text(bits))
    raise AssertionError("the last band is unbounded")
