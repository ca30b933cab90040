"""Fixtures for the atlas tests (temporary image folders and cache dirs)."""
import pytest

from .helpers import make_images


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    make_images(folder)
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(d))
    return d
