"""``make gpu-check`` (``bench/gpu.py --ddp --json gpu-check.json``) where there is no GPU: it says so
and exits non-zero, writing nothing; its JSON file holds the figures a GPU machine is asked for; and
its CPU form (``--tiny``: the bench at toy sizes, the DDP check on two CPU processes) runs through to
that file, so the command cannot rot before the first GPU runs it. What needs CUDA cannot run here:
the bench at full size, NCCL, the GPUs' figures."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO

SCRIPT = REPO / "bench" / "gpu.py"


def gpu_check_command() -> list[str]:
    """The Makefile's gpu-check recipe, with this interpreter for $(PY)."""
    recipe = re.search(r"^gpu-check:.*\n\t(.+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    return [sys.executable if word == "$(PY)" else word for word in recipe.split()]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a GPU runs the real check")
def test_without_a_gpu_make_gpu_check_says_so_and_exits_non_zero(tmp_path: Path):
    command = gpu_check_command()
    assert command[1:] == [str(Path("bench/gpu.py")), "--ddp", "--json", "gpu-check.json"]
    r = run([command[0], str(SCRIPT), *command[2:]], cwd=tmp_path)
    assert r.returncode == 2 and "no GPU here" in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "gpu-check.json").exists()


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu_check"] = module  # its dataclass looks itself up there
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
        del sys.modules["bench_gpu_check"]
    return module


def test_the_json_file_leads_with_the_figures_asked_for(tmp_path: Path):
    gpu = load_bench()
    train = {"img_s": 812.5, "img_s_cudnn_benchmark": 901.0, "peak_memory_gib": 7.25, "matching_loss_share": 0.125,
             "decode_nms_share": 0.5, "step_ms": 78.8}
    result = {"device": "NVIDIA H100", "train": {"fp32": train, "16-mixed": None}, "passed": True, "ddp": {"passed": True}}
    gpu.write_json(tmp_path / "out" / "gpu-check.json", result)
    written = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert list(written)[0] == "summary"
    assert written["summary"] == {"fp32": {k: train[k] for k in ("img_s", "img_s_cudnn_benchmark", "peak_memory_gib",
                                                                 "matching_loss_share", "decode_nms_share")}}
    assert {k: written[k] for k in result} == result  # the whole result follows the summary


@pytest.mark.slow
def test_its_cpu_form_runs_the_bench_and_the_ddp_check_into_the_json_file(tmp_path: Path):
    out = tmp_path / "gpu-check.json"
    r = run([sys.executable, str(SCRIPT), "--tiny", "--threads", "1", "--precision", "fp32", "--ddp", "--json", str(out)], cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert any(line.startswith("DDP check, 2 x cpu, no strategy flag:") and line.endswith("PASS") for line in r.stdout.splitlines())
    written = json.loads(out.read_text())
    fp32 = written["summary"]["fp32"]
    assert fp32["img_s"] > 0 and 0 < fp32["matching_loss_share"] < 1 and 0 < fp32["decode_nms_share"] < 1
    assert fp32["peak_memory_gib"] is None  # a CPU has no CUDA allocator to ask
    ddp = written["ddp"]
    assert ddp["passed"] and ddp["devices"] == 2 and ddp["rank_differences"] == 0 and ddp["steps"] == 4
    assert ddp["val_images_eval"] == ddp["val_images"] == 7 and ddp["val_map_50_eval"] > 0
    assert written["checks"]["ddp"] and written["passed"]
