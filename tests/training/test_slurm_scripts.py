"""The SLURM batch scripts a user copies (``configs/slurm/*.sbatch``): run with a stand-in ``srun``
that prints what it was asked to start, each asks for a command ``detector train`` accepts, with
``--trainer.num_nodes`` and ``--trainer.devices`` equal to the ``#SBATCH`` nodes and tasks per node
(Lightning refuses a mismatch only once the job runs), no strategy flag, and resumes from
``last.ckpt`` when SLURM requeues it. The launch itself is ``tests/training/test_multinode.py``'s (slow)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, detector

SCRIPTS = sorted((REPO / "configs" / "slurm").glob("*.sbatch"))


def sbatch(script: Path, option: str) -> str | None:
    found = re.search(rf"^#SBATCH --{option}=(\S+)", script.read_text(), re.M)
    return found.group(1) if found else None


def srun_args(script: Path, tmp_path: Path, restart: int, last_ckpt: bool) -> list[str]:
    """What the script hands to ``srun`` in a job started ``restart`` times before, in a folder
    with or without a run's ``last.ckpt``."""
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "activate").write_text("")
    stub = tmp_path / "bin" / "srun"
    stub.parent.mkdir()
    stub.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    if last_ckpt:
        (tmp_path / "runs" / "lesson9_ssd" / "v1" / "checkpoints").mkdir(parents=True)
        (tmp_path / "runs" / "lesson9_ssd" / "v1" / "checkpoints" / "last.ckpt").write_bytes(b"")
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(tmp_path),
           "SLURM_RESTART_COUNT": str(restart)}
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_the_script_starts_detector_train_on_the_nodes_and_gpus_it_asks_for(script: Path, tmp_path: Path):
    args = srun_args(script, tmp_path, restart=0, last_ckpt=True)
    assert args[:3] == ["detector", "train", "fit"], args
    flags = dict(zip(args[3::2], args[4::2]))
    assert flags["--trainer.num_nodes"] == sbatch(script, "nodes")
    assert flags["--trainer.devices"] == sbatch(script, "ntasks-per-node") == sbatch(script, "gpus-per-node")
    assert "--ckpt_path" not in flags and not any("strategy" in a for a in args)
    assert (REPO / flags["--config"]).is_file()
    assert re.search(r"^srun detector train fit ", script.read_text(), re.M), "the srun line as the README shows it"

    code, err = detector(*args[1:], "--print_config")  # every flag is one detector train knows
    assert code == 0, err[-3000:]


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
@pytest.mark.parametrize("restart, last_ckpt, resumes", [(0, True, False), (1, True, True), (1, False, False)],
                         ids=["first-start", "requeued", "requeued-before-any-checkpoint"])
def test_a_requeued_job_resumes_from_last_ckpt(script: Path, tmp_path: Path, restart: int, last_ckpt: bool, resumes: bool):
    args = srun_args(script, tmp_path, restart, last_ckpt)
    assert (args[-2:] == ["--ckpt_path", "last"]) == resumes, shlex.join(args)
