"""Bad configurations (an unknown backbone, a grid the network cannot make, an unknown freeze target,
a batch larger than the split, a missing folder or JSON) are refused before training in one line
naming the key, exit status 2, nothing left behind; a recipe naming a missing layer group is
refused in Python too. (Were test_reliability.py's.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from detector.training.recipe import Stage
from helpers import module, tiny_config


@pytest.mark.parametrize(
    "override, message",
    [
        ("--model.init_args.backbone=resnet99", r"unknown backbone 'resnet99'; known backbones: resnet18, resnet34"),
        ("--model.init_args.anchors.grids=[5,1]",
         r"model\.init_args\.anchors\.grids \[5, 1\]: the SSD head cannot make a 5x5 grid from 64 px images .*\[8, 4, 2, 1\]"),
        ("--model.init_args.stages=[{epochs: 1, freeze: head}]",
         r"Parser key \"freeze\": Expected a typing\.Literal\['body', 'groups_0', 'none'\]\. Got value: head"),
        ("--data.batch_size=17",
         r"data\.batch_size 17 is larger than the train split \(16 images in .*shapes_train\.json\): set data\.batch_size to at most 16"),
        ("--data.image_dir=/no/such/folder", r"data\.image_dir: /no/such/folder is not a folder"),
        ("--data.train_json=/no/such.json", r"data\.train_json: /no/such\.json does not exist"),
    ],
    ids=["backbone", "grids", "freeze", "batch_size", "image_dir", "train_json"],
)
def test_bad_configuration_is_refused_before_training_in_one_line(shapes: Path, tmp_path: Path, in_process_cli, override: str, message: str):
    """Each mistake ends the command with exit status 2 and one line naming the key: no traceback."""
    config = tiny_config(tmp_path, shapes)
    code, err = in_process_cli(["fit", "--config", str(config), override])
    assert code == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("detector train: ")]
    assert len(lines) == 1 and re.search(message, lines[0]), err[-3000:]
    assert "Traceback" not in err
    assert not (tmp_path / "runs" / "tiny").exists() or not any((tmp_path / "runs" / "tiny").iterdir())  # nothing left


def test_recipe_naming_a_missing_group_is_refused_in_python_too():
    """Outside the CLI (a Stage built in Python, a checkpoint's hparams) no Literal check runs."""
    with pytest.raises(ValueError, match=r"stages\[1\]\.freeze = 'head' names no frozen layer groups: use one of body, groups_0, none"):
        module([Stage(1, "body"), Stage(1, "head")])

