"""Robust image loading: every input becomes an upright 8-bit RGB PIL image, or a clear error."""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

#: Refuse images above this many pixels (decompression bombs); PIL's own limit warns first at half.
MAX_PIXELS = 100_000_000
#: ... and formats without a reduced-scale decode (all but JPEG) above this many: a 100 MP PNG of 300 kB
#: takes 1.4 s and 300 MB to decode on one core before anything else happens; 40 MP stays under 0.7 s.
MAX_FULL_DECODE_PIXELS = 40_000_000
#: Decode JPEGs at a reduced scale when they are this much larger than needed (PIL draft mode).
DRAFT_SIZE = 1024


class ImageLoadError(ValueError):
    """The input is not an image we can read; the message says why."""


def load_image(src: Any, draft: int | None = DRAFT_SIZE) -> Image.Image:
    """Open ``src`` (path, bytes, file object, numpy array or PIL image) as upright RGB.

    EXIF orientation is applied (the pixels, never the GPS tags, are what the model sees);
    grayscale, palette, RGBA/LA (composited on white), CMYK and 16-bit/float images are converted.
    Raises :class:`ImageLoadError` for unreadable, truncated, empty or oversized inputs.
    """
    try:
        if isinstance(src, Image.Image):
            img = src
        elif isinstance(src, np.ndarray):
            img = _from_array(src)
        elif isinstance(src, (bytes, bytearray)):
            img = Image.open(io.BytesIO(src))
        elif isinstance(src, (str, Path)):
            if not Path(src).is_file():
                raise ImageLoadError(f"no such image file: {src}")
            img = Image.open(src)
        elif hasattr(src, "read"):
            img = Image.open(src)
        else:
            raise ImageLoadError(f"cannot read an image from a {type(src).__name__}")
        w, h = img.size
        if w < 1 or h < 1:
            raise ImageLoadError(f"image has no pixels ({w}x{h})")
        fmt = img.format
        limit = MAX_PIXELS if fmt == "JPEG" or not isinstance(src, (str, Path, bytes, bytearray)) else MAX_FULL_DECODE_PIXELS
        if w * h > limit:
            raise ImageLoadError(f"image is too large ({w}x{h} = {w * h / 1e6:.0f} MP; limit {limit / 1e6:.0f} MP"
                                 f"{' for this format' if limit < MAX_PIXELS else ''})")
        if draft and fmt == "JPEG":
            img.draft("RGB", (draft, draft))  # decode at 1/2, 1/4 or 1/8 scale: much faster for big photos
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            if img.getexif().get(0x0112, 1) != 1:  # turned only when needed: a copy of a big image costs
                img = ImageOps.exif_transpose(img)
        if draft and fmt != "JPEG" and min(img.size) >= 2 * draft:
            # What draft mode does for JPEGs, for the other formats: an integer box reduction that keeps
            # the short side >= draft, so a huge PNG costs its decode once, not every later step. Done
            # before the conversion to RGB: converting a 40 MP 16-bit or palette PNG first took 0.8-1 GB.
            img = _reducible(img).reduce(min(img.size) // draft)
        return _to_rgb(img)
    except ImageLoadError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageLoadError("not a readable image: not an image file, or a format Pillow cannot read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own text ("... could be decompression bomb DOS attack.") is not for a visitor to read
        limit = (Image.MAX_IMAGE_PIXELS or MAX_PIXELS) * (2 if isinstance(e, Image.DecompressionBombError) else 1)
        raise ImageLoadError(f"the image claims too many pixels to be a photo (over {limit / 1e6:.0f} MP; "
                             "a possible decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, TypeError) as e:
        if "truncated" in str(e).lower():  # the common case, said plainly (Pillow: "Truncated File Read" and kin)
            raise ImageLoadError("not a readable image: the file is cut short (an upload or copy that did not finish?)") from None
        raise ImageLoadError(f"not a readable image ({type(e).__name__}: {e})") from None


def _from_array(a: np.ndarray) -> Image.Image:
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4)):
        if a.dtype != np.uint8:
            a = _to_uint8(a.astype(np.float64))
        return Image.fromarray(a.squeeze(-1) if a.ndim == 3 and a.shape[2] == 1 else a)
    raise ImageLoadError(f"array of shape {a.shape} is not an image (expected HxW, HxWx3 or HxWx4)")


def _to_uint8(a: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if hi <= 1.0 and lo >= 0.0:
        a = a * 255.0
    elif hi > 255:
        a = (a - lo) * (255.0 / max(hi - lo, 1e-9))
    return np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)


def _reducible(img: Image.Image) -> Image.Image:
    """The same picture in a mode ``Image.reduce`` averages meaningfully (not palette indices, not 1-bit)."""
    if img.mode in ("P", "PA"):
        return img.convert("RGBA")
    if img.mode == "1":
        return img.convert("L")
    if img.mode.startswith("I;16"):
        return img.convert("I")
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img, dtype=np.float64))).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
