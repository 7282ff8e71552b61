"""Shared fixtures: where ``../shared`` lives, and skipping cleanly when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GEOSURGE_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (or ``$GEOSURGE_SHARED``); skips the test when it is not there (a user's machine)."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the shared data at {SHARED}")
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED
