"""Shared fixtures: the synthetic shapes data (generated once per session), the real-data fixtures
(data in ``../shared``, beside the repository, is optional: tests that need it skip), seeding, and
one torch thread. The tests sit in one folder per package room (tests/core, tests/data, ...); the
helpers at this folder's top (helpers.py, reference.py, coco_files.py, ...) are importable from
each (pyproject.toml: ``pythonpath = ["tests"]``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Callable
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


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def make_shapes(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_shapes(n_train=16, n_val=7, image_size=64)``: the shapes dataset of that size (seed 1),
    generated once per session into a temporary folder (``helpers.tiny_shapes``).

    Read only: tests share each folder, so a test that damages its data copies it first
    (``shapes_copy``). At the end of the session each folder is checked unchanged, file for file."""
    from helpers import tiny_shapes

    made: dict[tuple[int, int, int], tuple[Path, dict[str, str]]] = {}

    def make(n_train: int = 16, n_val: int = 7, image_size: int = 64) -> Path:
        key = (n_train, n_val, image_size)
        if key not in made:
            root = tiny_shapes(tmp_path_factory.mktemp(f"shapes_{n_train}_{n_val}_{image_size}px"), n_train, n_val, image_size)
            made[key] = root, _digest(root)
        return made[key][0]

    yield make
    changed = [str(root) for root, digest in made.values() if _digest(root) != digest]
    assert not changed, f"a test changed the shared shapes data in {changed}: copy it first (shapes_copy)"


@pytest.fixture(scope="session")
def shapes(make_shapes: Callable[..., Path]) -> Path:
    """The tiny shapes dataset the training, reliability and run tests share: 16 train and 7 val
    images at about 64 px (7: an odd count, for the DDP tests), ``JPEGImages/``,
    ``shapes_train.json`` and ``shapes_val.json``. Read only (see ``make_shapes``)."""
    return make_shapes()


@pytest.fixture
def shapes_copy(shapes: Path, tmp_path: Path) -> Path:
    """A private copy of ``shapes``, for tests that damage it."""
    return Path(shutil.copytree(shapes, tmp_path / "data"))


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


@pytest.fixture
def no_results_folder(monkeypatch: pytest.MonkeyPatch):
    """Fits in this test write no results folder at their end (ResultsFolder.on_fit_end: about 10 s
    of matplotlib a fit on 2 cores), for tests of commands that train several runs and read none of
    their results folders (tests/training tests the folder)."""
    from detector.training.dashboard import ResultsFolder

    monkeypatch.setattr(ResultsFolder, "on_fit_end", lambda self, trainer, pl_module: None)


@pytest.fixture(scope="session")
def uninterrupted(shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: 2 epochs of ``train.py fit`` on the tiny config, never interrupted (the run
    the resume and checkpoint tests compare with, and the checkpoint the evaluation tests score)."""
    from helpers import cli, tiny_config

    root = tmp_path_factory.mktemp("uninterrupted")
    r = cli("fit", "--config", str(tiny_config(root, shapes, epochs=2)), cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


@pytest.fixture
def in_process_cli(monkeypatch: pytest.MonkeyPatch):
    """``detector train ARGS`` run in this process, returning (exit status, stderr): undo the
    global state a run sets (seed variables, deterministic algorithms, the command line)."""
    from helpers import detector

    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield lambda args: detector("train", *args)
    torch.use_deterministic_algorithms(deterministic)
