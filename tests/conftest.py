"""Shared test fixtures. Real data lives in ../shared/data (read-only, outside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RARESPOT_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of a real data set under ../shared/data, or skip the test with a message."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {name!r} not found at {path} (set RARESPOT_SHARED_DATA to its parent)")
    return path


@pytest.fixture
def opixray_dir() -> Path:
    return shared_dataset("opixray")


@pytest.fixture
def icbhi_dir() -> Path:
    return shared_dataset("icbhi")


@pytest.fixture
def malaria_npz() -> Path:
    return shared_dataset("malaria") / "malaria_cells_train.npz"


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory):
    """``rarespot demo`` with its default settings (the README's main job, about 3 minutes on 2 cores):
    a detector trained to find the synthetic objects, for the slow tests that need a real model."""
    from rarespot.detect.demo import run_demo

    return run_demo(tmp_path_factory.mktemp("demo"), progress=False)
