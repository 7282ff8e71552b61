"""ADE20K class names, a colour palette and the overlay renderer for label maps."""
from __future__ import annotations

import colorsys
import functools

import numpy as np
from PIL import Image, ImageDraw

from ...data.transforms import resize_label_map

#: The 150 ADE20K classes (SceneParsing benchmark order); label k in our maps is ADE20K_CLASSES[k - 1],
#: label 0 is "other" (unlabelled).
ADE20K_CLASSES: tuple[str, ...] = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane', 'grass', 'cabinet',
    'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain', 'chair', 'car', 'water',
    'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field', 'armchair', 'seat', 'fence',
    'desk', 'rock', 'wardrobe', 'lamp', 'bathtub', 'railing', 'cushion', 'base', 'box', 'column',
    'signboard', 'chest', 'counter', 'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand',
    'path', 'stairs', 'runway', 'case', 'pool', 'pillow', 'screen', 'stairway', 'river', 'bridge',
    'bookcase', 'blind', 'coffee', 'toilet', 'flower', 'book', 'hill', 'bench', 'countertop', 'stove',
    'palm', 'kitchen', 'computer', 'swivel', 'boat', 'bar', 'arcade', 'hovel', 'bus', 'towel', 'light',
    'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth', 'television', 'airplane', 'dirt',
    'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman', 'bottle', 'buffet', 'poster', 'stage',
    'van', 'ship', 'fountain', 'conveyer', 'canopy', 'washer', 'plaything', 'swimming', 'stool', 'barrel',
    'basket', 'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven', 'ball', 'food', 'step', 'tank',
    'trade', 'microwave', 'pot', 'animal', 'bicycle', 'lake', 'dishwasher', 'screen', 'blanket', 'sculpture',
    'hood', 'sconce', 'vase', 'traffic', 'tray', 'ashcan', 'fan', 'pier', 'crt', 'plate', 'monitor',
    'bulletin', 'shower', 'radiator', 'glass', 'clock', 'flag',
)
NUM_LABELS = len(ADE20K_CLASSES) + 1  # + "other"


def label_name(label: int) -> str:
    return "other" if label == 0 else ADE20K_CLASSES[label - 1]


def _palette() -> np.ndarray:
    # Well-separated hues by golden-ratio stepping, alternating lightness; "other" is black.
    pal = np.zeros((NUM_LABELS, 3), np.uint8)
    for k in range(1, NUM_LABELS):
        h = (k * 0.61803398875) % 1.0
        light = (0.45, 0.6, 0.35)[k % 3]
        r, g, b = colorsys.hls_to_rgb(h, light, 0.75)
        pal[k] = (int(r * 255), int(g * 255), int(b * 255))
    return pal


PALETTE = _palette()
_PIL_PALETTE = PALETTE.ravel().tolist() + [0] * (3 * (256 - NUM_LABELS))


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) uint8 colours."""
    return np.asarray(_coloured(labels))


def _coloured(labels: np.ndarray, size: tuple[int, int] | None = None) -> Image.Image:
    """The labels as an RGB image (resized to ``size`` nearest-neighbour first): PIL's palette mode maps
    them, ~10x faster than indexing PALETTE with numpy at the overlay's size."""
    img = Image.fromarray(np.asarray(labels, dtype=np.uint8))
    img.putpalette(_PIL_PALETTE)  # an L image becomes P
    if size is not None and img.size != tuple(size):
        img = img.resize(tuple(size), Image.NEAREST)
    return img.convert("RGB")


def main_classes(labels: np.ndarray, top: int = 8, min_fraction: float = 0.01) -> list[tuple[int, str, float]]:
    """The most frequent classes as (label, name, fraction of pixels), largest first."""
    labels = np.asarray(labels)
    if labels.dtype == np.uint8 and labels.ndim == 2:  # every segmenter's output: Pillow counts a 2 MP map in ~2 ms, numpy in ~10
        counts = np.asarray(Image.fromarray(labels).histogram(), np.int64)  # 256 bins
        counts = counts[: max(NUM_LABELS, len(np.trim_zeros(counts, "b")))]  # bincount's length, so the same result
    else:
        counts = np.bincount(labels.astype(np.int64).ravel(), minlength=NUM_LABELS)
    frac = counts / max(counts.sum(), 1)
    order = np.argsort(-frac)
    return [(int(k), label_name(int(k)), float(frac[k])) for k in order[:top] if frac[k] >= min_fraction]


#: The overlay is drawn at this size (longest side of the photo part), whatever the photo's size, so the
#: legend keeps the same proportion of the picture: readable wherever the picture is shown fitted to a box.
OVERLAY_SIDE = 768


@functools.lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def overlay(image: Image.Image, labels: np.ndarray, alpha: float = 0.55, legend: bool = True, top: int = 8,
            side: int = OVERLAY_SIDE) -> Image.Image:
    """The image blended with its coloured label map, fitted into ``side`` x ``side``, with a legend of the
    main classes below it in two columns, its rows 1/20 of ``side`` high (clear of any toolbar drawn over
    the picture's top corner, and as readable for a 12 MP phone photo as for a thumbnail)."""
    image = image.convert("RGB")
    labels = resize_label_map(labels, image.size)
    classes = main_classes(labels, top=top)
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    photo = image.resize(size, Image.BILINEAR)
    blend = Image.blend(photo, _coloured(labels, size), alpha)
    if not legend:
        return blend
    row = max(16, side // 20)
    font = _font(int(row * 0.8))
    texts = [f"{name} {frac:.0%}" for _, name, frac in classes]
    column = 18 + row + max([int(font.getlength(t)) for t in texts] + [row * 4])
    rows = (len(classes) + 1) // 2
    out = Image.new("RGB", (max(blend.width, 2 * column), blend.height + 8 + rows * (row + 6)), (255, 255, 255))
    out.paste(blend, ((out.width - blend.width) // 2, 0))
    draw = ImageDraw.Draw(out)
    for i, ((k, _, _), text) in enumerate(zip(classes, texts)):
        x, y = 6 + (i % 2) * column, blend.height + 8 + (i // 2) * (row + 6)
        draw.rectangle([x, y, x + row, y + row], fill=tuple(int(c) for c in PALETTE[k]), outline=(60, 60, 60))
        draw.text((x + row + 6, y + row // 2), text, fill=(0, 0, 0), font=font, anchor="lm")
    return out
