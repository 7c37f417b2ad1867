"""The synthetic shapes dataset: determinism, content statistics, layout, ensure_shapes' atomicity."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.cli import main as cli_main
from detector.data import scenes as scene_module
from detector.data import shapes
from detector.data.records import load_records
from detector.data.scenes import CLASS_NAMES, sample_scene
from detector.data.shapes import ensure_shapes, generate_shapes

SMALL = dict(n_train=10, n_val=4, image_size=256, seed=3)


def _scenes(n: int, image_size: int = 256) -> list[scene_module.Scene]:
    return [sample_scene(shapes._scene_rngs(0, "train", i)[0], image_size) for i in range(n)]


def _pixels(root: Path) -> dict[str, np.ndarray]:
    return {p.name: cv2.imread(str(p)) for p in sorted((root / "JPEGImages").glob("*.jpg"))}


def test_generation_is_deterministic_whatever_the_workers(tmp_path):
    generate_shapes(tmp_path / "a", workers=1, **SMALL)
    generate_shapes(tmp_path / "b", workers=2, **SMALL)
    for name in ("shapes_train.json", "shapes_val.json", shapes.PARAMS_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    a, b = _pixels(tmp_path / "a"), _pixels(tmp_path / "b")
    assert len(a) == SMALL["n_train"] + SMALL["n_val"] and a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_another_seed_gives_another_dataset(tmp_path):
    generate_shapes(tmp_path / "a", workers=1, **SMALL)
    generate_shapes(tmp_path / "b", workers=1, **{**SMALL, "seed": SMALL["seed"] + 1})
    a, b = ((tmp_path / d / "shapes_train.json").read_bytes() for d in ("a", "b"))
    assert a != b


def test_an_image_depends_only_on_seed_split_and_index(tmp_path):
    """Growing a split keeps its first images: the per-image seed ignores the split's size. 4 then 6
    train images (and 2 then 3 val): the first ones are the same bytes, and so are their annotations."""
    small, grown = dict(n_train=4, n_val=2), dict(n_train=6, n_val=3)
    generate_shapes(tmp_path / "small", workers=1, image_size=64, seed=3, **small)
    generate_shapes(tmp_path / "grown", workers=1, image_size=64, seed=3, **grown)
    for split in ("train", "val"):
        n = small[f"n_{split}"]
        a, b = (json.loads((tmp_path / d / f"shapes_{split}.json").read_text()) for d in ("small", "grown"))
        assert len(a["images"]) == n and len(b["images"]) == grown[f"n_{split}"]
        assert b["images"][:n] == a["images"]
        ids = {image["id"] for image in a["images"]}
        assert [x for x in b["annotations"] if x["image_id"] in ids] == a["annotations"] != []
        for image in a["images"]:
            name = image["file_name"]
            assert (tmp_path / "small" / "JPEGImages" / name).read_bytes() == (tmp_path / "grown" / "JPEGImages" / name).read_bytes(), name
    assert not np.array_equal(shapes._layout("train", 0, 3, 64).boxes, shapes._layout("val", 0, 3, 64).boxes)


def test_scene_statistics():
    scenes = _scenes(300)
    counts = np.array([len(s.labels) for s in scenes])
    assert counts.min() >= 1 and counts.max() <= scene_module.MAX_OBJECTS
    assert set(counts.tolist()) == set(range(1, scene_module.MAX_OBJECTS + 1))  # every count occurs
    labels = np.concatenate([s.labels for s in scenes])
    per_class = np.bincount(labels, minlength=len(CLASS_NAMES))
    assert len(CLASS_NAMES) >= 6 and per_class.min() > 0.5 * per_class.mean()  # every class, balanced

    sizes = np.array([(s.width, s.height) for s in scenes])
    assert sizes.min() >= 224 and sizes.max() <= 288 and (sizes[:, 0] != sizes[:, 1]).mean() > 0.9

    sides, aspects = [], []
    for s in scenes:
        assert np.all(s.boxes[:, :2] >= 0)
        assert np.all(s.boxes[:, 2] <= s.width) and np.all(s.boxes[:, 3] <= s.height)
        wh = s.boxes[:, 2:] - s.boxes[:, :2]  # (n, 2)
        sides.append(np.sqrt(wh.prod(1)) / min(s.width, s.height))
        aspects.append(wh[:, 0] / wh[:, 1])
        assert np.all(s.visible >= scene_module.MIN_VISIBLE)
    sides, aspects = np.concatenate(sides), np.concatenate(aspects)
    lo, hi = scene_module.SIDE_RANGE
    assert sides.min() >= lo * 0.999 and sides.max() <= hi * 1.001
    assert sides.min() < 0.07 and sides.max() > 0.8  # the whole range is used
    assert 0.02 < (sides < 0.1).mean() < 0.15  # some small objects, not dominating
    assert aspects.min() >= 0.5 - 1e-6 and aspects.max() <= 2.0 + 1e-6
    assert aspects.min() < 0.6 and aspects.max() > 1.7


def test_box_is_the_full_extent_and_visible_fraction_is_true():
    """Repaint each scene's masks back to front, independently of sample_scene's bookkeeping."""
    for s in _scenes(30):
        owner = np.full((s.height, s.width), -1)
        areas = []
        for k, (outline, box) in enumerate(zip(s.outlines, s.boxes)):
            mask = scene_module._fill_mask(outline, s.height, s.width, cv2.LINE_8) > 0
            ys, xs = np.nonzero(mask)
            # the covered pixel centres span the box, to within a pixel (OpenCV also fills the
            # pixels its edges touch)
            edges = np.array([xs.min(), ys.min(), xs.max(), ys.max()]) + 0.5
            np.testing.assert_allclose(edges, box, atol=1.0)
            owner[mask] = k
            areas.append(mask.sum())
        visible = np.array([(owner == k).sum() for k in range(len(areas))]) / np.array(areas)
        np.testing.assert_allclose(visible, s.visible)


def test_shapes_stand_out_from_their_background(tmp_path):
    """Each shape's fully visible interior differs clearly from the ring of pixels around it."""
    generate_shapes(tmp_path, workers=1, **SMALL)
    data = json.loads((tmp_path / "shapes_train.json").read_text())
    for index, image in enumerate(data["images"]):
        pixels = cv2.imread(str(tmp_path / "JPEGImages" / image["file_name"]))[..., ::-1].astype(float)
        scene = shapes._layout("train", index, SMALL["seed"], SMALL["image_size"])
        top = scene.outlines[-1]  # drawn last, so nothing hides it
        mask = scene_module._fill_mask(top, scene.height, scene.width, cv2.LINE_8)
        inner = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
        near, touching = (cv2.dilate(mask, np.ones((k, k), np.uint8)) > 0 for k in (7, 3))
        ring = near & ~touching
        if inner.sum() < 20:
            continue
        contrast = np.linalg.norm(pixels[inner].mean(0) - pixels[ring].mean(0))
        assert contrast > 30, (image["file_name"], contrast)


def test_json_layout_matches_the_course(tmp_path):
    generate_shapes(tmp_path, workers=1, **SMALL)
    for split, n in (("train", SMALL["n_train"]), ("val", SMALL["n_val"])):
        data = json.loads((tmp_path / f"shapes_{split}.json").read_text())
        assert list(data) == ["images", "type", "annotations", "categories"] and data["type"] == "instances"
        assert len(data["images"]) == n
        assert [c["name"] for c in data["categories"]] == CLASS_NAMES
        assert [c["id"] for c in data["categories"]] == list(range(1, len(CLASS_NAMES) + 1))
        images = {im["id"]: im for im in data["images"]}
        assert list(data["images"][0]) == ["file_name", "height", "width", "id"]
        for im in data["images"]:
            h, w = cv2.imread(str(tmp_path / "JPEGImages" / im["file_name"])).shape[:2]
            assert (w, h) == (im["width"], im["height"])
        ann_ids = [a["id"] for a in data["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids)
        for a in data["annotations"]:
            assert list(a) == ["segmentation", "area", "iscrowd", "image_id", "bbox", "category_id", "id",
                               "ignore"]
            x, y, w, h = a["bbox"]
            im = images[a["image_id"]]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= im["width"] + 0.01 and y + h <= im["height"] + 0.01
            assert math.isclose(a["area"], w * h, abs_tol=0.01)
            right, bottom = round(x + w, 2), round(y + h, 2)
            assert a["segmentation"] == [[x, y, x, bottom, right, bottom, right, y]]
            assert 1 <= a["category_id"] <= len(CLASS_NAMES) and a["iscrowd"] == 0 and a["ignore"] == 0


def test_json_keys_match_the_course_sample(tmp_path, voc_sample):
    generate_shapes(tmp_path, workers=1, **{**SMALL, "n_train": 2, "n_val": 1})
    ours = json.loads((tmp_path / "shapes_val.json").read_text())
    course = json.loads((voc_sample / "pascal_sample2007.json").read_text())
    assert set(ours) == set(course)
    for key in ("images", "annotations", "categories"):
        assert set(ours[key][0]) == set(course[key][0]), key


def test_the_loader_reads_it(tmp_path):
    generate_shapes(tmp_path, workers=1, **SMALL)
    for split in ("train", "val"):
        data = json.loads((tmp_path / f"shapes_{split}.json").read_text())
        loaded = load_records(tmp_path / f"shapes_{split}.json", tmp_path / "JPEGImages")
        assert loaded.class_names == CLASS_NAMES
        assert len(loaded.records) == len(data["images"])
        assert sum(len(r.labels) for r in loaded.records) == len(data["annotations"])
        assert loaded.report.clipped == 0 and loaded.report.skipped_annotations == 0


def _count_generations(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = shapes.generate_shapes

    def counting(root, *args, **kwargs):
        calls.append(Path(root))
        return real(root, *args, **kwargs)

    monkeypatch.setattr(shapes, "generate_shapes", counting)
    return calls


def test_ensure_shapes_is_idempotent_and_regenerates_on_new_parameters(tmp_path, monkeypatch):
    calls = _count_generations(monkeypatch)
    root = tmp_path / "shapes"
    ensure_shapes(root, workers=1, **SMALL)
    first = (root / "shapes_train.json").read_bytes()
    ensure_shapes(root, workers=2, **SMALL)  # workers do not change the data
    assert len(calls) == 1 and (root / "shapes_train.json").read_bytes() == first

    ensure_shapes(root, workers=1, **{**SMALL, "n_train": 6})
    assert len(calls) == 2
    assert len(json.loads((root / "shapes_train.json").read_text())["images"]) == 6
    assert len(list((root / "JPEGImages").glob("*.jpg"))) == 6 + SMALL["n_val"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no temporary folder left


def test_ensure_shapes_recovers_from_an_interrupted_run(tmp_path):
    root = tmp_path / "shapes"
    # A run killed mid-way: a half-written temporary sibling whose process is gone ...
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    leftover = tmp_path / f".shapes.tmp-{int(dead.stdout)}-deadbeef"
    (leftover / "JPEGImages").mkdir(parents=True)
    (leftover / "JPEGImages" / "train_00000.jpg").write_bytes(b"half")
    # ... and a root from a generator that did not finish (no parameters file).
    (root / "JPEGImages").mkdir(parents=True)
    (root / "shapes_train.json").write_text("{")
    ensure_shapes(root, workers=1, **SMALL)
    assert json.loads((root / shapes.PARAMS_FILE).read_text())["n_train"] == SMALL["n_train"]
    assert len(json.loads((root / "shapes_train.json").read_text())["images"]) == SMALL["n_train"]
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]


def test_a_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    def crash(job):
        if job[2] == 5:
            raise KeyboardInterrupt  # like Ctrl-C half-way through
        return real(job)

    real = shapes._make_image
    monkeypatch.setattr(shapes, "_make_image", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes(tmp_path / "shapes", workers=1, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_racing_calls_both_end_with_one_complete_dataset(tmp_path):
    root = tmp_path / "shapes"
    errors: list[BaseException] = []

    def run():
        try:
            ensure_shapes(root, workers=1, **SMALL)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    params = shapes._params(SMALL["n_train"], SMALL["n_val"], SMALL["image_size"], SMALL["seed"])
    assert shapes._is_complete(root, params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]


def test_command_line_prints_counts_per_class_and_split(tmp_path, capsys):
    assert cli_main(["data", "shapes", "--root", str(tmp_path / "s"), "--n-train", "6", "--n-val", "2", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(name in lines[0] for name in CLASS_NAMES)
    train = json.loads((tmp_path / "s" / "shapes_train.json").read_text())
    row = lines[1].split()
    assert row[:3] == ["train", "6", str(len(train["annotations"]))]
    assert sum(int(v) for v in row[3:]) == len(train["annotations"])
    assert lines[2].split()[:2] == ["val", "2"] and "s)" in lines[-1]
    assert os.path.isdir(tmp_path / "s" / "JPEGImages")
