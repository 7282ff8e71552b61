"""App settings from flags and environment variables (flags win); Space-aware defaults."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..model.embedded import EMBEDDED_CHECKPOINT
from .admission import QUEUE_SIZE

DEFAULT_CHECKPOINT = EMBEDDED_CHECKPOINT
#: The 20 EXIF-GPS photos shipped with the package (README.md there: source and licence).
EXAMPLES = Path(__file__).resolve().parent / "examples"
#: Uploads and generated files are deleted this long after they were written (and all at shutdown).
DEFAULT_DELETE_AFTER_S = 1800


@dataclass
class AppSettings:
    host: str = "127.0.0.1"
    port: int = 7860
    checkpoint: Path = DEFAULT_CHECKPOINT
    segmenter_path: str | None = None
    examples: list[Path] = field(default_factory=list)
    reference_images: Path | None = None
    max_upload_mb: int = 20
    device: str | None = None
    on_space: bool = False
    delete_after_s: int = DEFAULT_DELETE_AFTER_S
    online_tiles: bool = False
    queue_size: int = QUEUE_SIZE

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def allowed_paths(self) -> list[str]:
        dirs = {str(p.parent) for p in self.examples}
        if self.reference_images is not None:
            dirs.add(str(self.reference_images))
        return sorted(dirs)


def _env(name: str, default=None):
    v = os.environ.get(name)
    return v if v not in (None, "") else default


def default_examples() -> list[Path]:
    """The EXIF-GPS photos shipped in the package: a first visitor sees the true point and the error."""
    return examples_from(EXAMPLES, n=20)


def examples_from(folder: Path, n: int = 20) -> list[Path]:
    exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in exts)[:n] if folder.is_dir() else []


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    """The demo's flags (``python app.py``, ``geosurge app``); each has an environment variable, flags win."""
    on_space = bool(_env("SPACE_ID"))
    p.add_argument("--host", default=_env("GEOSURGE_HOST", "0.0.0.0" if on_space else "127.0.0.1"),
                   help="interface to bind (default 127.0.0.1; 0.0.0.0 on a Hugging Face Space) [$GEOSURGE_HOST]")
    p.add_argument("--port", type=int, default=int(_env("GEOSURGE_PORT", _env("GRADIO_SERVER_PORT", "7860"))),
                   help="port (default 7860) [$GEOSURGE_PORT]")
    p.add_argument("--checkpoint", type=Path, default=Path(_env("GEOSURGE_CHECKPOINT", str(DEFAULT_CHECKPOINT))),
                   help="checkpoint dir or fusion/rgb pair (default: the embedded one) [$GEOSURGE_CHECKPOINT]")
    p.add_argument("--segmenter-path", default=_env("GEOSURGE_SEGMENTER"),
                   help="segmentation model file / directory / hub id (default: the checkpoint's) [$GEOSURGE_SEGMENTER]")
    p.add_argument("--examples", type=Path, default=_env("GEOSURGE_EXAMPLES"),
                   help="folder of example photos (default: the 20 EXIF-GPS photos shipped) [$GEOSURGE_EXAMPLES]")
    p.add_argument("--reference-images", type=Path, default=_env("GEOSURGE_REFERENCE_IMAGES"),
                   help="folder of the training photos, to show the nearest reference [$GEOSURGE_REFERENCE_IMAGES]")
    p.add_argument("--max-upload-mb", type=int, default=int(_env("GEOSURGE_MAX_UPLOAD_MB", "20")),
                   help="largest upload accepted, by file or data: URL (default 20) [$GEOSURGE_MAX_UPLOAD_MB]")
    p.add_argument("--delete-after", type=int, default=int(_env("GEOSURGE_DELETE_AFTER", str(DEFAULT_DELETE_AFTER_S))),
                   help="seconds after which uploads and generated files are deleted (default 1800; all at "
                        "shutdown) [$GEOSURGE_DELETE_AFTER]")
    p.add_argument("--online-tiles", action=argparse.BooleanOptionalAction,
                   default=_env("GEOSURGE_ONLINE_TILES", "1" if on_space else "0") not in ("0", "false", "no"),
                   help="draw OpenStreetMap tiles over the offline Natural Earth basemap (default: only on a Space; "
                        "the tile requests tell the tile server where each answer is) [$GEOSURGE_ONLINE_TILES]")
    p.add_argument("--queue-size", type=int, default=int(_env("GEOSURGE_QUEUE_SIZE", str(QUEUE_SIZE))),
                   help=f"requests waiting for an answer before more are told the demo is busy (default {QUEUE_SIZE}) "
                        "[$GEOSURGE_QUEUE_SIZE]")
    p.add_argument("--device", default=_env("GEOSURGE_DEVICE"), help="cpu, cuda ... (default: GPU when present)")


def settings_from_args(a: argparse.Namespace) -> AppSettings:
    """Checked settings from parsed flags (``ValueError`` with the reason)."""
    from ..model.checkpoint_dir import training_images  # torch: not for ``--help``

    on_space = bool(_env("SPACE_ID"))
    examples = examples_from(Path(a.examples)) if a.examples else default_examples()
    refs = Path(a.reference_images) if a.reference_images else training_images(a.checkpoint)
    if not 60 <= a.delete_after <= 86400:
        raise ValueError(f"--delete-after must be between 60 and 86400 seconds, not {a.delete_after}")
    if a.max_upload_mb < 1:
        raise ValueError("--max-upload-mb must be at least 1")
    if a.queue_size < 1:
        raise ValueError("--queue-size must be at least 1")
    return AppSettings(a.host, a.port, a.checkpoint, a.segmenter_path, examples, refs, a.max_upload_mb, a.device,
                       on_space, a.delete_after, a.online_tiles, a.queue_size)


def parse_settings(argv: list[str] | None = None) -> AppSettings:
    p = argparse.ArgumentParser(description="GeoSURGE demo: where on Earth was this photo taken?")
    add_settings_arguments(p)
    a = p.parse_args(argv)
    try:
        return settings_from_args(a)
    except ValueError as e:
        p.error(str(e))
