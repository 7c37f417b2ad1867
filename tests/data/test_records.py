"""Records: parsing COCO JSON, validation at load (one test per bad input), image decoding."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coco_files import tiny_coco, write_jpeg, write_json
from detector.data.image import ImageDecodeError, load_image, read_image_size, reduced_size
from detector.data.records import BadRecordError, load_records, read_class_names


@pytest.fixture
def coco(tmp_path: Path) -> dict:
    return tiny_coco(tmp_path)


def load(tmp_path: Path, data: dict, **kwargs):
    return load_records(write_json(tmp_path / "split.json", data), tmp_path / "images", **kwargs)


def expect_error(tmp_path: Path, data: dict, *names: str) -> str:
    """Loading must fail with a message naming the JSON file and every string in ``names``."""
    with pytest.raises(BadRecordError) as info:
        load(tmp_path, data)
    message = str(info.value)
    for name in ("split.json", *names):
        assert name in message, f"{name!r} not in {message!r}"
    return message


# ------------------------------------------------------------------------------------ good input


def test_voc_sample(voc_sample: Path):
    json_path = voc_sample / "pascal_sample2007.json"
    split = load_records(json_path, voc_sample / "JPEGImages")
    raw = json.loads(json_path.read_text())
    assert (split.report.images, split.report.boxes, split.report.difficult) == (13, 42, 7)
    assert split.class_names == [c["name"] for c in raw["categories"]]
    label_of = {c["id"]: i for i, c in enumerate(raw["categories"])}
    by_id = {a["id"]: a for a in raw["annotations"]}
    for record in split.records:
        assert record.path.is_absolute() and record.path.is_file()
        assert record.boxes.dtype == np.float32 and record.labels.dtype == np.int64
        for ann_id, box, label, difficult in zip(record.ann_ids, record.boxes, record.labels, record.difficult):
            x, y, w, h = by_id[ann_id]["bbox"]
            np.testing.assert_allclose(box, [x, y, x + w, y + h])
            assert label == label_of[by_id[ann_id]["category_id"]]
            assert difficult == bool(by_id[ann_id]["ignore"])
            assert by_id[ann_id]["image_id"] == record.image_id
    assert "13 images" in split.summary() and "42 boxes" in split.summary()


def test_tiny_json_labels_difficult_clipping_negatives(tmp_path: Path, coco: dict):
    split = load(tmp_path, coco)
    assert split.class_names == ["dog", "cat"]
    a, b, c = split.records
    assert [r.image_id for r in split.records] == [10, 11, 12]
    np.testing.assert_array_equal(a.boxes, [[4, 6, 24, 16], [30, 20, 54, 40]])
    np.testing.assert_array_equal(a.labels, [0, 1])  # category 7 is listed first
    np.testing.assert_array_equal(a.difficult, [False, True])
    np.testing.assert_array_equal(b.boxes, [[50, 8, 64, 20]])  # overflowed 64 px by 4, clipped
    assert c.boxes.shape == (0, 4) and c.labels.shape == (0,)  # a negative is kept
    r = split.report
    assert (r.images, r.boxes, r.difficult, r.negatives, r.clipped) == (3, 3, 1, 1, 1)
    assert (r.skipped_images, r.skipped_annotations) == (0, 0)
    with pytest.raises(ValueError):
        a.boxes[0, 0] = 1.0  # records are read-only


def test_iscrowd_counts_as_difficult(tmp_path: Path, coco: dict):
    coco["annotations"][0]["iscrowd"] = 1
    assert load(tmp_path, coco).records[0].difficult.tolist() == [True, True]


def test_read_class_names(tmp_path: Path, coco: dict):
    assert read_class_names(write_json(tmp_path / "x.json", coco)) == ["dog", "cat"]


def test_verify_images_off_does_not_touch_files(tmp_path: Path, coco: dict):
    (tmp_path / "images" / "a.jpg").unlink()
    assert load(tmp_path, coco, verify_images=False).report.images == 3


# ------------------------------------------------------------------------------------ bad files


def test_not_utf8(tmp_path: Path, coco: dict):
    (tmp_path / "split.json").write_bytes(json.dumps(coco).replace("dog", "d\xf6g").encode("latin-1"))
    with pytest.raises(BadRecordError, match=r"split\.json: not UTF-8 text \(byte \d+"):
        load_records(tmp_path / "split.json", tmp_path / "images")


def test_truncated_json(tmp_path: Path, coco: dict):
    text = json.dumps(coco)
    (tmp_path / "split.json").write_text(text[: len(text) // 2])
    with pytest.raises(BadRecordError, match=r"split\.json: invalid or truncated JSON at line 1 column \d+"):
        load_records(tmp_path / "split.json", tmp_path / "images")


def test_missing_json_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_records(tmp_path / "nothing.json", tmp_path)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(tmp_path: Path, coco: dict, key: str):
    del coco[key]
    expect_error(tmp_path, coco, f"missing top-level key '{key}'")


def test_category_missing_key(tmp_path: Path, coco: dict):
    del coco["categories"][1]["name"]
    expect_error(tmp_path, coco, "categories[1] must be an object with 'id' and 'name'")


def test_duplicate_category_id(tmp_path: Path, coco: dict):
    coco["categories"].append({"id": 7, "name": "wolf"})
    expect_error(tmp_path, coco, "duplicate category id 7")


# ------------------------------------------------------------------------------------ bad records


def test_missing_image_key(tmp_path: Path, coco: dict):
    del coco["images"][1]["width"]
    expect_error(tmp_path, coco, "image id 11", "missing key(s) ['width']")


def test_missing_annotation_key(tmp_path: Path, coco: dict):
    del coco["annotations"][2]["bbox"]
    expect_error(tmp_path, coco, "annotation id 3", "image id 11", "b.jpg", "missing key(s) ['bbox']")


def test_duplicate_image_id(tmp_path: Path, coco: dict):
    coco["images"][2]["id"] = 11
    expect_error(tmp_path, coco, "image id 11", "c.jpg", "duplicate image id")


def test_duplicate_annotation_id(tmp_path: Path, coco: dict):
    coco["annotations"][2]["id"] = 1
    expect_error(tmp_path, coco, "annotation id 1", "image id 11", "duplicate annotation id")


def test_annotation_for_unknown_image(tmp_path: Path, coco: dict):
    coco["annotations"][2]["image_id"] = 99
    expect_error(tmp_path, coco, "annotation id 3", "image id 99", "unknown image id")


def test_unknown_category(tmp_path: Path, coco: dict):
    coco["annotations"][0]["category_id"] = 4
    expect_error(tmp_path, coco, "annotation id 1", "image id 10", "a.jpg", "unknown category_id 4")


@pytest.mark.parametrize("bbox", [[4, 6, 0, 10], [4, 6, 20, 0], [4, 6, -3, 10], [4, 6, 20, -1]])
def test_bbox_without_area(tmp_path: Path, coco: dict, bbox: list):
    coco["annotations"][0]["bbox"] = bbox
    expect_error(tmp_path, coco, "annotation id 1", "image id 10", "width or height <= 0")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_bbox_not_finite(tmp_path: Path, coco: dict, bad: float):
    coco["annotations"][1]["bbox"][2] = bad  # json.dumps writes NaN / Infinity, which json.loads reads
    expect_error(tmp_path, coco, "annotation id 2", "image id 10", "NaN or infinite")


@pytest.mark.parametrize("bbox", [[70, 6, 10, 10], [4, 48, 10, 5], [-30, 6, 20, 10], [4, -12, 10, 12]])
def test_bbox_wholly_outside(tmp_path: Path, coco: dict, bbox: list):
    coco["annotations"][0]["bbox"] = bbox
    expect_error(tmp_path, coco, "annotation id 1", "image id 10", "wholly outside the 64 x 48 image")


def test_missing_image_file(tmp_path: Path, coco: dict):
    (tmp_path / "images" / "b.jpg").unlink()
    expect_error(tmp_path, coco, "image id 11", "b.jpg", "image file not found")


def test_unreadable_image_file(tmp_path: Path, coco: dict):
    (tmp_path / "images" / "b.jpg").unlink()
    (tmp_path / "images" / "b.jpg").mkdir()  # a folder where the file should be: open() fails
    expect_error(tmp_path, coco, "image id 11", "b.jpg", "unreadable image file")


def test_corrupt_image(tmp_path: Path, coco: dict):
    (tmp_path / "images" / "c.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    expect_error(tmp_path, coco, "image id 12", "c.jpg", "corrupt or unsupported image", "not that of any known image format")


def test_image_size_disagrees_with_json(tmp_path: Path, coco: dict):
    coco["images"][0]["width"] = 65
    expect_error(tmp_path, coco, "image id 10", "a.jpg", "image is 64 x 48", "JSON says 65 x 48")


def test_error_lists_every_problem(tmp_path: Path, coco: dict):
    coco["annotations"][0]["category_id"] = 4
    (tmp_path / "images" / "c.jpg").unlink()
    message = expect_error(tmp_path, coco, "2 bad record(s)", "annotation id 1", "image id 12")
    assert "on_bad_record='skip'" in message


# ------------------------------------------------------------------------------------ skip mode


def test_skip_keeps_good_records_and_logs(tmp_path: Path, coco: dict, caplog: pytest.LogCaptureFixture):
    coco["annotations"][1]["bbox"][3] = 0  # bad annotation: its whole image (10) goes
    coco["annotations"].append({"id": 9, "image_id": 77, "bbox": [1, 1, 5, 5], "category_id": 3})  # orphan
    (tmp_path / "images" / "c.jpg").unlink()  # image 12 goes
    with caplog.at_level(logging.WARNING, logger="detector.data.records"):
        split = load(tmp_path, coco, on_bad_record="skip")
    assert [r.image_id for r in split.records] == [11]
    r = split.report
    assert (r.images, r.boxes, r.skipped_images, r.skipped_annotations) == (1, 1, 2, 3)
    assert len(r.problems) == 3
    skips = [m for m in caplog.messages if m.startswith("skipped: ")]
    assert len(skips) == 3
    assert any("annotation id 2" in m for m in skips) and any("annotation id 9" in m for m in skips)
    assert any("image id 12" in m for m in skips)
    assert any("skipped 2 images and 3 annotations" in m for m in caplog.messages)
    assert "skipped 2 images and 3 annotations" in split.summary()


def test_on_bad_record_must_be_known(tmp_path: Path, coco: dict):
    with pytest.raises(ValueError, match="on_bad_record"):
        load(tmp_path, coco, on_bad_record="ignore")


# ------------------------------------------------------------------------------------ decoding


@pytest.fixture
def upright() -> np.ndarray:
    """A 60 x 40 picture that is not symmetric under any flip or turn."""
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = (200, 30, 30)
    pixels[:, 30:] = (30, 30, 200)
    pixels[:12, :12] = (30, 200, 30)
    return pixels


def assert_close(a: np.ndarray, b: np.ndarray, tol: float = 6.0):
    assert a.shape == b.shape and a.dtype == np.uint8
    assert np.abs(a.astype(float) - b).mean() < tol


@pytest.mark.parametrize("mode, suffix", [("RGB", "jpg"), ("CMYK", "jpg"), ("RGBA", "png"), ("P", "png")])
def test_colour_modes_load_as_rgb(tmp_path: Path, upright: np.ndarray, mode: str, suffix: str):
    path = tmp_path / f"x.{suffix}"
    Image.fromarray(upright).convert(mode).save(path, **({"quality": 95} if suffix == "jpg" else {}))
    with Image.open(path) as im:
        assert im.mode == mode
    expected = np.asarray(Image.fromarray(upright).convert(mode).convert("RGB"))  # palette quantises
    assert_close(load_image(path), expected)
    assert read_image_size(path) == (60, 40)


def test_grayscale_loads_as_three_equal_channels(tmp_path: Path, upright: np.ndarray):
    path = tmp_path / "g.jpg"
    gray = Image.fromarray(upright).convert("L")
    gray.save(path, quality=95)
    image = load_image(path)
    assert image.shape == (40, 60, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    assert_close(image[..., :1], np.asarray(gray)[..., None])


# EXIF orientation -> how the stored pixels were turned (np.rot90 k, counter-clockwise) so that
# the viewer's correction brings back the upright picture.
@pytest.mark.parametrize("orientation, k", [(3, 2), (6, 1), (8, -1)])
def test_exif_rotated_jpeg_loads_upright(tmp_path: Path, upright: np.ndarray, orientation: int, k: int):
    path = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, k))).save(path, quality=95, exif=exif)
    assert_close(load_image(path), upright)
    assert read_image_size(path) == (60, 40)


def test_decode_failure_names_the_file(tmp_path: Path):
    path = tmp_path / "broken.jpg"
    pixels = write_jpeg(path, 64, 48)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated: the header still reads
    assert read_image_size(path) == (pixels.shape[1], pixels.shape[0])
    with pytest.raises(ImageDecodeError, match=r"broken.jpg: cannot be decoded: .*truncated"):
        load_image(path)
    with pytest.raises(ImageDecodeError, match="gone.jpg: file not found"):
        load_image(tmp_path / "gone.jpg")


@pytest.mark.parametrize("width, height", [(447, 600), (448, 600), (999, 801), (1800, 900), (300, 200)])
def test_large_jpeg_decodes_reduced_but_whole(tmp_path: Path, width: int, height: int):
    path = tmp_path / "big.jpg"
    full = write_jpeg(path, width, height, [[0, 0, width // 2, height // 2]])  # red top-left quarter
    image = load_image(path, min_side=224)
    h, w = image.shape[:2]
    assert (w, h) == reduced_size((width, height), 224)
    if (w, h) == (width, height):
        assert_close(image, full, tol=10.0)  # too small to reduce: the full decode (noise costs JPEG bits)
    else:
        assert 224 <= min(w, h) and w < width and h < height
        red = image[..., 0].astype(int) - image[..., 1] > 100  # (h, w) the quarter, at the reduced scale
        ys, xs = np.nonzero(red)
        assert abs(xs.max() + 1 - w / 2) <= 1.5 and abs(ys.max() + 1 - h / 2) <= 1.5 and xs.min() == ys.min() == 0


def test_every_malformed_entry_is_listed_with_its_id_place_and_reason(tmp_path: Path, coco: dict):
    coco["images"] += [
        "not an object",
        {"id": 20, "file_name": "x.jpg", "width": 64},
        {"id": "21", "file_name": "y.jpg", "width": 64, "height": 48},
        {"id": 10, "file_name": "dup.jpg", "width": 64, "height": 48},
        {"id": 22, "file_name": "w0.jpg", "width": 0, "height": 48},
        {"id": 23, "file_name": "h0.jpg", "width": 64, "height": 0},
        {"id": 24, "file_name": "s.jpg", "width": "64", "height": 48},
        {"id": 25, "file_name": "one.jpg", "width": 1, "height": 1},  # the smallest valid image
    ]
    coco["annotations"] += ["not an object", {"id": 9, "image_id": 11}]
    split = load(tmp_path, coco, on_bad_record="skip", verify_images=False)
    json_path = tmp_path / "split.json"
    assert split.report.problems == (
        f"{json_path}: image id ? (images[3]): expected an object, got 'not an object'",
        f"{json_path}: image id 20 (images[4]): missing key(s) ['height']",
        f"{json_path}: image id 21 (images[5]): id is not an integer",
        f"{json_path}: image id 10 (dup.jpg): duplicate image id (also a.jpg)",
        f"{json_path}: image id 22 (w0.jpg): width and height must be positive integers, got 0 x 48",
        f"{json_path}: image id 23 (h0.jpg): width and height must be positive integers, got 64 x 0",
        f"{json_path}: image id 24 (s.jpg): width and height must be positive integers, got '64' x 48",
        f"{json_path}: annotation id ? (image id ?, annotations[3]): expected an object, got 'not an object'",
        f"{json_path}: annotation id 9 (image id 11, b.jpg): missing key(s) ['bbox', 'category_id']",
    )
    assert split.report.reasons == (
        ("malformed image entry",) * 3 + ("duplicate id",) + ("malformed image entry",) * 3
        + ("malformed annotation",) * 2
    )
    assert [r.image_id for r in split.records] == [12, 25]  # 10 (duplicated) and 11 (a bad annotation) dropped


def test_every_bad_annotation_is_listed_with_its_id_place_and_reason(tmp_path: Path, coco: dict):
    ok = {"image_id": 12, "category_id": 7}
    coco["annotations"] += [
        {"id": 30, "image_id": 99, "bbox": [1, 1, 5, 5], "category_id": 7},
        {**ok, "id": "31", "bbox": [1, 1, 5, 5]},
        {**ok, "id": 1, "bbox": [1, 1, 5, 5]},
        {**ok, "id": 32, "bbox": [1, 1, 5, 5], "category_id": 5},
        {**ok, "id": 33, "bbox": [1, 1, 5]},
        {**ok, "id": 34, "bbox": [1, 1, float("inf"), 5]},
        {**ok, "id": 35, "bbox": [1, 1, 0, 5]},
        {**ok, "id": 36, "bbox": [1, 1, 5, -1]},
        {**ok, "id": 37, "bbox": [64, 1, 5, 5]},
        {**ok, "id": 38, "bbox": [1, 48, 5, 5]},
    ]
    split = load(tmp_path, coco, on_bad_record="skip", verify_images=False)
    json_path = tmp_path / "split.json"
    assert split.report.problems == tuple(f"{json_path}: annotation id {p}" for p in (
        "30 (image id 99, annotations[3]): unknown image id",
        "31 (image id 12, c.jpg): id is not an integer",
        "1 (image id 12, c.jpg): duplicate annotation id (also on image id 10)",
        "32 (image id 12, c.jpg): unknown category_id 5",
        "33 (image id 12, c.jpg): bbox must be 4 numbers [x, y, w, h], got [1, 1, 5]",
        "34 (image id 12, c.jpg): bbox has a NaN or infinite value: [1, 1, inf, 5]",
        "35 (image id 12, c.jpg): bbox [x, y, w, h] = [1, 1, 0, 5] has width or height <= 0",
        "36 (image id 12, c.jpg): bbox [x, y, w, h] = [1, 1, 5, -1] has width or height <= 0",
        "37 (image id 12, c.jpg): bbox [x, y, w, h] = [64, 1, 5, 5] lies wholly outside the 64 x 48 image",
        "38 (image id 12, c.jpg): bbox [x, y, w, h] = [1, 48, 5, 5] lies wholly outside the 64 x 48 image",
    ))
    assert split.report.reasons == (
        "unknown image id", "malformed annotation", "duplicate id", "unknown class", "malformed box", "malformed box",
        "box without extent", "box without extent", "box outside the image", "box outside the image",
    )
    assert [r.image_id for r in split.records] == [11]  # 10: its annotation id reused; 12: bad annotations


def test_annotation_image_id_that_is_not_an_integer_is_reported_not_a_crash(tmp_path: Path, coco: dict):
    coco["images"].append({"id": 20, "file_name": "x.jpg", "width": 0, "height": 48})  # a bad image entry
    box = {"bbox": [1, 1, 5, 5], "category_id": 7}
    coco["annotations"] += [
        {**box, "id": 40, "image_id": [10]},  # unhashable: was a bare TypeError
        {**box, "id": 41, "image_id": {"id": 10}},
        {**box, "id": 42, "image_id": 20.0},  # not the bad image 20: a float is no image id
        {**box, "id": 43, "image_id": 20},  # goes with its bad image, reported once already
    ]
    expect_error(tmp_path, coco, "4 bad record(s)", "annotation id 40 (image id [10], annotations[3]): unknown image id")
    split = load(tmp_path, coco, on_bad_record="skip", verify_images=False)
    json_path = tmp_path / "split.json"
    assert split.report.problems == (
        f"{json_path}: image id 20 (x.jpg): width and height must be positive integers, got 0 x 48",
        f"{json_path}: annotation id 40 (image id [10], annotations[3]): unknown image id",
        f"{json_path}: annotation id 41 (image id {{'id': 10}}, annotations[4]): unknown image id",
        f"{json_path}: annotation id 42 (image id 20.0, annotations[5]): unknown image id",
    )
    assert split.report.reasons == ("malformed image entry",) + ("unknown image id",) * 3
    assert [r.image_id for r in split.records] == [10, 11, 12]
    assert (split.report.skipped_images, split.report.skipped_annotations) == (1, 4)


def test_record_arrays_sizes_and_summary(tmp_path: Path, coco: dict):
    split = load(tmp_path, coco)
    json_path = tmp_path / "split.json"
    for r in split.records:  # c.jpg is a negative: its arrays are empty, and keep their dtypes
        assert (r.boxes.dtype, r.labels.dtype, r.difficult.dtype, r.ann_ids.dtype) == (np.float32, np.int64, bool, np.int64)
        assert r.boxes.shape == (len(r.labels), 4) and r.labels.shape == r.difficult.shape == r.ann_ids.shape
        assert (r.width, r.height) == (64, 48)
    assert [r.ann_ids.tolist() for r in split.records] == [[1, 2], [3], []]
    assert split.category_ids == [7, 3]  # the JSON id of label i
    assert split.json_path == json_path
    assert split.summary() == (
        f"{json_path}: 3 images (1 without objects), 3 boxes in 2 classes, 1 difficult, 1 clipped to their image; "
        "skipped 0 images and 0 annotations."
    )


def test_boxes_and_images_of_one_pixel_are_valid(tmp_path: Path, coco: dict):
    coco["images"] += [
        {"id": 25, "file_name": "one.jpg", "width": 1, "height": 1},
        {"id": 26, "file_name": "flat.jpg", "width": 64, "height": 0},  # bad: nothing to check its box against
    ]
    coco["annotations"] += [
        {"id": 50, "image_id": 12, "bbox": [4, 6, 1, 1], "category_id": 7},
        {"id": 51, "image_id": 12, "bbox": [4, 6, 0.5, 0.25], "category_id": 7},
        {"id": 52, "image_id": 25, "bbox": [0, 0, 2, 3], "category_id": 3},  # overflows the 1 x 1 image
        {"id": 53, "image_id": 25, "bbox": [0, 0, 1, 1], "category_id": 3},  # fits: the clipped count stays
        {"id": 54, "image_id": 26, "bbox": [1, 1, 5, 5], "category_id": 3},
    ]
    split = load(tmp_path, coco, on_bad_record="skip", verify_images=False)
    assert split.report.problems == (
        f"{tmp_path / 'split.json'}: image id 26 (flat.jpg): width and height must be positive integers, got 64 x 0",
    )
    assert [r.image_id for r in split.records] == [10, 11, 12, 25]
    np.testing.assert_array_equal(split.records[2].boxes, [[4, 6, 5, 7], [4, 6, 4.5, 6.25]])
    np.testing.assert_array_equal(split.records[3].boxes, [[0, 0, 1, 1], [0, 0, 1, 1]])
    r = split.report
    assert (r.images, r.boxes, r.negatives, r.clipped, r.skipped_images, r.skipped_annotations) == (4, 7, 0, 2, 1, 1)


@pytest.mark.parametrize("bbox", [["4", 6, 20, 10], [4, 6, True, 10], [4, None, 20, 10], "4 6 20 10", {"x": 4}])
def test_bbox_not_four_numbers(tmp_path: Path, coco: dict, bbox):
    coco["annotations"][0]["bbox"] = bbox
    expect_error(tmp_path, coco, f"annotation id 1 (image id 10, a.jpg): bbox must be 4 numbers [x, y, w, h], got {bbox!r}")


def test_annotations_without_ids_and_orphans_are_each_reported(tmp_path: Path, coco: dict):
    coco["images"].append({"id": 20, "file_name": "x.jpg", "width": 64})  # malformed: never an image
    box = {"bbox": [1, 1, 5, 5], "category_id": 7}
    coco["annotations"] += [
        {"image_id": 11, **box},  # annotations[3]: no id
        {"id": 60, **box},  # no image_id
        {"id": 61, "image_id": 20, **box},  # on the malformed image 20: goes with it, not reported again
        {"id": 62, "image_id": 99, "category_id": 7},  # no bbox, on an unknown image
        {"id": 63, "image_id": 99, **box},  # image 99 is still unknown, not a bad image: reported
        {"id": 64, "image_id": 98, **box},
        {"id": 65, "image_id": 98, **box},
        {"id": 66, "image_id": 12, **box},  # the checks go on to the last annotation
    ]
    split = load(tmp_path, coco, on_bad_record="skip", verify_images=False)
    json_path = tmp_path / "split.json"
    assert split.report.problems == (
        f"{json_path}: image id 20 (images[3]): missing key(s) ['height']",
        f"{json_path}: annotation id ? (image id 11, b.jpg): missing key(s) ['id']",
        f"{json_path}: annotation id 60 (image id ?, annotations[4]): missing key(s) ['image_id']",
        f"{json_path}: annotation id 62 (image id 99, annotations[6]): missing key(s) ['bbox']",
        f"{json_path}: annotation id 63 (image id 99, annotations[7]): unknown image id",
        f"{json_path}: annotation id 64 (image id 98, annotations[8]): unknown image id",
        f"{json_path}: annotation id 65 (image id 98, annotations[9]): unknown image id",
    )
    assert split.report.reasons == ("malformed image entry",) + ("malformed annotation",) * 3 + ("unknown image id",) * 3
    assert [r.image_id for r in split.records] == [10, 12]  # 11 has an annotation without id
    assert split.records[1].ann_ids.tolist() == [66]


def test_image_without_id(tmp_path: Path, coco: dict):
    coco["images"].append({"file_name": "x.jpg", "width": 64, "height": 48})
    split = load(tmp_path, coco, on_bad_record="skip", verify_images=False)
    assert split.report.problems == (f"{tmp_path / 'split.json'}: image id ? (images[3]): missing key(s) ['id']",)


def test_every_bad_image_file_is_listed_with_its_id_file_and_reason(tmp_path: Path, coco: dict):
    coco["images"].append({"id": 13, "file_name": "d.jpg", "width": 64, "height": 48})
    images = tmp_path / "images"
    (images / "a.jpg").unlink()
    (images / "b.jpg").unlink()
    (images / "b.jpg").mkdir()  # a folder where the file should be: open() fails
    (images / "c.jpg").write_bytes(b"not an image")
    write_jpeg(images / "d.jpg", 60, 48)
    split = load(tmp_path, coco, on_bad_record="skip")
    json_path = tmp_path / "split.json"
    first, unreadable, corrupt, size = split.report.problems
    assert first == f"{json_path}: image id 10 (a.jpg): image file not found: {images / 'a.jpg'}"
    # the rest of this line is the operating system's own words, which differ between systems
    assert unreadable.startswith(f"{json_path}: image id 11 (b.jpg): unreadable image file: ")
    assert str(images / "b.jpg") in unreadable
    assert corrupt == (
        f"{json_path}: image id 12 (c.jpg): corrupt or unsupported image: "
        f"{images / 'c.jpg'}: the header is not that of any known image format"
    )
    assert size == (
        f"{json_path}: image id 13 (d.jpg): image is 60 x 48 (width x height, EXIF orientation applied) "
        "but the JSON says 64 x 48"
    )
    assert split.report.reasons == (
        "image file not found", "image cannot be read", "image cannot be decoded", "image size differs from the JSON",
    )
    assert split.records == [] and split.report.skipped_images == 4


@pytest.mark.parametrize("categories, message", [
    ([{"id": "7", "name": "dog"}], "category id '7' (categories[0]) is not an integer"),
    ([{"id": 7, "name": "dog"}, {"name": "cat"}], "categories[1] must be an object with 'id' and 'name', got {'name': 'cat'}"),
    ([5], "categories[0] must be an object with 'id' and 'name', got 5"),
    ([], "'categories' is empty"),
])
def test_bad_categories_message(tmp_path: Path, coco: dict, categories: list, message: str):
    coco["categories"] = categories
    json_path = write_json(tmp_path / "split.json", coco)
    with pytest.raises(BadRecordError) as info:
        load_records(json_path, tmp_path / "images")
    assert str(info.value) == f"{json_path}: {message}"
    with pytest.raises(BadRecordError) as info:
        read_class_names(json_path)
    assert str(info.value) == f"{json_path}: {message}"


@pytest.mark.parametrize("data, message", [
    ([], "top level is a list, expected an object"),
    ({"images": {}, "annotations": [], "categories": []}, "'images' is a dict, expected a list"),
    ({"images": [], "annotations": [], "categories": "dog"}, "'categories' is a str, expected a list"),
])
def test_bad_top_level_message(tmp_path: Path, data, message: str):
    json_path = write_json(tmp_path / "split.json", data)
    with pytest.raises(BadRecordError) as info:
        load_records(json_path, tmp_path)
    assert str(info.value) == f"{json_path}: {message}"


def test_not_utf8_message_shows_the_byte(tmp_path: Path):
    raw = b'{"images": [], "annotations": [], "categories": [{"id": 1, "name": "d\xf6g"}]}'
    json_path = tmp_path / "split.json"
    json_path.write_bytes(raw)
    with pytest.raises(BadRecordError) as info:
        load_records(json_path, tmp_path)
    assert str(info.value) == f"{json_path}: not UTF-8 text (byte {raw.index(0xF6)}: " + r"b'\xf6')"


def test_byte_order_mark_is_tolerated(tmp_path: Path, coco: dict):
    (tmp_path / "split.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(coco).encode())
    assert load_records(tmp_path / "split.json", tmp_path / "images").class_names == ["dog", "cat"]


@pytest.mark.parametrize("n, tail", [(1, ""), (20, ""), (21, "\n  ... and 1 more"), (23, "\n  ... and 3 more")])
def test_error_lists_twenty_problems_then_counts_the_rest(tmp_path: Path, coco: dict, n: int, tail: str):
    box = {"image_id": 99, "bbox": [1, 1, 5, 5], "category_id": 7}
    coco["annotations"] += [{"id": 100 + k, **box} for k in range(n)]
    json_path = tmp_path / "split.json"
    lines = [f"{json_path}: annotation id {100 + k} (image id 99, annotations[{3 + k}]): unknown image id" for k in range(n)]
    with pytest.raises(BadRecordError) as info:
        load(tmp_path, coco)
    assert str(info.value) == (
        f"{json_path}: {n} bad record(s) (on_bad_record='skip' drops them):\n  " + "\n  ".join(lines[:20]) + tail
    )


def test_skip_logs_each_problem_then_the_totals(tmp_path: Path, coco: dict, caplog: pytest.LogCaptureFixture):
    coco["annotations"][2]["category_id"] = 4
    with caplog.at_level(logging.WARNING, logger="detector.data.records"):
        load(tmp_path, coco, on_bad_record="skip")
    json_path = tmp_path / "split.json"
    assert caplog.messages == [
        f"skipped: {json_path}: annotation id 3 (image id 11, b.jpg): unknown category_id 4",
        f"{json_path}: skipped 1 images and 1 annotations (1 problems); kept 2 images",
    ]
