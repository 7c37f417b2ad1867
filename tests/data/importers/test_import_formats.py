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
from import_files import voc_xml_raw


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


def test_find_jsons_one_json_without_a_split_beside_one_split_json_is_refused(tmp_path: Path):
    plain = coco_file(tmp_path / "all.json", [], [])
    coco_file(tmp_path / "train" / "x.json", [], [])
    with pytest.raises(BadRecordError) as info:
        find_jsons(tmp_path)
    assert str(info.value) == f"{tmp_path}: {plain} names no split beside ['train']: give the one to import"


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


def test_read_coco_clipped_boxes_of_every_json_are_counted(tmp_path: Path):
    jpeg(tmp_path / "train" / "a.jpg")
    train = coco_file(tmp_path / "train" / "x.json", [(1, "a.jpg", 48, 36)], [(1, 1, [40, 0, 20, 10], 2), (2, 1, [-2, 0, 4, 4], 1)])
    coco_split(tmp_path / "valid")  # nothing clipped there
    assert read_coco(tmp_path).clipped == [f"a box in {train}"] * 2


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_read_coco_a_json_without_a_top_level_list_is_refused_by_load_records(tmp_path: Path, key: str):
    jpeg(tmp_path / "a.jpg")
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 48, "height": 36}], "annotations": [],
            "categories": [{"id": 1, "name": "cat"}]}
    del data[key]
    (tmp_path / "x.json").write_text(json.dumps(data))
    with pytest.raises(BadRecordError) as info:
        read_coco(tmp_path)
    assert str(info.value) == f"{tmp_path / 'x.json'}: missing top-level key {key!r}"


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


# ---------------------------------------------------------------------------------------------
# VOC XML


def voc_pair(xml_dir: Path, stem: str, image_dir: Path | None = None, objects: list = (("cat", 3, 4, 12, 10),)) -> Path:
    """``stem.jpg`` (48 x 36) and ``stem.xml`` naming it."""
    jpeg((image_dir or xml_dir) / f"{stem}.jpg")
    return voc_xml_raw(xml_dir / f"{stem}.xml", f"{stem}.jpg", objects=objects)


def test_looks_like_voc_xml_files_at_most_two_folders_down(tmp_path: Path):
    for depth, name in enumerate(("a.XML", "x/a.xml", "x/y/a.xml", "x/y/z/a.xml")):
        (tmp_path / str(depth) / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / str(depth) / name).write_text("<annotation/>")
    assert [looks_like_voc(tmp_path / str(d)) for d in range(4)] == [True, True, True, False]
    assert not looks_like_voc(tmp_path / "0" / "a.XML") and not looks_like_voc(tmp_path / "missing")


def test_read_voc_devkit_layout_box_conversion_and_difficult(tmp_path: Path):
    jpeg(tmp_path / "JPEGImages" / "a.jpg")
    path = voc_xml_raw(tmp_path / "Annotations" / "a.xml", "a.jpg", objects=[("cat", 1, 2, 10, 20), ("dog", 5.5, 6, 30, 36, 1)])
    src = read_voc(tmp_path)
    assert (src.format, src.root, src.layout, src.class_names) == ("voc", tmp_path, "Annotations/ + JPEGImages/", ["cat", "dog"])
    [image] = src.images
    assert (image.path, image.width, image.height, image.split, image.where) == (tmp_path / "JPEGImages" / "a.jpg", 48, 36, None, str(path))
    assert image.boxes == [SourceBox("cat", (0.0, 1.0, 10.0, 20.0), False), SourceBox("dog", (4.5, 5.0, 30.0, 36.0), True)]
    assert (src.problems, src.clipped, src.dropped, src.notes) == ([], [], [], [])


def test_read_voc_annotations_beside_an_images_folder_or_the_only_folder_with_images(tmp_path: Path):
    for layout, image_folder in (("images", "images"), ("pics", "pics")):
        root = tmp_path / layout
        voc_pair(root / "Annotations", "a", root / image_folder)
        (root / "empty").mkdir()
        src = read_voc(root)
        assert src.layout == f"Annotations/ + {image_folder}/", layout
        assert [i.path for i in src.images] == [root / image_folder / "a.jpg"]


@pytest.mark.parametrize("named, other", [("JPEGImages", "SegmentationClass"), ("images", "masks")])
def test_read_voc_the_image_folder_by_its_name_beside_other_image_folders(tmp_path: Path, named: str, other: str):
    voc_pair(tmp_path / "Annotations", "a", tmp_path / named)
    jpeg(tmp_path / other / "a.png")  # VOC's segmentation masks: images too, but not the ones
    src = read_voc(tmp_path)
    assert src.layout == f"Annotations/ + {named}/" and [i.path for i in src.images] == [tmp_path / named / "a.jpg"]


def test_read_voc_annotations_with_the_images_in_the_root(tmp_path: Path):
    voc_pair(tmp_path / "annotations", "a", tmp_path)
    jpeg(tmp_path / "one" / "x.jpg")
    jpeg(tmp_path / "two" / "y.jpg")  # two image folders: neither is chosen, the root is
    src = read_voc(tmp_path)
    assert src.layout == f"annotations/ + {tmp_path.name}/" and [i.path for i in src.images] == [tmp_path / "a.jpg"]


def test_read_voc_xmls_in_the_root_with_the_images_in_one_subfolder(tmp_path: Path):
    voc_pair(tmp_path, "a", tmp_path / "photos")
    src = read_voc(tmp_path)
    assert src.layout == f"{tmp_path.name}/ + photos/" and [i.path for i in src.images] == [tmp_path / "photos" / "a.jpg"]
    jpeg(tmp_path / "b.jpg")  # an image beside the XMLs: the root is the image folder
    src = read_voc(tmp_path)
    assert src.layout == "one folder" and src.images == []
    assert src.problems[0].message.startswith(f"{tmp_path / 'a.xml'}: no image for it in {tmp_path} ")


def test_read_voc_xmls_in_the_root_two_image_subfolders_is_the_root(tmp_path: Path):
    voc_xml_raw(tmp_path / "a.xml", "a.jpg")
    jpeg(tmp_path / "p" / "a.jpg")
    jpeg(tmp_path / "q" / "a.jpg")
    src = read_voc(tmp_path)
    assert src.layout == "one folder" and [p.reason for p in src.problems] == ["label file without an image"]


def test_read_voc_two_sibling_folders_one_of_xmls_one_of_images(tmp_path: Path):
    voc_pair(tmp_path / "labels", "a", tmp_path / "pictures")
    src = read_voc(tmp_path)
    assert src.layout == "labels/ + pictures/" and [i.path for i in src.images] == [tmp_path / "pictures" / "a.jpg"]


def test_read_voc_no_layout_found_is_one_line(tmp_path: Path):
    (tmp_path / "x.xml.d").mkdir()  # a folder named like an XML is no XML
    (tmp_path / "x.xml.d" / "a.txt").write_text("")
    (tmp_path / "b.xml").mkdir()
    for folder in ("one", "two"):
        voc_xml_raw(tmp_path / folder / "a.xml")
    jpeg(tmp_path / "pics" / "a.jpg")
    with pytest.raises(BadRecordError) as info:
        read_voc(tmp_path)
    assert str(info.value) == (f"{tmp_path}: no VOC layout found (want XMLs and images in one folder, in two sibling folders, "
                               "or Annotations/ + JPEGImages/); give --format if this is another format")


def test_read_voc_two_image_folders_beside_one_xml_folder_is_no_layout(tmp_path: Path):
    voc_xml_raw(tmp_path / "xmls" / "a.xml")
    jpeg(tmp_path / "p" / "a.jpg")
    jpeg(tmp_path / "q" / "a.jpg")
    with pytest.raises(BadRecordError, match="no VOC layout found"):
        read_voc(tmp_path)


def devkit(root: Path, lists: dict[str, str], sets: str = "ImageSets/Main") -> Path:
    """Annotations/ + JPEGImages/ with a.. d, and the split list files given ({name: text})."""
    for stem in "abcd":
        voc_pair(root / "Annotations", stem, root / "JPEGImages")
    for name, text in lists.items():
        (root / sets).mkdir(parents=True, exist_ok=True)
        (root / sets / f"{name}.txt").write_text(text)
    return root


def test_read_voc_splits_from_the_split_list_files(tmp_path: Path):
    devkit(tmp_path, {"train": "a\n\nb  1\n", "val": "c\n", "test": "d -1\n"})
    src = read_voc(tmp_path)
    assert [(i.path.stem, i.split) for i in src.images] == [("a", "train"), ("b", "train"), ("c", "val"), ("d", "test")]
    assert src.layout == "Annotations/ + JPEGImages/, splits from ImageSets/Main (train, val, test)"
    assert (src.problems, src.notes) == ([], [])


def test_read_voc_trainval_stands_for_train_only_without_train_txt(tmp_path: Path):
    devkit(tmp_path / "one", {"trainval": "a\nb\n", "val": "b\n", "test": "c\n"}, "imagesets/main")
    src = read_voc(tmp_path / "one")
    assert [(i.path.stem, i.split) for i in src.images] == [("a", "train"), ("b", "val"), ("c", "test")]
    assert src.layout == "Annotations/ + JPEGImages/, splits from imagesets/main (train, val, test)"
    assert src.notes == ["1 XML(s) named in no ImageSets/Main split file: left out"]
    devkit(tmp_path / "two", {"train": "a\n", "trainval": "a\nb\nc\nd\n", "val": "b\n"})
    src = read_voc(tmp_path / "two")
    assert [(i.path.stem, i.split) for i in src.images] == [("a", "train"), ("b", "val")]
    assert src.notes == ["2 XML(s) named in no ImageSets/Main split file: left out"]


def test_read_voc_imagesets_without_split_list_files_give_no_splits(tmp_path: Path):
    devkit(tmp_path, {"aeroplane_train": "a  1\n"})  # a per-class list only
    src = read_voc(tmp_path)
    assert [i.split for i in src.images] == [None] * 4 and src.layout == "Annotations/ + JPEGImages/"
    assert (src.problems, src.notes) == ([], [])


def test_read_voc_a_split_file_naming_a_missing_xml_names_the_file_read(tmp_path: Path):
    devkit(tmp_path / "dk", {"trainval": "a\nzz\n", "val": "b\n"})
    src = read_voc(tmp_path / "dk")
    assert src.problems == [Problem(f"{tmp_path / 'dk' / 'ImageSets' / 'Main' / 'trainval.txt'} names 'zz', but "
                                    f"{tmp_path / 'dk' / 'Annotations' / 'zz.xml'} does not exist", "split file names a missing XML", "zz", 0, "train")]
    voc_pair(tmp_path / "flat", "a")  # XMLs and images in the root, ImageSets beside them (lower case)
    (tmp_path / "flat" / "imagesets" / "main").mkdir(parents=True)
    (tmp_path / "flat" / "imagesets" / "main" / "val.txt").write_text("a\nb\n")
    src = read_voc(tmp_path / "flat")
    assert [p.message for p in src.problems] == [f"{tmp_path / 'flat' / 'imagesets' / 'main' / 'val.txt'} names 'b', but "
                                                 f"{tmp_path / 'flat' / 'b.xml'} does not exist"]
    assert [(i.path.stem, i.split) for i in src.images] == [("a", "val")]


def test_read_voc_one_folder_per_split(tmp_path: Path):
    for folder in ("valid", "train", "test"):
        voc_pair(tmp_path / folder, folder)
    (tmp_path / "other").mkdir()
    (tmp_path / "val").mkdir()  # a split's name, but no XML in it: not a split folder
    src = read_voc(tmp_path)
    assert [(i.path, i.split) for i in src.images] == [(tmp_path / f / f"{f}.jpg", s) for f, s in
                                                       (("train", "train"), ("valid", "val"), ("test", "test"))]
    assert src.layout == "train/: one folder; val/: one folder; test/: one folder"


def test_read_voc_split_folders_without_train_are_read_as_one_folder(tmp_path: Path):
    voc_pair(tmp_path / "valid", "a")
    voc_pair(tmp_path / "test", "b")
    with pytest.raises(BadRecordError, match="no VOC layout found"):
        read_voc(tmp_path)


def test_read_voc_finds_the_image_by_filename_or_stem_in_any_case(tmp_path: Path):
    jpeg(tmp_path / "IMG_1.JPG")
    jpeg(tmp_path / "photo.png")
    jpeg(tmp_path / "c.jpeg")
    jpeg(tmp_path / "c.png", 40, 30)
    voc_xml_raw(tmp_path / "one.xml", "C:/Users/x/img_1.jpg", objects=[("cat", 1, 1, 5, 5)])  # <filename> with a folder, other case
    voc_xml_raw(tmp_path / "photo.xml", "missing.jpg")  # no such file: the stem
    voc_xml_raw(tmp_path / "c.xml")  # no <filename>: the stem, the first in sorted order
    src = read_voc(tmp_path)
    assert [(i.path.name, i.where) for i in src.images] == [
        ("c.jpeg", str(tmp_path / "c.xml")), ("IMG_1.JPG", str(tmp_path / "one.xml")), ("photo.png", str(tmp_path / "photo.xml"))]
    assert (src.problems, src.notes) == ([], [])  # c.png is not counted as without an XML: c.xml is its stem's


def test_read_voc_an_xml_without_an_image_is_named_with_what_was_looked_for(tmp_path: Path):
    jpeg(tmp_path / "images" / "a.jpg")
    path = voc_xml_raw(tmp_path / "annotations" / "b.xml", "b.png", objects=[("cat", 1, 1, 5, 5), ("cat", 2, 2, 6, 6)])
    voc_xml_raw(tmp_path / "annotations" / "c.xml")
    src = read_voc(tmp_path)
    assert src.problems[0] == Problem(
        f"{path}: no image for it in {tmp_path / 'images'} (looked for <filename> 'b.png' and b with any image extension)",
        "label file without an image", str(path), 2, None)
    assert src.problems[1].message.endswith("(looked for <filename> None and c with any image extension)")
    assert src.notes == ["1 image(s) without an XML: left out (give each an XML without objects to keep it as a negative)"]


def test_read_voc_problems_and_notes_of_split_folders(tmp_path: Path):
    voc_pair(tmp_path / "train", "a", objects=[("cat", 1, 1, 5, 5), ("bird", 1, 1, 5, 5)])
    jpeg(tmp_path / "train" / "lone.jpg")
    voc_pair(tmp_path / "train", "b")
    (tmp_path / "train" / "b.jpg").write_bytes(b"not an image")
    voc_xml_raw(tmp_path / "valid" / "c.xml", "c.jpg", objects=[("cat", 1, 1, 5, 5)])
    voc_pair(tmp_path / "valid", "d")
    src = read_voc(tmp_path, classes=["cat"])
    assert [(p.reason, Path(p.image).name, p.boxes, p.split) for p in src.problems] == [
        ("label file without an image", "c.xml", 1, "val"), ("unknown class", "a.jpg", 2, "train"),
        ("image cannot be decoded", "b.jpg", 1, "train")]
    assert [i.path.name for i in src.images] == ["d.jpg"]
    assert src.notes == ["1 image(s) without an XML: left out (give each an XML without objects to keep it as a negative)"]


def test_read_voc_an_image_used_by_filename_is_not_unannotated(tmp_path: Path):
    jpeg(tmp_path / "photo.jpg")
    jpeg(tmp_path / "b.jpg")  # its stem has an XML that names another image: not counted either
    jpeg(tmp_path / "lone.jpg")
    voc_xml_raw(tmp_path / "b.xml", "photo.jpg")
    src = read_voc(tmp_path)
    assert [i.path.name for i in src.images] == ["photo.jpg"]
    assert src.notes == ["1 image(s) without an XML: left out (give each an XML without objects to keep it as a negative)"]


def test_read_voc_a_malformed_xml_is_a_problem_naming_it(tmp_path: Path):
    voc_pair(tmp_path / "train", "b")
    (tmp_path / "train" / "a.xml").write_text("<annotation><object>")
    src = read_voc(tmp_path)
    [problem] = src.problems
    assert problem.message.startswith(f"{tmp_path / 'train' / 'a.xml'}: not well-formed XML (")
    assert (problem.reason, problem.image, problem.boxes, problem.split) == ("malformed XML", str(tmp_path / "train" / "a.xml"), 0, "train")
    assert [i.path.name for i in src.images] == ["b.jpg"]


def test_read_voc_an_undecodable_image_is_a_problem_naming_the_xml(tmp_path: Path):
    voc_pair(tmp_path, "a", objects=[("cat", 1, 1, 5, 5), ("dog", 1, 1, 5, 5)])
    voc_pair(tmp_path, "b")
    (tmp_path / "a.jpg").write_bytes(b"not an image")
    src = read_voc(tmp_path)
    assert [i.path.name for i in src.images] == ["b.jpg"] and src.problems == [Problem(
        f"{tmp_path / 'a.jpg'}: image cannot be decoded (not an image file PIL knows) (annotated in {tmp_path / 'a.xml'})",
        "image cannot be decoded", str(tmp_path / "a.jpg"), 2, None)]


def test_read_voc_sizes_missing_and_wrong_are_noted_the_images_used(tmp_path: Path):
    for k, stem in enumerate("abcde"):
        jpeg(tmp_path / f"{stem}.jpg")
        voc_xml_raw(tmp_path / f"{stem}.xml", f"{stem}.jpg", (48, 36) if stem == "a" else None if stem == "b" else (480 + k, 36))
    src = read_voc(tmp_path)
    assert [(i.width, i.height) for i in src.images] == [(48, 36)] * 5
    assert src.notes == [
        "1 XML(s) without a usable <size>: the size was read from the image",
        "3 XML <size>(s) differ from the image (the image's size is used): c.xml says 482 x 36, c.jpg is 48 x 36; "
        "d.xml says 483 x 36, d.jpg is 48 x 36; e.xml says 484 x 36, e.jpg is 48 x 36",
    ]
    voc_xml_raw(tmp_path / "f.xml", "a.jpg", (48, 37))
    assert read_voc(tmp_path).notes[1].endswith("e.xml says 484 x 36, e.jpg is 48 x 36 ...")
    assert read_voc(tmp_path).notes[1].startswith("4 XML <size>(s) differ")


def test_read_voc_unknown_class_and_box_outside_condemn_the_image(tmp_path: Path):
    jpeg(tmp_path / "a.jpg")
    jpeg(tmp_path / "b.jpg")
    a = voc_xml_raw(tmp_path / "a.xml", "a.jpg", objects=[("cat", 1, 1, 5, 5), ("bird", 2, 2, 6, 6)])
    b = voc_xml_raw(tmp_path / "b.xml", "b.jpg", objects=[("cat", 60, 10, 70.5, 30), ("dog", 1, 1, 5, 5)])
    src = read_voc(tmp_path, classes=["dog", "cat"])
    assert src.class_names == ["dog", "cat"] and src.images == []
    assert src.problems == [
        Problem(f"{a} object 1 (bird): class 'bird' is not one of ['dog', 'cat']", "unknown class", str(tmp_path / "a.jpg"), 2, None),
        Problem(f"{b} object 0 (cat): box outside the image (xmin, ymin, xmax, ymax = (60, 10, 70.5, 30), image 48 x 36)",
                "box outside the image", str(tmp_path / "b.jpg"), 2, None),
    ]


def test_read_voc_every_bad_object_of_an_image_is_named(tmp_path: Path):
    path = voc_pair(tmp_path, "a", objects=[("bird", 1, 1, 5, 5), ("cat", 60, 1, 70, 5), ("fish", 1, 1, 5, 5), ("cat", 1, 50, 5, 60)])
    src = read_voc(tmp_path, classes=["cat"])
    assert [p.message for p in src.problems] == [
        f"{path} object 0 (bird): class 'bird' is not one of ['cat']",
        f"{path} object 1 (cat): box outside the image (xmin, ymin, xmax, ymax = (60, 1, 70, 5), image 48 x 36)",
        f"{path} object 2 (fish): class 'fish' is not one of ['cat']",
        f"{path} object 3 (cat): box outside the image (xmin, ymin, xmax, ymax = (1, 50, 5, 60), image 48 x 36)"]


def test_read_voc_default_classes_are_the_names_found_sorted(tmp_path: Path):
    voc_pair(tmp_path, "a", objects=[("zebra", 1, 1, 5, 5), ("ant", 1, 1, 5, 5), ("zebra", 2, 2, 6, 6)])
    assert read_voc(tmp_path).class_names == ["ant", "zebra"]


def test_read_voc_vocs_twenty_classes_are_in_vocs_order(tmp_path: Path):
    from detector.data.voc import VOC_CLASSES

    voc_pair(tmp_path, "a", objects=[(name, 1, 1, 5, 5) for name in reversed(VOC_CLASSES)])
    assert read_voc(tmp_path).class_names == list(VOC_CLASSES)


def test_read_voc_a_box_without_extent_is_dropped_a_box_over_the_edge_clipped(tmp_path: Path):
    path = voc_pair(tmp_path, "a", objects=[("cat", 5, 5, 5, 9), ("cat", 5, 5, 9, 5), ("cat", 40.0, 30, 60, 40), ("cat", 7, 3, 4, 9)])
    src = read_voc(tmp_path)
    assert src.dropped == [f"{path} object 0 (cat) (5, 5, 5, 9)", f"{path} object 1 (cat) (5, 5, 9, 5)", f"{path} object 3 (cat) (7, 3, 4, 9)"]
    assert src.clipped == [f"{path} object 2 (cat)"]
    assert src.images[0].boxes == [SourceBox("cat", (39.0, 29.0, 48.0, 36.0))]


def test_read_voc_a_one_pixel_box_has_extent(tmp_path: Path):
    voc_pair(tmp_path, "a", objects=[("cat", 5, 5, 6, 6)])
    assert read_voc(tmp_path).images[0].boxes == [SourceBox("cat", (4.0, 4.0, 6.0, 6.0))]


# ---------------------------------------------------------------------------------------------
# YOLO txt


def yolo_pair(images: Path, labels: Path, stem: str, lines: str | None = "0 0.5 0.5 0.5 0.5\n", size: tuple[int, int] = (40, 20)) -> Path:
    """``images/stem.jpg`` and, unless ``lines`` is None, ``labels/stem.txt``."""
    path = jpeg(images / f"{stem}.jpg", *size)
    if lines is not None:
        labels.mkdir(parents=True, exist_ok=True)
        (labels / f"{stem}.txt").write_text(lines)
    return path


def data_yaml(root: Path, data: dict, name: str = "data.yaml") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(yaml.safe_dump(data))
    return root / name


def test_find_yaml_a_file_by_its_suffix_a_folder_by_a_yaml_with_names(tmp_path: Path):
    for name in ("a.yaml", "b.YML"):
        (tmp_path / name).write_text("x: 1")
        assert find_yaml(tmp_path / name) == tmp_path / name
    (tmp_path / "c.txt").write_text("names: [a]")
    assert find_yaml(tmp_path / "c.txt") is None
    assert find_yaml(tmp_path) is None  # neither a.yaml nor b.YML has names
    (tmp_path / "bad.yaml").write_text("names: [unclosed")
    (tmp_path / "list.yaml").write_text("- names\n")
    (tmp_path / "c.yaml").write_text("names: [a]")
    assert find_yaml(tmp_path) == tmp_path / "c.yaml"
    (tmp_path / "data.yml").write_text("names: [b]")
    assert find_yaml(tmp_path) == tmp_path / "data.yml"
    (tmp_path / "data.yaml").write_text("names: [c]")
    assert find_yaml(tmp_path) == tmp_path / "data.yaml"


def test_looks_like_yolo_a_yaml_or_txt_files_in_a_labels_folder(tmp_path: Path):
    data_yaml(tmp_path / "yaml", {"names": ["a"]})
    assert looks_like_yolo(tmp_path / "yaml")
    for depth, name in enumerate(("labels/a.txt", "labels/train/a.txt", "train/labels/x/a.txt", "x/labels/y/z/a.txt")):
        (tmp_path / str(depth) / name).parent.mkdir(parents=True)
        (tmp_path / str(depth) / name).write_text("0 0.5 0.5 0.1 0.1")
    assert [looks_like_yolo(tmp_path / str(d)) for d in range(4)] == [True, True, True, False]
    for name in ("other/a.txt", "labels/a.TXT"):
        (tmp_path / "no" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "no" / name).write_text("0 0.5 0.5 0.1 0.1")
    assert not looks_like_yolo(tmp_path / "no") and not looks_like_yolo(tmp_path / "missing")


def test_label_path_replaces_the_last_images_folder_and_the_extension():
    assert label_path(Path("/d/images/train/a.b.JPG")) == Path("/d/labels/train/a.b.txt")
    assert label_path(Path("/images/x/images/a.png")) == Path("/images/x/labels/a.txt")
    assert label_path(Path("/d/myimages/a.png")) == Path("/d/myimages/a.txt")


@pytest.mark.parametrize("names, message", [
    ({0: "a", 2: "b"}, "names must have the ids 0..1, got [0, 2]"),
    ({1: "a", 2: "b"}, "names must have the ids 0..1, got [1, 2]"),
    ([], "names must be a list of class names (or {id: name}), got []"),
    ("cat", "names must be a list of class names (or {id: name}), got 'cat'"),
])
def test_read_yolo_bad_names_are_one_line(tmp_path: Path, names, message: str):
    path = data_yaml(tmp_path, {"names": names, "train": "."})
    with pytest.raises(BadRecordError) as info:
        read_yolo(tmp_path)
    assert str(info.value) == f"{path}: {message}"


def test_read_yolo_nc_must_match_names(tmp_path: Path):
    path = data_yaml(tmp_path, {"names": ["a", "b"], "nc": 3, "train": "."})
    with pytest.raises(BadRecordError) as info:
        read_yolo(tmp_path)
    assert str(info.value) == f"{path}: nc is 3 but names has 2 entries"


def test_read_yolo_names_by_id_in_any_order_become_strings(tmp_path: Path):
    yolo_pair(tmp_path / "images", tmp_path / "labels", "a", "1 0.5 0.5 0.5 0.5\n0 0.25 0.25 0.1 0.2\n")
    data_yaml(tmp_path, {"names": {1: 7, 0: "cat"}, "nc": 2, "train": "images"})
    src = read_yolo(tmp_path)
    assert src.root == tmp_path and src.class_names == ["cat", "7"]
    assert src.images[0].boxes == [SourceBox("7", (10.0, 5.0, 30.0, 15.0)), SourceBox("cat", (8.0, 3.0, 12.0, 7.0))]


def test_read_yolo_an_empty_yaml_has_no_names(tmp_path: Path):
    (tmp_path / "x.yaml").write_text("")
    with pytest.raises(BadRecordError) as info:
        read_yolo(tmp_path / "x.yaml")
    assert str(info.value) == f"{tmp_path / 'x.yaml'}: names must be a list of class names (or {{id: name}}), got None"


def test_read_yolo_yaml_entries_folders_lists_and_list_files(tmp_path: Path):
    root = tmp_path / "ds"
    for stem in ("a", "b"):
        yolo_pair(root / "images" / "part1", root / "labels" / "part1", stem)
    yolo_pair(root / "images" / "part2" / "deep", root / "labels" / "part2" / "deep", "c")
    (root / "images" / "part2" / "x.png").mkdir()  # a folder named like an image is no image
    (root / "images" / "part1" / "notes.txt").write_text("")
    yolo_pair(root / "images" / "v", root / "labels" / "v", "d")
    yolo_pair(root / "images" / "v", root / "labels" / "v", "E")
    jpeg(root / "images" / "v" / "F.PNG")
    (root / "images" / "val.txt").write_text(f"  v/d.jpg\n\n{root / 'images' / 'v' / 'E.jpg'}\nv/F.PNG\n")
    path = data_yaml(tmp_path / "cfg", {"path": str(root), "names": ["cat"], "train": ["images/part1", "images/part2"],
                                        "val": "images/val.txt"})
    src = read_yolo(path)
    assert src.root == tmp_path / "cfg"
    assert [(i.path, i.split) for i in src.images] == [
        (root / "images" / "part1" / "a.jpg", "train"), (root / "images" / "part1" / "b.jpg", "train"),
        (root / "images" / "part2" / "deep" / "c.jpg", "train"), (root / "images" / "v" / "d.jpg", "val"),
        (root / "images" / "v" / "E.jpg", "val"), (root / "images" / "v" / "F.PNG", "val")]
    assert src.layout == "data.yaml: train 3 images, val 3 images (splits: train, val)"
    assert src.images[-1].boxes == [] and src.images[0].where == str(root / "labels" / "part1" / "a.txt")


def test_read_yolo_path_relative_to_the_yaml_or_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    yolo_pair(tmp_path / "ds" / "images", tmp_path / "ds" / "labels", "a")
    data_yaml(tmp_path / "cfg", {"path": "../ds", "names": ["cat"], "train": "images"})
    assert [i.path for i in read_yolo(tmp_path / "cfg").images] == [tmp_path / "ds" / "images" / "a.jpg"]
    monkeypatch.setenv("HOME", str(tmp_path))
    data_yaml(tmp_path / "cfg", {"path": "~/ds", "names": ["cat"], "train": "images"})
    assert [i.path for i in read_yolo(tmp_path / "cfg").images] == [tmp_path / "ds" / "images" / "a.jpg"]


def test_read_yolo_roboflows_dot_dot_entries_and_valid(tmp_path: Path):
    for split in ("train", "valid", "test"):
        yolo_pair(tmp_path / split / "images", tmp_path / split / "labels", split)
    data_yaml(tmp_path, {"names": ["cat"], "train": "../train/images", "valid": "../valid/images", "test": "../test/images"})
    src = read_yolo(tmp_path)
    assert [(i.path.name, i.split) for i in src.images] == [("train.jpg", "train"), ("valid.jpg", "val"), ("test.jpg", "test")]
    assert src.layout == "data.yaml: train 1 images, val 1 images, test 1 images (splits: train, val, test)"


def test_read_yolo_val_wins_over_valid_and_a_dot_dot_that_exists_is_kept(tmp_path: Path):
    yolo_pair(tmp_path / "ds" / "images" / "t", tmp_path / "ds" / "labels" / "t", "a")
    yolo_pair(tmp_path / "ds" / "images" / "v", tmp_path / "ds" / "labels" / "v", "b")
    yolo_pair(tmp_path / "ds" / "images" / "w", tmp_path / "ds" / "labels" / "w", "c")
    yolo_pair(tmp_path / "t", tmp_path / "labels_elsewhere", "outside")  # ../t exists beside ds: it is used
    data_yaml(tmp_path / "ds", {"names": ["cat"], "train": "../t", "val": "images/v", "valid": "images/w", "test": ""})
    src = read_yolo(tmp_path / "ds")
    assert [(i.path.name, i.split) for i in src.images] == [("outside.jpg", "train"), ("b.jpg", "val")]


def test_read_yolo_a_missing_entry_and_a_missing_train_are_one_line(tmp_path: Path):
    path = data_yaml(tmp_path, {"names": ["cat"], "train": "../nope/images"})
    with pytest.raises(BadRecordError) as info:
        read_yolo(tmp_path)
    assert str(info.value) == f"{path}: train: ../nope/images is neither a folder nor a list file (looked for {tmp_path / 'nope/images'})"
    (tmp_path / "v").mkdir()
    path = data_yaml(tmp_path, {"names": ["cat"], "val": "v"})
    with pytest.raises(BadRecordError) as info:
        read_yolo(tmp_path)
    assert str(info.value) == f"{path}: no train entry (want train: and val: folders or list files)"


def test_read_yolo_an_image_in_two_splits_is_refused(tmp_path: Path):
    image = yolo_pair(tmp_path / "images", tmp_path / "labels", "a")
    data_yaml(tmp_path, {"names": ["cat"], "train": "images", "val": "images"})
    with pytest.raises(BadRecordError) as info:
        read_yolo(tmp_path)
    assert str(info.value) == f"{image} is in both the train and the val split: each image belongs to one split"


@pytest.mark.parametrize("name_file", ["classes.txt", "obj.names", "classes.names", "_darknet.labels", "labels/classes.txt"])
def test_read_yolo_bare_names_from_any_name_file(tmp_path: Path, name_file: str):
    yolo_pair(tmp_path / "images", tmp_path / "labels", "a", "1 0.5 0.5 0.5 0.5\n")
    (tmp_path / name_file).write_text("\ncat\n  dog  \n\n")
    src = read_yolo(tmp_path)
    assert src.class_names == ["cat", "dog"] and src.images[0].boxes[0].label == "dog" and src.problems == []
    assert src.layout == f"{Path(name_file).name}: all 1 images in images"  # no splits: none said


def test_read_yolo_bare_without_names_or_images_is_one_line(tmp_path: Path):
    (tmp_path / "labels").mkdir()
    with pytest.raises(BadRecordError) as info:
        read_yolo(tmp_path)
    assert str(info.value) == f"{tmp_path}: YOLO labels without class names: add a data.yaml with names: [...] (or classes.txt)"
    (tmp_path / "classes.txt").write_text("cat\n")
    (tmp_path / "train").mkdir()  # a split folder without images/
    with pytest.raises(BadRecordError) as info:
        read_yolo(tmp_path)
    assert str(info.value) == f"{tmp_path}: no images/ folder (want images/ + labels/, or train/images + train/labels)"


def test_read_yolo_bare_split_folders_inside_images_or_around_it(tmp_path: Path):
    inside = tmp_path / "inside"
    for split in ("val", "train"):
        yolo_pair(inside / "images" / split, inside / "labels" / split, split)
    (inside / "images" / "other").mkdir()
    (inside / "classes.txt").write_text("cat\n")
    src = read_yolo(inside)
    assert [(i.path.name, i.split) for i in src.images] == [("train.jpg", "train"), ("val.jpg", "val")]
    assert src.layout == "classes.txt: train 1 images in images/train, val 1 images in images/val (splits: train, val)"
    around = tmp_path / "around"
    for split in ("valid", "train", "Test"):
        yolo_pair(around / split / "images", around / split / "labels", split)
    (around / "other" / "images").mkdir(parents=True)
    (around / "train.txt").write_text("")  # a file named like a split: not a folder
    (around / "labels").mkdir()
    (around / "labels" / "obj.names").write_text("cat\n")
    src = read_yolo(around)
    assert [(i.path.name, i.split) for i in src.images] == [("Test.jpg", "test"), ("train.jpg", "train"), ("valid.jpg", "val")]
    assert src.layout == ("obj.names: test 1 images in Test/images, train 1 images in train/images, val 1 images in valid/images "
                          "(splits: train, val, test)")


def test_read_yolo_bare_split_folder_with_images_beats_a_plain_images_folder(tmp_path: Path):
    yolo_pair(tmp_path / "train" / "images", tmp_path / "train" / "labels", "a")
    yolo_pair(tmp_path / "images", tmp_path / "labels", "b")
    (tmp_path / "classes.txt").write_text("cat\n")
    assert [(i.path.name, i.split) for i in read_yolo(tmp_path).images] == [("a.jpg", "train")]


def test_read_yolo_label_lines_boxes_dropped_and_clipped(tmp_path: Path):
    yolo_pair(tmp_path / "images", tmp_path / "labels", "a",
              "\n0 0.5 0.5 0.5 0.5\n  \n1 0.875 0.125 0.5 0.25\n0 0.5 0.5 0 0.2\n1.0 0.25 0.75 0.5 0.5\n")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    src = read_yolo(tmp_path)
    label = tmp_path / "labels" / "a.txt"
    assert src.images[0].boxes == [SourceBox("cat", (10.0, 5.0, 30.0, 15.0)), SourceBox("dog", (25.0, 0.0, 40.0, 5.0)),
                                   SourceBox("dog", (0.0, 10.0, 20.0, 20.0))]
    assert src.clipped == [f"{label} line 4"] and src.dropped == [f"{label} line 5 (0.5 0.5 0 0.2)"]
    assert (src.images[0].where, src.problems) == (str(label), [])


@pytest.mark.parametrize("line, message, reason", [
    ("0 0.5 0.5 0.2", "expected 'class cx cy w h' (an integer and four numbers), got '0 0.5 0.5 0.2'", "malformed line"),
    ("0 0.5 0.5 0.2 0.2 0.9", "expected 'class cx cy w h' (an integer and four numbers), got '0 0.5 0.5 0.2 0.2 0.9'", "malformed line"),
    ("cat 0.5 0.5 0.2 0.2 ", "expected 'class cx cy w h' (an integer and four numbers), got 'cat 0.5 0.5 0.2 0.2'", "malformed line"),
    ("0.5 0.5 0.5 0.2 0.2", "expected 'class cx cy w h' (an integer and four numbers), got '0.5 0.5 0.5 0.2 0.2'", "malformed line"),
    ("2 0.5 0.5 0.2 0.2", "class 2 is not one of the 2 classes (0..1)", "unknown class"),
    ("-1 0.5 0.5 0.2 0.2", "class -1 is not one of the 2 classes (0..1)", "unknown class"),
    ("0 1.7 0.5 0.2 0.2", "box outside the image (cx cy w h = 1.7 0.5 0.2 0.2, image 40 x 20)", "box outside the image"),
])
def test_read_yolo_a_bad_line_condemns_its_image_naming_file_and_line(tmp_path: Path, line: str, message: str, reason: str):
    image = yolo_pair(tmp_path / "images", tmp_path / "labels", "a", f"1 0.5 0.5 0.5 0.5\n\n{line}\n")
    yolo_pair(tmp_path / "images", tmp_path / "labels", "b")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    src = read_yolo(tmp_path)
    assert [i.path.name for i in src.images] == ["b.jpg"]
    assert src.problems == [Problem(f"{tmp_path / 'labels' / 'a.txt'} line 3: {message}", reason, str(image), 2, None)]


def test_read_yolo_every_bad_line_of_a_label_file_is_named(tmp_path: Path):
    yolo_pair(tmp_path / "images", tmp_path / "labels", "a", "0 0.5\n5 0.5 0.5 0.2 0.2\n0 1.7 0.5 0.2 0.2\nx\n7 0.5 0.5 0.2 0.2\n0 0.5 1.7 0.2 0.2\n")
    (tmp_path / "classes.txt").write_text("cat\n")
    src = read_yolo(tmp_path)
    assert [(p.message.split(": ")[0].rsplit(" ", 1)[1], p.reason, p.boxes) for p in src.problems] == [
        ("1", "malformed line", 6), ("2", "unknown class", 6), ("3", "box outside the image", 6), ("4", "malformed line", 6),
        ("5", "unknown class", 6), ("6", "box outside the image", 6)]


def test_read_yolo_an_undecodable_image_and_a_label_without_an_image(tmp_path: Path):
    image = yolo_pair(tmp_path / "images" / "train", tmp_path / "labels" / "train", "a", "0 0.5 0.5 0.2 0.2\n\n0 0.5 0.5 0.2 0.2\n")
    image.write_bytes(b"not an image")
    unlabelled = yolo_pair(tmp_path / "images" / "train", tmp_path / "labels" / "train", "b0", None)
    unlabelled.write_bytes(b"not an image either")  # no label file: no boxes lost
    yolo_pair(tmp_path / "images" / "train", tmp_path / "labels" / "train", "c")
    yolo_pair(tmp_path / "images" / "val", tmp_path / "labels" / "val", "b", None)  # no label file: a negative
    (tmp_path / "labels" / "val").mkdir()
    (tmp_path / "labels" / "val" / "zz.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "val" / "classes.txt").write_text("cat\n")  # a name file among the labels: not a label
    (tmp_path / "labels" / "elsewhere").mkdir()
    (tmp_path / "labels" / "elsewhere" / "x.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # no image names this folder: not looked at
    data_yaml(tmp_path, {"names": ["cat"], "train": "images/train", "val": "images/val"})
    src = read_yolo(tmp_path)
    assert [(i.path.name, i.split, i.boxes) for i in src.images] == [("c.jpg", "train", [SourceBox("cat", (10.0, 5.0, 30.0, 15.0))]),
                                                                     ("b.jpg", "val", [])]
    assert src.problems == [
        Problem(f"{image}: image cannot be decoded (not an image file PIL knows)", "image cannot be decoded", str(image), 2, "train"),
        Problem(f"{unlabelled}: image cannot be decoded (not an image file PIL knows)", "image cannot be decoded", str(unlabelled), 0, "train"),
        Problem(f"{tmp_path / 'labels' / 'val' / 'zz.txt'}: a label file without an image (no zz.* among the images)",
                "label file without an image", str(tmp_path / "labels" / "val" / "zz.txt"), 1, "val"),
    ]


def test_read_yolo_label_folders_are_checked_in_sorted_order_with_the_first_split_seen(tmp_path: Path):
    yolo_pair(tmp_path / "images" / "b", tmp_path / "labels" / "b", "x")
    yolo_pair(tmp_path / "images" / "a", tmp_path / "labels" / "a", "y")
    (tmp_path / "labels" / "b" / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "a" / "orphan.txt").write_text("")
    data_yaml(tmp_path, {"names": ["cat"], "train": "images/b", "val": "images/a", "test": "images/b/x.jpg.list"})
    (tmp_path / "images" / "b" / "x.jpg.list").write_text("")
    src = read_yolo(tmp_path)
    assert [(p.image, p.boxes, p.split) for p in src.problems] == [
        (str(tmp_path / "labels" / "a" / "orphan.txt"), 0, "val"), (str(tmp_path / "labels" / "b" / "orphan.txt"), 1, "train")]
