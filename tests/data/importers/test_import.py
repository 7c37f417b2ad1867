"""detector data import: every layout and format gives the same records; bad input is named in one
line; the carved split is seeded and stratified; the written config parses and trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import import_files
from conftest import shared_path
from detector.data.importers.importer import import_dataset
from detector.data.importers.splits import plan_splits
from detector.data.records import load_records
from detector.errors import BadRecordError, MissingFileError
from detector.training.config import read_config
from helpers import detector


def imported(out: Path) -> tuple[dict[str, list], dict[str, str]]:
    """The written JSONs as {stem: sorted [(class, x0, y0, x1, y1)]} and {stem: split}, read back by
    load_records against the image_dir the config names."""
    image_dir = yaml.safe_load((out / "config.yaml").read_text())["data"]["image_dir"]
    boxes, splits = {}, {}
    for path in sorted(out.glob(f"{out.name}_*.json")):
        split = path.stem.rsplit("_", 1)[1]
        loaded = load_records(path, image_dir)
        for r in loaded.records:
            stem = r.path.stem.lower()
            boxes[stem] = sorted((loaded.class_names[l], *map(float, b)) for l, b in zip(r.labels, r.boxes))
            splits[stem] = split
    return boxes, splits


def assert_truth(out: Path, splits_kept: bool) -> None:
    """Boxes equal to TRUTH within half a pixel (VOC: after its +-1), each image once; the source's
    splits kept when it has them."""
    boxes, splits = imported(out)
    assert sorted(boxes) == [t[0] for t in import_files.TRUTH]
    for stem, _, _, _, split, truth in import_files.TRUTH:
        assert [b[0] for b in boxes[stem]] == [t[0] for t in sorted(truth)], stem
        got, want = (np.array([b[1:] for b in bs], dtype=float).reshape(-1, 4) for bs in (boxes[stem], sorted(truth)))
        np.testing.assert_allclose(got, want, atol=0.5, err_msg=stem)
        if splits_kept:
            assert splits[stem] == split, stem


@pytest.mark.parametrize("layout", ["devkit", "devkit_no_sets", "one_folder", "two_folders", "per_split", "no_size"])
def test_voc_layouts_import_to_the_same_records(tmp_path: Path, layout: str):
    root = import_files.voc(tmp_path / "src", "one_folder" if layout == "no_size" else layout, sizes=layout != "no_size")
    done = import_dataset(root, tmp_path / "pets")
    assert_truth(tmp_path / "pets", splits_kept=layout in ("devkit", "per_split"))
    assert done.source.class_names == ["cat", "dog"] and not done.source.problems
    if layout == "no_size":
        assert "8 XML(s) without a usable <size>: the size was read from the image" in done.summary
    if layout == "per_split":  # one image_dir for every split: file names relative to the common root
        assert done.image_dir == (tmp_path / "src").absolute()
        assert json.loads((tmp_path / "pets" / "pets_val.json").read_text())["images"][0]["file_name"] == "valid/f.jpg"


@pytest.mark.parametrize("layout", ["ultralytics", "roboflow", "bare"])
def test_yolo_imports_to_the_same_records(tmp_path: Path, layout: str):
    done = import_dataset(import_files.yolo(tmp_path / "src", layout), tmp_path / "pets")
    assert done.source.format == "yolo" and done.source.class_names == ["cat", "dog"]
    assert_truth(tmp_path / "pets", splits_kept=layout != "bare")


def test_coco_json_file_with_its_image_folder(tmp_path: Path):
    root = import_files.coco(tmp_path / "src")
    done = import_dataset(root / "train" / "_annotations.coco.json", tmp_path / "pets", images=root / "train", test_fraction=0.2)
    assert [len(json.loads(p.read_text())["images"]) for p in done.jsons.values()] == [3, 1, 1]


def test_coco_imports_to_the_same_records(tmp_path: Path):
    done = import_dataset(import_files.coco(tmp_path / "src"), tmp_path / "pets")
    assert done.source.format == "coco" and done.source.class_names == ["cat", "dog"]  # Roboflow's "pets" left out
    assert_truth(tmp_path / "pets", splits_kept=True)


def test_coco_names_every_missing_image_file(tmp_path: Path):
    root = import_files.coco(tmp_path / "src")
    (root / "train" / "a.jpg").unlink()
    (root / "train" / "d.jpeg").unlink()
    with pytest.raises(MissingFileError) as info:
        import_dataset(root, tmp_path / "pets")
    assert "train/_annotations.coco.json: 2 of its 5 image files are not in" in str(info.value)
    assert "a.jpg, d.jpeg" in str(info.value)


def _voc_bad(root: Path, damage: str) -> tuple[Path, str]:
    import_files.voc(root, "one_folder")
    if damage == "unknown_class":
        import_files.voc_xml(root / "e.xml", "e.jpg", (48, 36), [("bird", 20, 10, 40, 30)])
        return root / "e.xml", "object 0 (bird): class 'bird' is not one of ['cat', 'dog']"
    if damage == "box_outside":
        import_files.voc_xml(root / "e.xml", "e.jpg", (48, 36), [("cat", 60, 10, 70, 30)])
        return root / "e.xml", "object 0 (cat): box outside the image"
    if damage == "malformed_xml":
        (root / "e.xml").write_text("<annotation><object>")
        return root / "e.xml", "not well-formed XML"
    if damage == "xml_without_image":
        import_files.voc_xml(root / "z.xml", "z.jpg", (48, 36), [("cat", 1, 1, 5, 5)])
        return root / "z.xml", "no image for it in"
    (root / "e.jpg").write_bytes(b"not an image")  # undecodable
    return root / "e.jpg", "image cannot be decoded"


def _yolo_bad(root: Path, damage: str) -> tuple[Path, str]:
    import_files.yolo(root)
    label = root / "labels" / "train" / "e.txt"
    if damage == "malformed_line":
        label.write_text("0 0.5 0.5 0.4 0.5\n0 0.5 0.5\n")
        return label, "line 2: expected 'class cx cy w h'"
    if damage == "unknown_class":
        label.write_text("7 0.5 0.5 0.4 0.5\n")
        return label, "line 1: class 7 is not one of the 2 classes (0..1)"
    if damage == "box_outside":
        label.write_text("0 1.7 0.5 0.2 0.2\n")
        return label, "line 1: box outside the image"
    label = root / "labels" / "train" / "zz.txt"  # label_without_image
    label.write_text("0 0.5 0.5 0.2 0.2\n")
    return label, "a label file without an image"


@pytest.mark.parametrize("fmt, damage", [
    ("voc", "unknown_class"), ("voc", "box_outside"), ("voc", "malformed_xml"), ("voc", "xml_without_image"),
    ("voc", "undecodable"), ("yolo", "malformed_line"), ("yolo", "unknown_class"), ("yolo", "box_outside"),
    ("yolo", "label_without_image"),
])
def test_bad_input_is_one_line_naming_the_file_and_record(tmp_path: Path, fmt: str, damage: str):
    named, what = (_voc_bad if fmt == "voc" else _yolo_bad)(tmp_path / "src", damage)
    extra = ["--classes", "cat", "dog"] if damage == "unknown_class" and fmt == "voc" else []
    code, err = detector("data", "import", str(tmp_path / "src"), "--out", str(tmp_path / "pets"), *extra)
    assert code == 2 and err.count("\n") == 1, err
    assert str(named) in err and what in err, err
    assert not (tmp_path / "pets").exists()  # nothing written


def test_skip_leaves_out_bad_images_unless_too_many(tmp_path: Path):
    named, _ = _yolo_bad(tmp_path / "src", "unknown_class")  # 1 of the 5 train images: 20 %
    with pytest.raises(BadRecordError, match=r"would skip 1 of 5 images \(20\.0%\).*--max-skipped-fraction = 0\.05"):
        import_dataset(tmp_path / "src", tmp_path / "pets", on_bad_record="skip")
    done = import_dataset(tmp_path / "src", tmp_path / "pets", on_bad_record="skip", max_skipped_fraction=0.25)
    assert "left out (--on-bad-record skip): 1 images with 1 boxes; problems: 1 unknown class" in done.summary
    assert str(named) in done.summary
    assert "e" not in imported(tmp_path / "pets")[0]


def test_a_box_without_extent_is_dropped_and_counted_the_image_kept(tmp_path: Path):
    """A click without a drag (VOC xmin = xmax + 1, i.e. x0 = x1; YOLO w = 0) loses that box only."""
    root = import_files.voc(tmp_path / "voc", "one_folder")
    import_files.voc_xml(root / "e.xml", "e.jpg", (48, 36), [("cat", 20, 10, 20, 30), ("cat", 2, 3, 12, 14)])
    done = import_dataset(root, tmp_path / "pets")
    assert f"boxes dropped, without extent (x1 <= x0 or y1 <= y0): 1 ({root / 'e.xml'} object 0 (cat)" in done.summary
    assert imported(tmp_path / "pets")[0]["e"] == [("cat", 2.0, 3.0, 12.0, 14.0)]
    yolo = import_files.yolo(tmp_path / "yolo")
    (yolo / "labels" / "train" / "e.txt").write_text("0 0.5 0.5 0.0 0.5\n1 0.5 0.5 0.5 0.5\n")
    done = import_dataset(yolo, tmp_path / "pets2")
    assert f"without extent (x1 <= x0 or y1 <= y0): 1 ({yolo / 'labels' / 'train' / 'e.txt'} line 1" in done.summary
    assert [b[0] for b in imported(tmp_path / "pets2")[0]["e"]] == [done.source.class_names[1]]


def test_wrong_size_is_reported_and_the_images_used(tmp_path: Path):
    root = import_files.voc(tmp_path / "src", "one_folder")
    import_files.voc_xml(root / "e.xml", "e.jpg", (480, 360), [("cat", 20, 10, 40, 30)])
    done = import_dataset(root, tmp_path / "pets")
    assert "1 XML <size>(s) differ from the image (the image's size is used): e.xml says 480 x 360, e.jpg is 48 x 36" in done.summary
    assert_truth(tmp_path / "pets", splits_kept=False)


def test_carved_split_is_seeded_stable_and_stratified():
    names = [f"img{i:03d}.jpg" for i in range(100)]
    labels = [["rare"] if i % 10 == 0 else ["common"] if i % 10 < 8 else [] for i in range(100)]  # 10 rare, 20 negatives
    plan = lambda seed: plan_splits(names, labels, [None] * 100, 0.2, 0.1, seed).splits
    first = plan(3)
    assert first == plan(3) and first != plan(4)
    assert [first.count(s) for s in ("train", "val", "test")] == [70, 20, 10]
    for group in (range(0, 100, 10), [i for i in range(100) if labels[i] == []]):  # each stratum split 70/20/10
        got = [first[i] for i in group]
        n = len(got)
        assert abs(got.count("val") - 0.2 * n) <= 1 and abs(got.count("test") - 0.1 * n) <= 1, got
    # a source's own splits are kept; only the missing one is carved, out of train
    given = ["train"] * 80 + ["test"] * 20
    kept = plan_splits(names, labels, given, None, None, 0)
    assert kept.splits[80:] == ["test"] * 20 and kept.carved == {"val": 15}


def test_same_command_same_split_file(tmp_path: Path):
    root = import_files.voc(tmp_path / "src", "devkit_no_sets")
    import_dataset(root, tmp_path / "one", seed=5, val_fraction=0.25, test_fraction=0.25)
    import_dataset(root, tmp_path / "two", seed=5, val_fraction=0.25, test_fraction=0.25)
    one, two = (json.loads((tmp_path / d / "split.json").read_text()) for d in ("one", "two"))
    assert one["splits"] == two["splits"] and one["carved"] == {"val": 2, "test": 2} and one["seed"] == 5


def test_written_config_scales_epochs_validates_often_and_can_turn_flip_off(tmp_path: Path):
    done = import_dataset(import_files.yolo(tmp_path / "src"), tmp_path / "pets", flip=False)
    text = done.config.read_text()
    config = read_config(done.config)
    stages = config.model.init_args.stages
    epochs = sum(s.epochs for s in stages)
    assert epochs == 300  # 5 train images: one step an epoch, capped
    every = int(text.split("check_val_every_n_epoch: ")[1].split()[0])
    assert every <= epochs / 10
    assert config.data.flip is False and config.data.batch_size == 5
    assert "run: {name: pets}" in text and "EMAWeightAveraging" in text and "weights: imagenet" in text
    assert Path(config.data.image_dir).is_absolute() and "runs/" not in text.split("data:")[1]
    assert config.model.init_args.anchors == "auto"


@pytest.mark.parametrize("fmt", ["voc", "yolo", "coco"])
def test_import_then_train_the_written_config(tmp_path: Path, fmt: str):
    root = {"voc": lambda p: import_files.voc(p, "devkit"), "yolo": import_files.yolo, "coco": import_files.coco}[fmt](tmp_path / "src")
    code, err = detector("data", "import", str(root), "--out", str(tmp_path / "data" / "pets"), "--format", fmt)
    assert code == 0, err
    code, err = detector(
        "train", "fit", "--config", str(tmp_path / "data" / "pets" / "config.yaml"), "--epochs", "2", "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1",
        "--run.root", str(tmp_path / "runs"), "--data.num_workers", "0", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    )
    assert code == 0, err[-3000:]
    assert (tmp_path / "runs" / "pets" / "v1").is_dir()
    saved = yaml.safe_load((tmp_path / "runs" / "pets" / "v1" / "config.yaml").read_text())["model"]["init_args"]
    assert saved["anchors"]["grids"] and saved["image_size"] >= 224  # anchors: auto, chosen from the data at start
    # best.ckpt keeps the best val/fitness (0.1 mAP@0.5 + 0.9 COCO mAP), which validation logs
    assert "monitor: val/fitness" in (tmp_path / "data" / "pets" / "config.yaml").read_text()
    assert (tmp_path / "runs" / "pets" / "v1" / "checkpoints" / "best.ckpt").is_file()


def test_raccoon_as_a_user_imports_it(tmp_path: Path):
    """The real raccoon folder (VOCdevkit, train/test split files): the same boxes as convert-voc."""
    raccoon = shared_path("raccoon")
    done = import_dataset(raccoon, tmp_path / "raccoon")
    from detector.data.voc import convert_devkit

    old = convert_devkit(raccoon, tmp_path / "old", ["train", "test"])
    before = {r.path.name: r.boxes for s in old.values() for r in load_records(s, raccoon / "JPEGImages").records}
    after = {r.path.name: r.boxes for s in done.jsons.values() for r in load_records(s, done.image_dir).records}
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    assert [len(json.loads(p.read_text())["images"]) for p in done.jsons.values()] == [130, 30, 40]
