"""Shared fixtures. Data in ``../shared`` (beside the repository) is optional: tests that need it skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DETECTOR_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ``../shared``; the calling test is skipped when it does not exist."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (real-data fixture, optional)")
    return path


@pytest.fixture
def voc_sample() -> Path:
    """``../shared/voc2007_sample``: 13 genuine VOC 2007 test photos and their boxes."""
    return shared_path("voc2007_sample")


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread is faster, and kinder to a shared CPU (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
