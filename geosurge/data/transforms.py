"""The one preprocessing path: resize, crop and normalize an image and its label map together.

Training, evaluation and the app all call :class:`Preprocess`; a backbone owns its instance (size,
mean, std), so features at inference are computed exactly as in training.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

#: Ten-crop resizes the shorter side to ``size / TEN_CROP_FRACTION`` first (the 224-of-256 convention).
TEN_CROP_FRACTION = 0.875
#: Longest side / shortest side kept before resizing: a longer image is centre-cropped to this ratio
#: first. Real panoramas stay whole (up to 8:1); a 1 x 10000 strip would otherwise be enlarged to
#: 224 x 2.24 M pixels (1.5 GB) to take a 224-px crop from its middle.
MAX_ASPECT = 8.0


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: int = Image.BICUBIC

    def __call__(
        self,
        image: Image.Image,
        labels: np.ndarray | None = None,
        crops: str = "center",
        rng: np.random.Generator | None = None,
        pixels: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Return ``pixels`` (n, 3, S, S) float32 and ``labels`` (n, S, S) int64 (or None).

        ``crops``: ``"center"`` (n=1; shorter side resized to S), ``"ten"`` (n=10; four corners and
        centre of the image resized to S/0.875, plus their mirror images) or ``"random"`` (n=1; random
        resized crop and horizontal flip, for training; needs ``rng``). ``labels`` is a label map at the
        image's resolution; it gets the same geometry with nearest-neighbour resampling. ``pixels=False``
        crops the label map alone (pixels None), with the geometry the image's pixels get: for a label map
        that arrives after its photo was encoded (a segmenter running beside the backbone).
        """
        if labels is not None and labels.shape[:2] != (image.height, image.width):
            raise ValueError(f"label map {labels.shape[:2]} does not match the image ({image.height}, {image.width})")
        if not pixels and (labels is None or crops == "random"):
            raise ValueError("pixels=False crops a label map with a fixed geometry: it needs labels and center or ten crops")
        s = self.image_size
        if crops == "center":
            boxes, flips, short = None, [False], s
        elif crops == "ten":
            short = int(round(s / TEN_CROP_FRACTION))
            boxes, flips = None, None
        elif crops == "random":
            if rng is None:
                raise ValueError("crops='random' needs an rng")
            return self._random(image, labels, rng)
        else:
            raise ValueError(f"crops must be 'center', 'ten' or 'random', not {crops!r}")
        img, lab = self._resize_short(image, labels, short, pixels)
        w, h = img.size if pixels else lab.shape[::-1]
        cx, cy = (w - s) // 2, (h - s) // 2
        if crops == "center":
            boxes = [(cx, cy)]
        else:
            corners = [(0, 0), (w - s, 0), (0, h - s), (w - s, h - s), (cx, cy)]
            boxes, flips = corners * 2, [False] * 5 + [True] * 5
        arr = np.asarray(img) if pixels else None
        pix, labs = [], []
        for (x, y), flip in zip(boxes, flips):
            p = arr[y : y + s, x : x + s] if pixels else None
            q = lab[y : y + s, x : x + s] if lab is not None else None
            if flip:
                p = p[:, ::-1] if pixels else None
                q = q[:, ::-1] if q is not None else None
            pix.append(p)
            labs.append(q)
        return self._finish(pix if pixels else None, labs if lab is not None else None)

    # ------------------------------------------------------------------ helpers
    def _resize_short(self, image: Image.Image, labels: np.ndarray | None, short: int, pixels: bool = True):
        image, labels = _cap_aspect(image, labels)
        w, h = image.size
        scale = short / min(w, h)
        nw, nh = max(short, int(round(w * scale))), max(short, int(round(h * scale)))
        img = image.resize((nw, nh), self.interpolation) if pixels else None
        lab = resize_label_map(labels, (nw, nh)) if labels is not None else None
        return img, lab

    def _random(self, image: Image.Image, labels: np.ndarray | None, rng: np.random.Generator):
        # Random resized crop (scale 0.35-1 of the area, aspect 3/4-4/3) and a horizontal flip.
        w, h = image.size
        for _ in range(10):
            area = w * h * rng.uniform(0.35, 1.0)
            ar = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = int(round(np.sqrt(area * ar))), int(round(np.sqrt(area / ar)))
            if 0 < cw <= w and 0 < ch <= h:
                break
        else:
            cw = ch = min(w, h)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        s = self.image_size
        img = image.resize((s, s), self.interpolation, box=(x, y, x + cw, y + ch))
        p = np.asarray(img)
        q = None
        if labels is not None:
            q = resize_label_map(labels, (s, s), box=(x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            p = p[:, ::-1]
            q = q[:, ::-1] if q is not None else None
        return self._finish([p], [q] if q is not None else None)

    def _finish(self, pix: list[np.ndarray] | None, labs: list[np.ndarray] | None):
        x = None
        if pix is not None:
            x = torch.from_numpy(np.ascontiguousarray(np.stack(pix))).permute(0, 3, 1, 2).float().div_(255.0)
            x = (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)
        y = torch.from_numpy(np.ascontiguousarray(np.stack(labs)).astype(np.int64)) if labs is not None else None
        return x, y


def resize_label_map(labels: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """(H, W) label map resized to ``size`` = (width, height), uint8, nearest neighbour: labels are
    categories, never blended. ``box`` (left, upper, right, lower) takes that region of the map only.

    Every resize of a label map at image geometry goes through here (stores, crops, segmenters), so the
    maps a model trains on and the ones it is served are sampled alike.
    """
    if box is None and labels.shape[:2] == (size[1], size[0]):
        return labels
    img = Image.fromarray(labels.astype(np.uint8, copy=False))
    return np.asarray(img.resize(tuple(size), Image.NEAREST, box=box))


def resample_labels(labels: torch.Tensor, side: int) -> torch.Tensor:
    """(B, H, W) label maps sampled on the fusion tokenizer's ``side`` x ``side`` lattice (nearest neighbour).

    The tokenizer and the view cache both sample through here, so a cached lattice is exactly what the
    tokenizer would have sampled from the full crop.
    """
    if labels.shape[-2:] == (side, side):
        return labels
    return F.interpolate(labels[:, None].float(), size=(side, side), mode="nearest")[:, 0].long()


def _cap_aspect(image: Image.Image, labels: np.ndarray | None) -> tuple[Image.Image, np.ndarray | None]:
    """Centre-crop the long side to ``MAX_ASPECT`` times the short one (no-op for ordinary photos)."""
    w, h = image.size
    cap = max(1, int(MAX_ASPECT * min(w, h)))
    if max(w, h) <= cap:
        return image, labels
    if w > h:
        x = (w - cap) // 2
        box, rows, cols = (x, 0, x + cap, h), slice(None), slice(x, x + cap)
    else:
        y = (h - cap) // 2
        box, rows, cols = (0, y, w, y + cap), slice(y, y + cap), slice(None)
    return image.crop(box), (labels[rows, cols] if labels is not None else None)
