"""GeoSURGE demo: ``python app.py`` serves http://127.0.0.1:7860 (``--help`` for options).

On a Hugging Face Space (``SPACE_ID`` set) it binds 0.0.0.0. The model is loaded once and stays
resident (on the GPU when there is one).
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from geosurge.app.settings import parse_settings

    settings = parse_settings(argv)
    from geosurge.app.ui import Locator, build_demo
    from geosurge.predictor import Predictor

    try:
        predictor = Predictor.from_pretrained(settings.checkpoint, device=settings.device, segmenter_path=settings.segmenter_path)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"app.py: cannot load the checkpoint {settings.checkpoint}: {e}", file=sys.stderr)
        return 2
    locator = Locator(predictor, settings)
    if (note := locator.fusion_note) is not None:
        print(f"app.py: {note}; the fusion toggle is off", file=sys.stderr)
    print(f"app.py: warmed up in {locator.warm_up():.1f} s", file=sys.stderr)
    demo = build_demo(locator)
    demo.queue(default_concurrency_limit=1, max_size=64)
    demo.launch(server_name=settings.host, server_port=settings.port, max_file_size=f"{settings.max_upload_mb}mb",
                allowed_paths=settings.allowed_paths, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
