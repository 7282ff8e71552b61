"""Shared fixtures: where ``../shared`` lives (skipping cleanly when it is absent), and a running demo."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GEOSURGE_SHARED", ROOT.parent / "shared"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the running demo (:func:`server`, :func:`client`) start the app: they are ``slow``
    (``-m "not slow"`` skips them; plain ``python -m pytest`` and ``.ci/run`` run them). Tests that start
    an ``AppServer`` themselves carry the mark in their module."""
    for item in items:
        if {"server", "client"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (or ``$GEOSURGE_SHARED``); skips the test when it is not there (a user's machine)."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the shared data at {SHARED}")
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="module")
def server():
    """``app.py`` on the embedded checkpoint, started once per test module and stopped after it."""
    from .app_testing import AppServer

    s = AppServer()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    """A ``gradio_client.Client`` connected to :func:`server`."""
    from gradio_client import Client

    return Client(server.url, verbose=False)
