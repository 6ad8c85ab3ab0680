"""Shared pytest setup: the repo on sys.path, no network, and a private cache per test."""
import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
for path in (ROOT, TESTS):
    if path not in sys.path:
        sys.path.insert(0, path)

os.environ["TASKRES_OFFLINE"] = "1"  # no test may reach the network


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; skipped with the reason elsewhere (pytest -m cuda)")


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    """Each test gets its own feature and CLIP caches, and leaves no log handlers behind."""
    monkeypatch.setenv("TASKRES_FEATURE_CACHE", str(tmp_path / "feature_cache"))
    monkeypatch.setenv("TASKRES_CLIP_CACHE", str(tmp_path / "clip_cache"))
    yield
    from engine.utils import close_logger

    close_logger()
