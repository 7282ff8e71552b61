import io

import numpy as np
import pytest
import torch
from PIL import Image

from geosurge.data import ImageLoadError, Preprocess, load_image
from geosurge.data.transforms import resample_labels, resize_label_map


def _bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_modes_become_rgb(mode):
    base = Image.fromarray((np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8))
    img = base.convert(mode) if mode not in ("I;16", "I", "F") else Image.fromarray((np.arange(600).reshape(20, 30) * 50).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (30, 20)


def test_exif_rotation_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    out = load_image(_bytes(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ImageLoadError, match="not a readable image"):
        load_image(b"this is not an image")
    good = _bytes(Image.new("RGB", (64, 64)), "JPEG")
    with pytest.raises(ImageLoadError):
        load_image(good[: len(good) // 3])
    with pytest.raises(ImageLoadError, match="no such image file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageLoadError, match="cannot read"):
        load_image(12345)


def test_decompression_bomb_refused(monkeypatch):
    import geosurge.data.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(Image.new("RGB", (200, 200)))


def test_tiny_image():
    out = load_image(Image.new("RGB", (1, 1), (1, 2, 3)))
    x, _ = Preprocess(32, (0.5,) * 3, (0.5,) * 3)(out)
    assert x.shape == (1, 3, 32, 32)


def test_preprocess_keeps_labels_aligned():
    # left half red / label 1, right half blue / label 2: crops and flips must move both together
    arr = np.zeros((60, 90, 3), np.uint8)
    arr[:, :45] = (255, 0, 0)
    arr[:, 45:] = (0, 0, 255)
    labels = np.zeros((60, 90), np.uint8)
    labels[:, :45] = 1
    labels[:, 45:] = 2
    pre = Preprocess(30, (0.0,) * 3, (1.0,) * 3)
    rng = np.random.default_rng(0)
    for crops in ("center", "ten", "random", "random", "random"):
        x, y = pre(Image.fromarray(arr), labels, crops=crops, rng=rng)
        assert x.shape[1:] == (3, 30, 30) and y.shape[1:] == (30, 30)
        red = x[:, 0] > 0.5
        # only the one boundary column may disagree (bicubic vs nearest); a misaligned flip gives ~50%
        assert ((y == 1) == red).float().mean() >= 0.93
    x, y = pre(Image.fromarray(arr), labels, crops="ten")
    assert x.shape[0] == 10 and (y[5:] == y[:5].flip(-1)).all()
    with pytest.raises(ValueError, match="does not match"):
        pre(Image.fromarray(arr), labels[:10])


@pytest.mark.parametrize("shape", [(60, 90), (90, 60), (20, 400)])  # landscape, portrait, past the aspect cap
def test_label_crops_alone_match_those_cropped_with_the_pixels(shape):
    """A label map that arrives after its photo was encoded is cropped with the geometry the pixels got."""
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
    labels = rng.integers(0, 151, shape, dtype=np.uint8)
    pre = Preprocess(16, (0.0,) * 3, (1.0,) * 3)
    for crops in ("center", "ten"):
        x, y = pre(img, labels, crops=crops)
        none, alone = pre(img, labels, crops=crops, pixels=False)
        assert none is None and torch.equal(alone, y)
    for bad in ({"labels": None, "crops": "center"}, {"labels": labels, "crops": "random", "rng": rng}):
        with pytest.raises(ValueError, match="needs labels and center or ten crops"):
            pre(img, pixels=False, **bad)


def test_label_maps_resize_nearest_and_keep_their_classes():
    labels = np.random.default_rng(0).integers(0, 151, (37, 53)).astype(np.uint8)
    assert resize_label_map(labels, (53, 37)) is labels  # already that size: untouched
    big = resize_label_map(labels, (159, 111))  # x3: every label becomes a 3x3 block
    assert big.shape == (111, 159) and big.dtype == np.uint8
    assert (big[::3, ::3] == labels).all() and (big[1::3, 2::3] == labels).all()
    small = resize_label_map(big, (53, 37))
    assert (small == labels).all()  # nearest: no label is ever blended into another class
    part = resize_label_map(labels, (20, 10), box=(10, 5, 30, 15))
    assert (part == labels[5:15, 10:30]).all()


def test_label_lattice_is_what_the_fusion_tokenizer_samples():
    from geosurge.model.fusion import SemanticTokenizer

    tok = SemanticTokenizer(grid=4, label_samples=2, num_classes=151, dim=8)
    labels = torch.randint(0, 151, (3, 224, 224))
    lattice = resample_labels(labels, 8)
    assert lattice.shape == (3, 8, 8) and lattice.dtype == torch.int64
    assert resample_labels(lattice, 8) is lattice
    assert torch.equal(tok.patch_indices(labels), tok.patch_indices(lattice))  # caching the lattice changes nothing
    assert torch.equal(lattice, labels[:, ::28, ::28])  # nearest neighbour: the top-left sample of each 28-px cell
