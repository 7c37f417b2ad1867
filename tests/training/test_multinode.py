"""Several machines, proven on one: two "nodes" on loopback, started by torchrun (a c10d
rendezvous, gloo) and as SLURM's ``srun`` starts them, each running ``detector train fit`` on the
tiny shapes data (16 + 7 images at 64 px, ResNet-18 without pretrained weights, one process per
node on the CPU) through a frozen stage and an unfrozen one, with no strategy flag.

What a user renting machines relies on, each a check that fails when it breaks: every rank holds
the same weights at every step (a parameter DDP does not synchronise drifts apart at its first
step after the unfreeze); the logged mAP is a one-process evaluation's of the same checkpoint;
checkpoints and logs are written once, into one run folder; Lightning prints no warning about
logging under DDP; a resume from ``last.ckpt`` continues bit for bit; the SLURM launch trains the
same weights as the torchrun one. The launchers are in ``tests/multinode.py``.
"""

from __future__ import annotations

import csv
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from detector.training.plan import FIND_UNUSED
from helpers import evaluate, final_weights, run_path, tiny_config, tiny_shapes
from multinode import SYNC_DIST_WARNING, differences, rank_records, slurm_nodes, torchrun_nodes

pytestmark = pytest.mark.slow

# The command of the README's multi-machine section, on the tiny config: one process per node.
NODES = ["--trainer.num_nodes", "2", "--trainer.devices", "1"]
CHOSEN = f"trainer.strategy: {FIND_UNUSED} (model.init_args.stages[0] freezes layer groups"


def watch(out: Path) -> list[str]:
    """The arguments that load :class:`multinode.RankDigests` into the launched processes."""
    return ["--trainer.callbacks+=tests.multinode.RankDigests", f"--trainer.callbacks.init_args.out={out}"]


@dataclass
class Launch:
    root: Path  # the config's folder and the launch's working folder; the run is root/runs/tiny/v1
    config: Path
    outputs: list[str]  # each node's (or task's) output
    listing: list[str]  # root's files when the launch ended, relative to it
    full: Path  # a copy of the run folder when the launch ended


def launched(root: Path, config: Path, results: list[tuple[int, str]]) -> Launch:
    assert [code for code, _ in results] == [0] * len(results), "\n\n".join(out[-4000:] for _, out in results)
    listing = sorted(str(p.relative_to(root)) for p in root.rglob("*") if "digests" not in p.parts and p.suffix != ".log")
    full = Path(shutil.copytree(run_path(root), root / "full"))
    return Launch(root, config, [out for _, out in results], listing, full)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def two_nodes(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Launch:
    """2 epochs (the body frozen, then trained) on two torchrun nodes; the run folder as it stood
    when epoch 1 started is kept in root/snapshot for the resume."""
    root = tmp_path_factory.mktemp("torchrun")
    config = tiny_config(root, tiny, epochs=2)
    snapshot = ["--trainer.callbacks+=tests.multinode.SnapshotRun", f"--trainer.callbacks.init_args.dest={root / 'snapshot'}"]
    results = torchrun_nodes(["fit", "--config", str(config), *NODES, *watch(root / "digests"), *snapshot], cwd=root)
    return launched(root, config, results)


def csv_rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(run / "csv" / "metrics.csv")))


def assert_ranks_agree(root: Path) -> list[dict]:
    """Every parameter after every step, and every parameter and buffer at each epoch's end, the
    same on both ranks; returns the records."""
    records = rank_records(root)
    assert differences(records) == []
    return records


def test_two_nodes_hold_the_same_weights_through_the_unfreeze_with_no_strategy_flag(two_nodes: Launch):
    records = assert_ranks_agree(two_nodes.root / "digests")
    steps = records[0]["steps"]
    assert [s["epoch"] for s in steps] == [0, 0, 1, 1]  # 16 images / 2 ranks / batch 4
    frozen = set(steps[-1]["trained"]) - set(steps[0]["trained"])  # what the second stage unfroze
    assert frozen and all(k.startswith("model.backbone.") for k in frozen), sorted(frozen)[:5]
    # The check has teeth: the frozen body stayed as it was in epoch 0 and trained in epoch 1.
    assert all(steps[0]["params"][k] == steps[1]["params"][k] for k in frozen)
    assert all(steps[1]["params"][k] != steps[3]["params"][k] for k in frozen)
    assert [s["epoch"] for s in records[0]["epochs"]] == [0, 1]

    ranks = [re.search(r"Initializing distributed: GLOBAL_RANK: (\d), MEMBER: \d/2", out) for out in two_nodes.outputs]
    assert sorted(int(r.group(1)) for r in ranks if r) == [0, 1]
    rank0 = two_nodes.outputs[[int(r.group(1)) for r in ranks].index(0)]  # c10d ranks the nodes as they join
    assert CHOSEN in rank0 and sum(CHOSEN in out for out in two_nodes.outputs) == 1  # said once, by rank 0
    for out in two_nodes.outputs:
        assert SYNC_DIST_WARNING not in out, out[-3000:]


def test_two_nodes_write_checkpoints_and_logs_once_into_one_run_folder(two_nodes: Launch):
    run = [p for p in two_nodes.listing if p.startswith("runs/")]
    assert {p for p in run if p.count("/") == 2} == {"runs/tiny/v1"} | {p for p in run if p.startswith("runs/tiny/.job-")}
    assert len([p for p in run if p.startswith("runs/tiny/.job-")]) == 1
    outside = [p for p in two_nodes.listing if not p.startswith(("runs", "tiny.yaml", "snapshot", "full"))]
    assert outside == [], outside  # nothing in the config's folder (no checkpoints/, csv/, lightning_logs/)
    v1 = {p[len("runs/tiny/v1/"):] for p in run if p.startswith("runs/tiny/v1/")}
    assert {"config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "csv/metrics.csv", "results/val/metrics.json"} <= v1
    rows = csv_rows(two_nodes.full)
    assert [r["epoch"] for r in rows if r.get("val/map_50")] == ["0", "1"]  # one row per validation, not one per rank
    steps = [r["step"] for r in rows if r.get("train/loss_step")]
    assert len(steps) == len(set(steps)) == 4


def test_two_node_val_map_equals_a_one_process_evaluation_of_its_checkpoint(two_nodes: Launch, tmp_path: Path):
    logged = [r for r in csv_rows(two_nodes.full) if r.get("val/map_50")][-1]
    metrics = evaluate("--checkpoint", str(two_nodes.full / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "eval"),
                       "--batch-size", "4", "--workers", "0")
    assert metrics["images"] == 7 and float(logged["val/images"]) == 7  # every image once, over both ranks
    for key in ("map", "map_50", "map_75", "voc_map_50"):
        assert metrics[key] == pytest.approx(float(logged[f"val/{key}"]), rel=1e-6), key
    assert metrics["map_50"] > 0  # two zeros would be equal too


def test_two_node_resume_from_last_ckpt_continues_bit_for_bit(two_nodes: Launch):
    """The run folder as a kill at the start of epoch 1 leaves it, resumed on two nodes with
    ``--ckpt_path last``: the same weights and the same logs as the uninterrupted run."""
    run = run_path(two_nodes.root)
    shutil.rmtree(run)
    shutil.copytree(two_nodes.root / "snapshot", run)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    args = ["fit", "--config", str(two_nodes.config), *NODES, "--ckpt_path", "last", *watch(two_nodes.root / "digests-resumed")]
    results = torchrun_nodes(args, cwd=two_nodes.root)
    assert [code for code, _ in results] == [0, 0], "\n\n".join(out[-4000:] for _, out in results)
    assert_ranks_agree(two_nodes.root / "digests-resumed")
    assert sorted(p.name for p in run.parent.iterdir() if not p.name.startswith(".")) == ["v1"]
    full, resumed = final_weights(two_nodes.full / "checkpoints" / "last.ckpt"), final_weights(run / "checkpoints" / "last.ckpt")
    assert full.keys() == resumed.keys()
    assert [k for k in full if not torch.equal(full[k], resumed[k])] == []
    assert csv_rows(run) == csv_rows(two_nodes.full)  # epoch 0's rows kept, epoch 1's logged again identically
    for _, out in results:
        assert SYNC_DIST_WARNING not in out, out[-3000:]


def test_two_tasks_started_as_srun_starts_them_train_what_torchrun_trains(two_nodes: Launch, tiny: Path, tmp_path: Path):
    """SLURM's environment, no srun: each process takes its rank, node and world size from it,
    both share one run folder (rank 0 reserves it, under the job id), and the weights are the
    torchrun run's, bit for bit (same seed, same world size: the launcher changes nothing)."""
    config = tiny_config(tmp_path, tiny, epochs=2)
    results = slurm_nodes(["fit", "--config", str(config), *NODES, *watch(tmp_path / "digests")], cwd=tmp_path)
    slurm = launched(tmp_path, config, results)
    assert_ranks_agree(tmp_path / "digests")
    for rank, out in enumerate(slurm.outputs):
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in out, out[-3000:]
        assert SYNC_DIST_WARNING not in out, out[-3000:]
    assert CHOSEN in slurm.outputs[0] and CHOSEN not in slurm.outputs[1]
    run = [p for p in slurm.listing if p.startswith("runs/tiny/") and p.count("/") == 2]
    assert len(run) == 2 and "runs/tiny/v1" in run and any(p.startswith("runs/tiny/.job-") for p in run), run
    ours, theirs = final_weights(slurm.full / "checkpoints" / "last.ckpt"), final_weights(two_nodes.full / "checkpoints" / "last.ckpt")
    assert [k for k in theirs if not torch.equal(ours[k], theirs[k])] == []
