"""The format readers of ``detector data import`` (``coco_json``, ``voc_xml``, ``yolo_txt``), one
behaviour per test: what each reads from a real export's quirks, and the exact line it prints for
each bad record. Written to kill mutmut's survivors in those modules (``make mutation``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from coco_files import write_jpeg

from detector.data.importers.coco_json import find_jsons, looks_like_coco, read_coco
from detector.data.importers.source import Problem, SourceBox
from detector.data.importers.voc_xml import looks_like_voc, read_voc
from detector.data.importers.yolo_txt import find_yaml, label_path, looks_like_yolo, read_yolo
from detector.errors import BadRecordError, MissingFileError


def jpeg(path: Path, width: int = 48, height: int = 36) -> Path:
    write_jpeg(path, width, height)
    return path


# ---------------------------------------------------------------------------------------------
# COCO JSON


def coco_file(path: Path, images: list, annotations: list, categories: list | None = None, prefix: bytes = b"") -> Path:
    """A COCO JSON; ``images``: (id, file_name, width, height); ``annotations``: (id, image_id, bbox, category_id)
    tuples or raw entries; categories default: cat (1), dog (2)."""
    cats = categories if categories is not None else [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    data = {
        "images": [{"id": i, "file_name": f, "width": w, "height": h} if isinstance(i, int) else i for i, f, w, h in images]
        if images and isinstance(images[0], tuple) else images,
        "annotations": [{"id": a[0], "image_id": a[1], "bbox": a[2], "category_id": a[3]} if isinstance(a, tuple) else a
                        for a in annotations],
        "categories": cats,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(prefix + json.dumps(data).encode())
    return path


def coco_split(folder: Path, json_name: str = "_annotations.coco.json", image_dir: Path | None = None) -> Path:
    """One split: a.jpg (48 x 36, a cat) and b.jpg (40 x 30, a dog) in ``image_dir`` (default: beside the JSON)."""
    image_dir = image_dir or folder
    jpeg(image_dir / "a.jpg")
    jpeg(image_dir / "b.jpg", 40, 30)
    return coco_file(folder / json_name, [(1, "a.jpg", 48, 36), (2, "b.jpg", 40, 30)],
                     [(1, 1, [2, 3, 10, 8], 1), (2, 2, [4, 4, 6, 6], 2)])


def test_is_coco_needs_images_annotations_or_categories_in_the_first_64_kib(tmp_path: Path):
    for key in ("images", "annotations", "categories"):
        (tmp_path / key).mkdir()
        (tmp_path / key / "x.json").write_text(json.dumps({key: []}))
        assert looks_like_coco(tmp_path / key), key
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "package.json").write_text(json.dumps({"name": "x", "version": "1"}))
    (tmp_path / "late").mkdir()
    (tmp_path / "late" / "x.json").write_text(json.dumps({"info": "x" * (1 << 16), "images": []}))
    assert not looks_like_coco(tmp_path / "other") and not looks_like_coco(tmp_path / "late")


def test_is_coco_ignores_bytes_that_are_not_utf8_and_folders_named_json(tmp_path: Path):
    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "x.json").write_bytes(b'{"info": "caf\xe9", "images": []}')
    assert looks_like_coco(tmp_path / "latin")
    (tmp_path / "dir" / "odd.json").mkdir(parents=True)  # a folder: cannot be opened, not a COCO JSON
    assert not looks_like_coco(tmp_path / "dir")
    assert find_jsons(tmp_path / "dir") == {}


def test_looks_like_coco_a_json_file_by_its_suffix_a_folder_by_its_contents(tmp_path: Path):
    (tmp_path / "A.JSON").write_text("{}")
    (tmp_path / "a.txt").write_text('{"images": []}')
    assert looks_like_coco(tmp_path / "A.JSON") and not looks_like_coco(tmp_path / "a.txt")
    assert not looks_like_coco(tmp_path / "missing")
    coco_file(tmp_path / "deep" / "train" / "x.json", [], [])
    assert looks_like_coco(tmp_path / "deep")
    coco_file(tmp_path / "deeper" / "a" / "b" / "x.json", [], [])
    assert not looks_like_coco(tmp_path / "deeper")  # two folders down: not looked at


def test_find_jsons_reads_the_split_from_the_folder_or_the_file_name(tmp_path: Path):
    roboflow = tmp_path / "roboflow"
    for folder in ("train", "valid", "test"):
        coco_file(roboflow / folder / "_annotations.coco.json", [], [])
    (roboflow / "README.json").write_text('{"note": 1}')  # not COCO: ignored
    assert find_jsons(roboflow) == {s: roboflow / f / "_annotations.coco.json" for s, f in
                                    (("test", "test"), ("train", "train"), ("val", "valid"))}
    coco = tmp_path / "coco"
    for name in ("instances_train2017.json", "Instances_VAL2017.json"):
        coco_file(coco / "annotations" / name, [], [])
    assert find_jsons(coco) == {"train": coco / "annotations" / "instances_train2017.json",
                                "val": coco / "annotations" / "Instances_VAL2017.json"}
    assert find_jsons(coco / "annotations" / "Instances_VAL2017.json") == {"val": coco / "annotations" / "Instances_VAL2017.json"}


def test_find_jsons_a_file_or_the_roots_own_name_gives_no_split(tmp_path: Path):
    root = tmp_path / "train"  # the root's own name is not the split of the JSON in it
    coco_file(root / "labels.json", [], [])
    assert find_jsons(root) == {None: root / "labels.json"}
    given = coco_file(tmp_path / "x" / "valid" / "labels.json", [], [])
    assert find_jsons(given) == {None: given}  # a file given alone: its split from its own name only


def test_find_jsons_two_for_one_split_is_refused_naming_both(tmp_path: Path):
    a = coco_file(tmp_path / "train_a.json", [], [])
    b = coco_file(tmp_path / "train" / "b.json", [], [])
    with pytest.raises(BadRecordError) as info:
        find_jsons(tmp_path)
    assert str(info.value) == f"{tmp_path}: two COCO JSONs for the train split ({a}, {b}): give the one to import"
    other = tmp_path / "other"
    a, b = coco_file(other / "one.json", [], []), coco_file(other / "two.json", [], [])
    with pytest.raises(BadRecordError) as info:
        find_jsons(other)
    assert str(info.value) == f"{other}: two COCO JSONs for the same split ({a}, {b}): give the one to import"


def test_find_jsons_a_json_without_a_split_beside_split_ones_is_refused(tmp_path: Path):
    plain = coco_file(tmp_path / "all.json", [], [])
    coco_file(tmp_path / "valid" / "x.json", [], [])
    coco_file(tmp_path / "train" / "x.json", [], [])
    with pytest.raises(BadRecordError) as info:
        find_jsons(tmp_path)
    assert str(info.value) == f"{tmp_path}: {plain} names no split beside ['train', 'val']: give the one to import"


def test_read_coco_without_a_json_says_what_it_wants(tmp_path: Path):
    with pytest.raises(BadRecordError) as info:
        read_coco(tmp_path)
    assert str(info.value) == f"{tmp_path}: no COCO JSON (with images, annotations, categories) found"


def test_read_coco_records_boxes_names_and_layout(tmp_path: Path):
    root = tmp_path / "src"
    train = coco_split(root / "train")
    jpeg(root / "valid" / "c.jpg", 44, 32)
    valid = coco_file(root / "valid" / "_annotations.coco.json", [(7, "c.jpg", 44, 32)],
                      [{"id": 1, "image_id": 7, "bbox": [1.5, 2, 10, 20], "category_id": 5, "iscrowd": 1},
                       {"id": 2, "image_id": 7, "bbox": [3, 4, 5, 6], "category_id": 2, "ignore": 0}],
                      [{"id": 5, "name": "bird"}, {"id": 2, "name": "dog"}])
    src = read_coco(root)
    assert (src.format, src.root, src.class_names) == ("coco", root, ["cat", "dog", "bird"])
    assert src.layout == "train: train/_annotations.coco.json, val: valid/_annotations.coco.json"
    assert [(i.path, i.width, i.height, i.split, i.where) for i in src.images] == [
        (root / "train" / "a.jpg", 48, 36, "train", f"{train} image id 1"),
        (root / "train" / "b.jpg", 40, 30, "train", f"{train} image id 2"),
        (root / "valid" / "c.jpg", 44, 32, "val", f"{valid} image id 7"),
    ]
    assert src.images[0].boxes == [SourceBox("cat", (2.0, 3.0, 12.0, 11.0), False)]
    assert src.images[2].boxes == [SourceBox("bird", (1.5, 2.0, 11.5, 22.0), True), SourceBox("dog", (3.0, 4.0, 8.0, 10.0), False)]
    assert all(type(v) is float for v in src.images[2].boxes[1].xyxy)
    assert (src.problems, src.clipped, src.dropped, src.notes) == ([], [], [], [])


def test_read_coco_a_json_file_alone_and_a_byte_order_mark(tmp_path: Path):
    jpeg(tmp_path / "a.jpg")
    path = coco_file(tmp_path / "labels.json", [(1, "a.jpg", 48, 36)], [(1, 1, [0, 0, 60, 10], 2)], prefix="\ufeff".encode())
    src = read_coco(path)
    assert (src.root, src.layout, [i.split for i in src.images]) == (tmp_path, "labels.json", [None])
    assert src.images[0].boxes == [SourceBox("dog", (0.0, 0.0, 48.0, 10.0))]
    assert src.clipped == [f"a box in {path}"]


def test_read_coco_leaves_out_roboflows_unused_parent_category_and_says_so(tmp_path: Path):
    jpeg(tmp_path / "a.jpg")
    cats = [{"id": 0, "name": "pets", "supercategory": "none"}, {"id": 1, "name": "cat", "supercategory": "pets"},
            {"id": 2, "name": "dog", "supercategory": "pets"}, {"id": 3, "name": "fish", "supercategory": "pets"}]
    coco_file(tmp_path / "labels.json", [(1, "a.jpg", 48, 36)], [(1, 1, [1, 1, 5, 5], 1)], cats)
    src = read_coco(tmp_path)
    assert src.class_names == ["cat", "dog", "fish"]  # unused but no parent: kept
    assert src.notes == ["categories ['pets'] left out: no box uses them and they are the supercategory of the others"]


def test_read_coco_keeps_a_parent_category_that_a_box_uses(tmp_path: Path):
    jpeg(tmp_path / "a.jpg")
    cats = [{"id": 0, "name": "animal", "supercategory": "none"}, {"id": 1, "name": "cat", "supercategory": "animal"}]
    coco_file(tmp_path / "labels.json", [(1, "a.jpg", 48, 36)], [(1, 1, [1, 1, 5, 5], 0), (2, 1, [2, 2, 5, 5], 1)], cats)
    src = read_coco(tmp_path)
    assert src.class_names == ["animal", "cat"] and src.notes == []


def test_read_coco_problems_name_the_json_and_image_and_count_its_boxes(tmp_path: Path):
    jpeg(tmp_path / "a.jpg")
    jpeg(tmp_path / "b.jpg")
    path = coco_file(tmp_path / "train.json", [(1, "a.jpg", 48, 36), (12, "b.jpg", 48, 36)],
                     [(1, 12, [1, 1, 5, 5], 1), (2, 12, [1, 1, 5, 5], 9), (3, 12, [2, 2, 5, 5], 2), (4, 99, [1, 1, 2, 2], 1),
                      "oops"])
    src = read_coco(tmp_path)
    assert [i.path.name for i in src.images] == ["a.jpg"]
    assert src.problems == [
        Problem(f"{path}: annotation id 2 (image id 12, b.jpg): unknown category_id 9", "unknown class", f"{path} image id 12", 3, "train"),
        Problem(f"{path}: annotation id 4 (image id 99, annotations[3]): unknown image id", "unknown image id", "", 1, "train"),
        Problem(f"{path}: annotation id ? (image id ?, annotations[4]): expected an object, got 'oops'", "malformed annotation", "", 1, "train"),
    ]


def test_read_coco_a_negative_image_id_and_a_bad_image_entry(tmp_path: Path):
    jpeg(tmp_path / "a.jpg")
    path = coco_file(tmp_path / "val.json", [{"id": -3, "file_name": "a.jpg", "width": 40, "height": 36}, "junk"], [(1, -3, [1, 1, 5, 5], 1)])
    src = read_coco(tmp_path)
    assert src.images == []
    assert src.problems == [
        Problem(f"{path}: image id ? (images[1]): expected an object, got 'junk'", "malformed image entry", "", 1, "val"),
        Problem(f"{path}: image id -3 (a.jpg): image is 48 x 36 (width x height, EXIF orientation applied) but the JSON says 40 x 36",
                "image size differs from the JSON", f"{path} image id -3", 1, "val"),
    ]


def test_read_coco_a_category_that_is_not_an_object_is_refused_by_load_records(tmp_path: Path):
    jpeg(tmp_path / "a.jpg")
    path = coco_file(tmp_path / "x.json", [(1, "a.jpg", 48, 36)], [], [{"id": 1, "name": "cat"}, "dog"])
    with pytest.raises(BadRecordError) as info:
        read_coco(tmp_path)
    assert str(info.value) == f"{path}: categories[1] must be an object with 'id' and 'name', got 'dog'"


def test_read_coco_a_json_without_images(tmp_path: Path):
    coco_file(tmp_path / "x.json", [], [])
    src = read_coco(tmp_path)
    assert (src.images, src.class_names, src.problems) == ([], ["cat", "dog"], [])


@pytest.mark.parametrize("where", ["beside", "images", "named", "images_named", "root_images", "root"])
def test_read_coco_finds_the_image_folder(tmp_path: Path, where: str):
    path = coco_file(tmp_path / "annotations" / "instances_train2017.json", [(1, "a.jpg", 48, 36)], [])
    folder = {"beside": "annotations", "images": "annotations/images", "named": "Train2017", "images_named": "images/train2017",
              "root_images": "images", "root": "."}[where]
    jpeg(tmp_path / folder / "a.jpg")
    (tmp_path / "val2017").mkdir()  # not in the JSON's name
    (tmp_path / "images" / "val2017").mkdir(parents=True, exist_ok=True)
    jpeg(tmp_path / "val2017" / "a.jpg", 40, 30)  # a decoy of the wrong size
    jpeg(tmp_path / "images" / "val2017" / "a.jpg", 40, 30)
    src = read_coco(tmp_path)
    assert [i.path for i in src.images] == [tmp_path / folder / "a.jpg"], path


def test_read_coco_the_first_candidate_folder_that_holds_the_image_wins(tmp_path: Path):
    coco_file(tmp_path / "annotations" / "instances_train2017.json", [(1, "a.jpg", 48, 36)], [])
    for folder in ("annotations/images", "train", "train2017", "images", "."):
        jpeg(tmp_path / folder / "a.jpg", 40, 30)  # each a decoy of the wrong size ...
    jpeg(tmp_path / "annotations" / "a.jpg")  # ... but the JSON's folder comes first
    assert [i.path for i in read_coco(tmp_path).images] == [tmp_path / "annotations" / "a.jpg"]
    (tmp_path / "annotations" / "a.jpg").unlink()
    jpeg(tmp_path / "annotations" / "images" / "a.jpg")
    assert [i.path for i in read_coco(tmp_path).images] == [tmp_path / "annotations" / "images" / "a.jpg"]
    (tmp_path / "annotations" / "images" / "a.jpg").unlink()
    jpeg(tmp_path / "train" / "a.jpg")  # "train" and "train2017" are both in the name: sorted, train first
    assert [i.path for i in read_coco(tmp_path).images] == [tmp_path / "train" / "a.jpg"]


def test_read_coco_names_the_missing_image_files(tmp_path: Path):
    path = coco_split(tmp_path / "train")
    (tmp_path / "train" / "b.jpg").unlink()
    with pytest.raises(MissingFileError) as info:
        read_coco(tmp_path)
    assert str(info.value) == (f"{path}: 1 of its 2 image files are not in {tmp_path / 'train'}: b.jpg "
                               "(remove them from the JSON, or --on-bad-record skip leaves them out)")
    (tmp_path / "train" / "a.jpg").unlink()
    with pytest.raises(MissingFileError) as info:
        read_coco(tmp_path)
    assert str(info.value) == (f"{path}: none of its 2 images is in {tmp_path / 'train'} (first: a.jpg): "
                               "give the image folder with --images DIR")


def test_read_coco_without_the_file_check_a_missing_image_is_a_problem(tmp_path: Path):
    path = coco_split(tmp_path / "train")
    (tmp_path / "train" / "b.jpg").unlink()
    src = read_coco(tmp_path, check_files=False)
    assert [i.path.name for i in src.images] == ["a.jpg"]
    assert src.problems == [Problem(f"{path}: image id 2 (b.jpg): image file not found: {tmp_path / 'train' / 'b.jpg'}",
                                    "image file not found", f"{path} image id 2", 1, "train")]


def test_read_coco_images_given_is_the_folder_of_every_json(tmp_path: Path):
    coco_split(tmp_path / "src" / "train", image_dir=tmp_path / "pics")
    coco_split(tmp_path / "src" / "valid", image_dir=tmp_path / "pics")
    src = read_coco(tmp_path / "src", images=tmp_path / "pics")
    assert [(i.path, i.split) for i in src.images] == [(tmp_path / "pics" / n, s) for s in ("train", "val") for n in ("a.jpg", "b.jpg")]


def _records_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "detector.data.records"]


def test_read_coco_keeps_load_records_quiet_and_restores_its_level(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    coco_file(tmp_path / "x.json", [], [(1, 5, [1, 1, 2, 2], 1)])  # an annotation of no image: skipped, logged
    logger = logging.getLogger("detector.data.records")
    logger.setLevel(logging.INFO)
    try:
        logger.warning("before")  # the logger now caches "WARNING is enabled"
        src = read_coco(tmp_path)
        assert [p.reason for p in src.problems] == ["unknown image id"]
        assert logger.level == logging.INFO
        logger.warning("after")
    finally:
        logger.setLevel(logging.NOTSET)
    assert _records_warnings(caplog) == ["before", "after"]


def test_read_coco_quieting_does_not_leak_after_it(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    coco_file(tmp_path / "x.json", [], [(1, 5, [1, 1, 2, 2], 1)])
    logger = logging.getLogger("detector.data.records")
    logger.setLevel(logging.NOTSET)  # also empties the isEnabledFor cache
    read_coco(tmp_path)  # the first check of WARNING happens while quiet
    logger.warning("after")
    assert logger.level == logging.NOTSET
    assert _records_warnings(caplog) == ["after"]
