"""``detector compare`` on the tiny shapes data: two configs that differ, two seeds each, trained
once; a second call trains nothing; the tables, verdicts, JSON and picture; the sides it refuses
before training anything; which finished runs it reuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from detector.errors import ConfigError
from detector.research.compare import EVALUATION_FILE, parse_seeds, plan_sides
from detector.research.seed_runs import SOURCE_FILE
from helpers import detector, tiny_config, tiny_shapes


def two_configs(tmp_path: Path) -> tuple[Path, Path]:
    """``tiny.yaml`` (grids 2 and 1) and ``one_grid.yaml`` (the 1x1 grid alone), on the tiny shapes."""
    root = tiny_shapes(tmp_path / "shapes")
    a = tiny_config(tmp_path, root, epochs=2)
    b = tmp_path / "one_grid.yaml"
    b.write_text(a.read_text().replace("grids: [2, 1]", "grids: [1]"))
    assert b.read_text() != a.read_text()
    return a, b


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One comparison trained from nothing, then the same command again."""
    tmp = tmp_path_factory.mktemp("compare")
    a, b = two_configs(tmp)
    argv = ["compare", str(a), str(b), "--seeds", "2", "--split", "val", "--runs", str(tmp / "runs"), "--resamples", "200",
            "--name", "tiny"]
    out = {"tmp": tmp, "a": a, "b": b}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        from detector.training.dashboard import ResultsFolder  # no results folder at each fit's end (conftest's no_results_folder)

        mp.setattr(ResultsFolder, "on_fit_end", lambda self, trainer, pl_module: None)
        for call in ("first", "second"):
            code, err = detector(*argv)
            assert code == 0, err[-3000:]
            folder = tmp / "runs" / "compare" / "tiny"
            out[call] = json.loads((folder / "comparison.json").read_text())
            out[call + "_md"] = (folder / "comparison.md").read_text()
            out[call + "_kept"] = {p: p.stat().st_mtime_ns for p in (tmp / "runs").glob(f"*/v*/results/val/{EVALUATION_FILE}")}
    return out


@pytest.mark.slow
def test_each_run_is_trained_once_and_reused_by_the_next_call(compared: dict):
    runs = compared["tmp"] / "runs"
    names = sorted(p.name for p in runs.iterdir() if p.name != "compare")
    assert names == ["one_grid_s0", "one_grid_s1", "tiny_s0", "tiny_s1"]
    for name in names:
        assert sorted(p.name for p in (runs / name).iterdir()) == ["v1"], name  # one version: never trained again
        source = json.loads((runs / name / "v1" / SOURCE_FILE).read_text())
        assert source["seed"] == int(name[-1]) and source["epochs"] is None
        config = yaml.safe_load((runs / name / "v1" / "config.yaml").read_text())
        assert config["seed_everything"] == config["data"]["seed"] == source["seed"]  # the seed orders the data too
        assert (runs / name / "v1" / "checkpoints" / "best.ckpt").is_file()
    assert compared["first"]["trained"] == 4 and compared["second"]["trained"] == 0
    first, second = compared["first"], compared["second"]
    assert [r["run"] for s in first["sides"] for r in s["runs"]] == [r["run"] for s in second["sides"] for r in s["runs"]]
    assert first["metrics"] == second["metrics"]  # the same runs, images and resampling seed: the same numbers
    assert len(compared["first_kept"]) == 4 and compared["second_kept"] == compared["first_kept"]  # not evaluated again


@pytest.mark.slow
def test_tables_verdicts_json_and_picture(compared: dict):
    result, md = compared["second"], compared["second_md"]
    assert result["split"] == "val" and result["images"] == 7 and result["seeds"] == [[0, 1], [0, 1]]
    assert set(result["metrics"]) == {"map", "map_50", "map_75"}
    for metric, c in result["metrics"].items():
        per_seed = [s["per_seed"] for s in c["sides"]]
        for side, runs in zip(result["sides"], per_seed):  # each run's value is the evaluator's (pycocotools) number
            assert runs == pytest.approx([r["metrics"][metric] for r in side["runs"]], abs=1e-6)
        d = c["differences"][0]
        assert d["difference"] == pytest.approx(sum(per_seed[1]) / 2 - sum(per_seed[0]) / 2)
        assert d["low"] <= d["high"]
        verdict = result["verdicts"][metric][0]
        assert verdict.startswith(("B better than A", "B worse than A", "no difference shown between B and A"))
        assert f"{d['difference']:+.3f}, 95 % CI {d['low']:+.3f} to {d['high']:+.3f}" in verdict
        assert verdict in md
    for title in ("COCO mAP@[.5:.95]", "mAP@0.5", "mAP@0.75"):
        assert f"\n{title}\n" in md
    assert md.count("| A | ") == 3 and md.count("| B | ") == 3
    picture = compared["tmp"] / "runs" / "compare" / "tiny" / "comparison.png"
    with Image.open(picture) as image:
        assert image.width > 1000 and image.height > 600


def test_refusals_before_anything_is_trained(tmp_path: Path):
    a, b = two_configs(tmp_path)
    runs = tmp_path / "runs"
    cases = [
        ([str(a)], "two sides or more"),
        ([str(a), str(tmp_path / "missing.yaml")], "missing.yaml: neither a config file"),
        ([str(a), f"{b}@3-5", "--seeds", "2"], "the same number of seeds"),
        ([str(a), str(b)], "no test split"),  # the tiny data has train and val only
        ([str(a), f"{b}@2-1"], "seeds '2-1'"),
    ]
    for argv, message in cases:
        code, err = detector("compare", *argv, "--runs", str(runs))
        assert code == 2, (argv, err)
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not runs.exists()


def test_seed_lists():
    assert parse_seeds("3-5") == [3, 4, 5]
    assert parse_seeds("0,2,7-8") == [0, 2, 7, 8]
    for bad in ("", "a", "1,1", "3-", "5-3"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def finished(runs: Path, name: str, config: Path, seed: int, epochs: int | None = None) -> Path:
    """A run folder as a finished ``compare`` run leaves it (no training: the files alone)."""
    from detector.research.seed_runs import file_sha256

    folder = runs / name / "v1"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "best.ckpt").write_bytes(b"")
    (folder / "config.yaml").write_text(f"seed_everything: {seed}\ntrainer: {{max_epochs: 2}}\ndata: {{seed: {seed}}}\n")  # what the reuse reads
    source = {"config": str(config), "sha256": file_sha256(config), "seed": seed, "epochs": epochs}
    (folder / SOURCE_FILE).write_text(json.dumps(source))
    return folder


def test_which_finished_runs_are_reused(tmp_path: Path):
    a, b = two_configs(tmp_path)
    runs = tmp_path / "runs"
    finished(runs, "tiny_s0", a, 0)
    finished(runs, "tiny_s1", a, 1)
    finished(runs, "one_grid_s0", b, 0, epochs=5)  # another length
    (finished(runs, "one_grid_s1", b, 1) / SOURCE_FILE).unlink()  # killed before it finished
    stale = runs / "tiny_s1" / "v2"  # a newer version, trained with another data seed
    finished(tmp_path / "other", "tiny_s1", a, 1).rename(stale)
    (stale / "config.yaml").write_text("seed_everything: 1\ntrainer: {max_epochs: 2}\ndata: {seed: 0}\n")

    def planned(*given: str, **kw) -> list[list[str | None]]:
        return [[str(r.run.path.relative_to(runs)) if r.run else None for r in s.runs] for s in plan_sides(given, 2, root=runs, **kw)]

    assert planned(str(a), str(b)) == [["tiny_s0/v1", "tiny_s1/v1"], [None, None]]
    assert planned(str(a), str(b), epochs=5) == [[None, None], ["one_grid_s0/v1", None]]
    assert planned(str(a), f"{a}@1,0") == [["tiny_s0/v1", "tiny_s1/v1"], ["tiny_s1/v1", "tiny_s0/v1"]]
    # the same bytes under another path are the same config; edited bytes are another
    copy = tmp_path / "elsewhere" / "tiny.yaml"
    copy.parent.mkdir()
    copy.write_text(a.read_text())
    assert planned(str(copy), str(b))[0] == ["tiny_s0/v1", "tiny_s1/v1"]
    copy.write_text(a.read_text() + "# edited\n")
    assert planned(str(copy), str(b))[0] == [None, None]
    # a run folder or a run's name is a side: that run for its own seed, its config.yaml for the others
    assert planned(str(runs / "tiny_s1" / "v1"), str(b)) == [[None, "tiny_s1/v1"], [None, None]]
    assert planned("tiny_s0", str(b)) == [["tiny_s0/v1", None], [None, None]]
    with pytest.raises(ConfigError, match="trained with seed_everything 1, not one of the seeds 0, 5"):
        plan_sides([str(runs / "tiny_s1" / "v1@0,5"), str(b)], root=runs)


def test_a_training_that_fails_stops_the_comparison_and_leaves_no_folder(tmp_path: Path):
    a, b = two_configs(tmp_path)
    broken = tmp_path / "broken.yaml"
    broken.write_text(a.read_text().replace("backbone: resnet18", "backbone: resnet0"))
    runs = tmp_path / "runs"
    code, err = detector("compare", str(broken), str(b), "--seeds", "1", "--split", "val", "--runs", str(runs))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"training {runs / 'broken_s0' / 'v1'} failed (exit status 2" in err
    assert [p for p in runs.rglob("*") if p.is_dir() and p.name.startswith("v")] == []  # nothing trained, nothing left
