"""Distributed runs the way a cluster starts them, for ``tests/training/test_multinode.py``: two "nodes" on
loopback under torchrun (a c10d rendezvous) or under SLURM's environment, the callbacks those runs
load (``--trainer.callbacks+=tests.multinode.RankDigests``), and the comparisons the tests make.

* :class:`RankDigests`: each process writes a digest of every parameter after every training step
  and of every parameter and buffer at each epoch's end, so the tests can prove that every rank
  holds the same weights (a parameter DDP does not synchronise drifts apart at its first step).
* :class:`SnapshotRun`: copies the run folder as it stands when a given epoch starts: what a run
  killed there leaves behind, for a resume that must continue bit for bit.
* :func:`torchrun_nodes`, :func:`slurm_nodes`: start the two nodes' processes and wait for them.
* :func:`one_machine_check`: the same checks over several devices of one machine, Lightning
  starting the processes: ``make gpu-check`` runs it on every GPU (``python tests/multinode.py
  --accelerator gpu --devices N``), ``tests/bench/test_gpu_check.py`` on two CPU processes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
# What Lightning prints when an epoch-level value is logged without sync_dist under DDP.
SYNC_DIST_WARNING = "sync_dist=True)` when logging on epoch level in distributed setting"


def digest(tensor: torch.Tensor) -> str:
    """A short hash of a tensor's bytes: equal digests, bit-identical tensors."""
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return hashlib.sha1(raw).hexdigest()[:16]


class RankDigests(L.Callback):
    """Writes ``out/rank{R}.json`` when training ends on process R: ``steps``, one entry per training
    step (epoch, global step, a digest of every parameter, the names of those that required a
    gradient), ``epochs``, one per epoch's end, after its validation (a digest of every parameter
    and buffer of the module's ``state_dict``: what its checkpoint holds), and on a GPU the peak
    memory the process allocated."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.steps: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({
            "epoch": trainer.current_epoch, "step": trainer.global_step,
            "params": {k: digest(p) for k, p in pl_module.named_parameters()},
            "trained": sorted(k for k, p in pl_module.named_parameters() if p.requires_grad),
        })

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.append({"epoch": trainer.current_epoch, "state": {k: digest(v) for k, v in pl_module.state_dict().items()}})

    def on_train_end(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "steps": self.steps, "epochs": self.epochs,
                  "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class SnapshotRun(L.Callback):
    """On process 0, when epoch ``epoch`` starts (last.ckpt of the epoch before written, the logs
    flushed with it), copies the run folder to ``dest``."""

    def __init__(self, dest: str, epoch: int = 1) -> None:
        self.dest, self.epoch = Path(dest), epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and trainer.is_global_zero:
            shutil.copytree(trainer.default_root_dir, self.dest)


def rank_records(out: Path, world_size: int = 2) -> list[dict[str, Any]]:
    """What :class:`RankDigests` wrote, by rank."""
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world_size)]
    assert [(r["rank"], r["world_size"]) for r in records] == [(r, world_size) for r in range(world_size)]
    return records


def differences(records: list[dict[str, Any]]) -> list[str]:
    """Every (step or epoch end, tensor) where a rank's digest differs from rank 0's; ``[]`` when all agree."""
    first, found = records[0], []
    for other in records[1:]:
        assert len(other["steps"]) == len(first["steps"]) and len(other["epochs"]) == len(first["epochs"])
        for a, b in zip(first["steps"], other["steps"]):
            found += [f"rank {other['rank']}, step {a['step']}: {k}" for k in a["params"] if a["params"][k] != b["params"].get(k)]
        for a, b in zip(first["epochs"], other["epochs"]):
            found += [f"rank {other['rank']}, end of epoch {a['epoch']}: {k}" for k in a["state"] if a["state"][k] != b["state"].get(k)]
    return found


def free_port(low: int | None = None, high: int | None = None) -> int:
    """A TCP port nothing listens on: any (the system's pick), or the first free one in ``[low, high)``."""
    for port in range(low, high) if low is not None else [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port in [{low}, {high})")


def environment(**extra: str) -> dict[str, str]:
    """This environment for a launched process: the repository importable first, one torch thread
    (two processes share a small CPU), offline wandb, and no launcher variables of this process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_")) and k not in (
        "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "DETECTOR_RUN")}
    return {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **extra}


def wait_all(procs: list[subprocess.Popen], logs: list[Path], timeout: float) -> list[tuple[int, str]]:
    """Wait for every process (killing them all past ``timeout`` seconds); (exit status, output) each."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
    return [(p.returncode, log.read_text()) for p, log in zip(procs, logs)]


def _start(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as f:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)


def torchrun_nodes(args: list[str], cwd: Path, nodes: int = 2, timeout: float = 600) -> list[tuple[int, str]]:
    """``torchrun --nnodes N --nproc-per-node 1 ... -m detector train ARGS`` once per node, all on
    loopback, meeting at a c10d rendezvous on a free port (``--node-rank`` is for the static
    rendezvous only: c10d gives the ranks in the order the nodes join). Each node's output goes to
    ``cwd/node{i}.log``; returns (exit status, output) per node."""
    port, run_id = free_port(), f"test{os.getpid()}{time.monotonic_ns() % 10**6}"
    command = [
        str(TORCHRUN), "--nnodes", str(nodes), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id, "-m", "detector", "train", *args,
    ]
    logs = [cwd / f"node{i}.log" for i in range(nodes)]
    procs = [_start(command, cwd, environment(), log) for log in logs]
    return wait_all(procs, logs, timeout)


def slurm_environment(rank: int, tasks: int, job_id: str) -> dict[str, str]:
    """What ``srun`` sets for task ``rank`` of a job of ``tasks`` tasks, one per node, as Lightning's
    ``SLURMEnvironment`` reads it: world size, ranks, node, job id and name (not ``bash`` or
    ``interactive``, which mean "not an srun step"), the node list (its first node is the main
    address). No MASTER_PORT: Lightning derives it from the job id's last four digits + 15000."""
    return {
        "SLURM_NTASKS": str(tasks), "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": str(tasks),
        "SLURM_PROCID": str(rank), "SLURM_LOCALID": "0", "SLURM_NODEID": str(rank),
        "SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": "detector", "SLURM_STEP_ID": "0",
        "SLURM_NODELIST": "127.0.0.1", "SLURM_JOB_NODELIST": "127.0.0.1",
    }


def slurm_nodes(args: list[str], cwd: Path, tasks: int = 2, timeout: float = 600) -> list[tuple[int, str]]:
    """``detector train ARGS`` as ``srun --nodes N --ntasks-per-node 1`` starts it: one process per
    task, each with :func:`slurm_environment` (the job id chosen so that the port Lightning derives
    from it is free). Output in ``cwd/task{i}.log``; returns (exit status, output) per task."""
    port = free_port(15000, 25000)
    job_id = f"{os.getpid() % 900 + 100}{port - 15000:04d}"
    command = [sys.executable, "-m", "detector", "train", *args]
    logs = [cwd / f"task{i}.log" for i in range(tasks)]
    procs = [_start(command, cwd, environment(**slurm_environment(r, tasks, job_id)), log) for r, log in enumerate(logs)]
    return wait_all(procs, logs, timeout)


# ------------------------------------------------------------------- one machine, several devices


def one_machine_check(accelerator: str, devices: int, root: Path) -> dict[str, Any]:
    """``detector train fit`` over ``devices`` devices of this machine (Lightning starts the
    processes; no strategy flag) on tiny shapes data through a frozen and an unfrozen stage, then
    ``detector eval`` of its last.ckpt in one process. What ``make gpu-check`` runs on a machine's
    GPUs (``accelerator`` gpu) and ``tests/bench/test_gpu_check.py`` on two CPU processes. Returns what
    it found, ``passed`` when every rank held the same weights at every step, the logged val mAP is
    the one-process evaluation's, the strategy was chosen and said once, and Lightning printed no
    warning about logging under DDP."""
    from detector.data.shapes import generate_shapes
    from helpers import run_path, tiny_config

    root = Path(root)
    generate_shapes(root / "data", n_train=8 * devices, n_val=4 * devices - 1, image_size=64, seed=1, workers=1)  # every rank some images
    config = tiny_config(root, root / "data", epochs=2)
    args = ["fit", "--config", str(config), "--trainer.accelerator", accelerator, "--trainer.devices", str(devices),
            "--trainer.callbacks+=tests.multinode.RankDigests", f"--trainer.callbacks.init_args.out={root / 'digests'}"]
    if accelerator != "cpu":  # as the configs train on a GPU: cuDNN's fastest kernels, not only deterministic ones
        args += ["--trainer.deterministic", "false"]
    started = time.monotonic()
    fit = subprocess.run([sys.executable, "-m", "detector", "train", *args], cwd=root, env=environment(),
                         capture_output=True, text=True, timeout=1200)
    result: dict[str, Any] = {"accelerator": accelerator, "devices": devices, "train_images": 8 * devices,
                              "val_images": 4 * devices - 1, "fit_wall_s": round(time.monotonic() - started, 1),
                              "fit_returncode": fit.returncode, "passed": False}
    output = fit.stdout + fit.stderr
    if fit.returncode != 0:
        result["error"] = output[-3000:]
        return result
    records = rank_records(root / "digests", devices)
    found = differences(records)
    result.update(steps=len(records[0]["steps"]), rank_differences=len(found), first_differences=found[:5],
                  strategy_chosen_once=output.count("trainer.strategy: ddp_find_unused_parameters_true (") == 1,
                  sync_dist_warning=SYNC_DIST_WARNING in output,
                  peak_memory_gib=[r.get("peak_memory_gib") for r in records])
    run = run_path(root)
    with (run / "csv" / "metrics.csv").open() as f:
        logged = [r for r in csv.DictReader(f) if r.get("val/map_50")][-1]
    device = "cuda" if accelerator != "cpu" else "cpu"
    evaluation = subprocess.run(
        [sys.executable, "-m", "detector", "eval", "--checkpoint", str(run / "checkpoints" / "last.ckpt"), "--out", str(root / "eval"),
         "--batch-size", "4", "--workers", "0", "--device", device], cwd=root, env=environment(), capture_output=True, text=True, timeout=600)
    if evaluation.returncode != 0:
        result["error"] = (evaluation.stdout + evaluation.stderr)[-3000:]
        return result
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    tolerance = 1e-6 if device == "cpu" else 1e-4  # on a GPU the batches' make-up may change cuDNN's kernels
    result.update(val_map_50_logged=float(logged["val/map_50"]), val_map_50_eval=metrics["map_50"],
                  val_map_logged=float(logged["val/map"]), val_map_eval=metrics["map"], val_images_logged=float(logged["val/images"]),
                  val_images_eval=metrics["images"], map_tolerance=tolerance)
    same_map = all(abs(metrics[k] - float(logged[f"val/{k}"])) <= tolerance * max(abs(metrics[k]), 1e-12) for k in ("map", "map_50"))
    result["passed"] = bool(found == [] and same_map and metrics["images"] == result["val_images"] == float(logged["val/images"])
                            and result["strategy_chosen_once"] and not result["sync_dist_warning"] and metrics["map_50"] > 0)
    return result


def main() -> None:
    """``python tests/multinode.py --accelerator gpu --devices N --out DIR``: :func:`one_machine_check`,
    printed as one JSON line; exit status 1 when it did not pass."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--accelerator", default="gpu", choices=("gpu", "cpu"))
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--out", help="the working folder (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    if args.out:
        result = one_machine_check(args.accelerator, args.devices, Path(args.out))
    else:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
            result = one_machine_check(args.accelerator, args.devices, Path(folder))
    print(json.dumps(result))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
