"""detector data import decodes every image once: one that cannot be decoded stops the import
naming the file (or is left out under --on-bad-record skip, counted like any bad record); a JPEG
truncated by a few bytes, which PIL still reads with LOAD_TRUNCATED_IMAGES, is restored: written
whole under data/NAME/restored/, the original untouched, the JSON naming the copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageFile
from test_import import assert_truth

import import_files
from detector.data.dataset import DetectionDataset
from detector.data.image import load_image, read_image_size
from detector.data.importers.decoding import check_images, restored_path
from detector.data.importers.importer import import_dataset, read_source
from detector.data.records import load_records
from detector.data.transforms import DetectionTransform
from detector.errors import BadRecordError
from helpers import detector

# Where each format's importer test data puts image e (a train image with one box).
E = {"voc": "JPEGImages/e.jpg", "yolo": "images/train/e.jpg", "coco": "train/e.jpg"}


def source(fmt: str, root: Path) -> Path:
    return import_files.voc(root, "devkit") if fmt == "voc" else import_files.yolo(root) if fmt == "yolo" else import_files.coco(root)


def decodes_with_load_truncated_images(path: Path) -> bool:
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except OSError:
        return False
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


@pytest.mark.parametrize("fmt", ["voc", "yolo", "coco"])
def test_a_jpeg_truncated_by_20_bytes_is_restored_under_out_and_the_json_names_the_copy(tmp_path: Path, fmt: str):
    root = source(fmt, tmp_path / "src")
    victim = import_files.truncate(root / E[fmt])
    cut = victim.read_bytes()
    with pytest.raises(OSError, match="truncated"):  # the damage is real: training would stop on it
        load_image(victim)
    done = import_dataset(root, tmp_path / "pets")
    copy = tmp_path / "pets" / "restored" / E[fmt]
    assert victim.read_bytes() == cut  # the original untouched
    assert load_image(copy).shape == (36, 48, 3) and read_image_size(copy) == (48, 36)
    train = json.loads((tmp_path / "pets" / "pets_train.json").read_text())
    names = [i["file_name"] for i in train["images"]]
    assert str(copy) in names and sum(Path(n).is_absolute() for n in names) == 1  # the others stay relative
    assert_truth(tmp_path / "pets", splits_kept=True)  # every image and box, e's read from the copy
    note = f"1 truncated image(s) restored (PIL reads them with LOAD_TRUNCATED_IMAGES; the missing end is grey): written whole under {tmp_path / 'pets' / 'restored'}"
    assert [line for line in done.summary.splitlines() if "restored" in line] == [
        f"  note: {note}, the JSONs name these copies, the originals are untouched: {victim} -> {copy}"]
    assert json.loads((tmp_path / "pets" / "split.json").read_text())["restored"] == {
        str(victim.relative_to(done.image_dir)): str(copy)}


def test_the_restored_copy_is_the_picture_pil_reads_and_trains(tmp_path: Path):
    root = source("voc", tmp_path / "src")
    whole = np.asarray(Image.open(root / E["voc"]).convert("RGB"), dtype=float)
    victim = import_files.truncate(root / E["voc"], 60)
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        read = np.asarray(Image.open(victim).convert("RGB"), dtype=float)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    import_dataset(root, tmp_path / "pets")
    copy = load_image(tmp_path / "pets" / "restored" / E["voc"]).astype(float)
    # re-encoded with the JPEG's own tables ("keep"): about the pixels PIL reads (this noise is JPEG's
    # worst case: 2.5 grey levels apart on average; 0.0 on BCCD and raccoon photos), far from a flat grey
    assert np.abs(copy - read).mean() < 4 < np.abs(read - read.mean()).mean()
    assert np.abs(copy - whole)[:24].mean() < 4  # the top two thirds are the picture itself
    config = yaml.safe_load((tmp_path / "pets" / "config.yaml").read_text())["data"]
    split = load_records(config["train_json"], config["image_dir"])
    dataset = DetectionDataset(split, DetectionTransform("none", 32))
    (index,) = [k for k, r in enumerate(split.records) if r.path.stem == "e"]
    assert split.records[index].path == tmp_path / "pets" / "restored" / E["voc"]
    assert dataset[index]["image"].shape == (3, 32, 32)


def test_the_same_split_as_the_whole_dataset(tmp_path: Path):
    """Restoring changes which file the JSON names, not which split an image lands in."""
    whole = import_dataset(import_files.yolo(tmp_path / "a", "bare"), tmp_path / "pa", val_fraction=0.25, test_fraction=0.25)
    import_files.yolo(tmp_path / "b", "bare")
    import_files.truncate(tmp_path / "b" / "images" / "e.jpg")
    cut = import_dataset(tmp_path / "b", tmp_path / "pb", val_fraction=0.25, test_fraction=0.25)
    assert [Path(p).stem for p in cut.plan.splits] == [Path(p).stem for p in whole.plan.splits]
    assert [i.path.name for i in cut.source.images] == [i.path.name for i in whole.source.images]


def test_a_jpeg_cut_before_its_picture_stops_the_import_naming_it(tmp_path: Path):
    root = source("voc", tmp_path / "src")
    victim = import_files.cut_before_scan(root / E["voc"])
    assert read_image_size(victim) == (48, 36)  # the header reads: only a decode finds it
    assert not decodes_with_load_truncated_images(victim)  # and PIL cannot read it at all
    code, err = detector("data", "import", str(root), "--out", str(tmp_path / "pets"))
    assert code == 2 and err.count("\n") == 1, err
    assert f"1 bad record(s) in {root}: {victim}: cannot be decoded" in err, err
    assert f"(annotated in {root / 'Annotations' / 'e.xml'})" in err and "--on-bad-record skip leaves their images out" in err, err
    assert not (tmp_path / "pets").exists()  # nothing written


def test_skip_leaves_an_undecodable_image_out_counted_against_the_fraction(tmp_path: Path):
    root = source("voc", tmp_path / "src")
    victim = import_files.cut_before_scan(root / E["voc"])
    with pytest.raises(BadRecordError, match=r"would skip 1 of 5 images \(20\.0%\).*--max-skipped-fraction = 0\.05"):
        import_dataset(root, tmp_path / "pets", on_bad_record="skip")
    done = import_dataset(root, tmp_path / "pets", on_bad_record="skip", max_skipped_fraction=0.25)
    assert "left out (--on-bad-record skip): 1 images with 1 boxes; problems: 1 image cannot be decoded" in done.summary
    assert str(victim) in done.summary
    assert "e" not in [i.path.stem for i in done.source.images]
    assert not (tmp_path / "pets" / "restored").exists()


def test_check_images_in_threads_finds_each_kind_once(tmp_path: Path):
    root = source("yolo", tmp_path / "src")
    import_files.truncate(root / "images" / "train" / "a.jpg")
    import_files.cut_before_scan(root / "images" / "train" / "e.jpg")
    src = read_source(root)
    assert src.problems == []  # the headers read
    truncated = check_images(src, workers=3)
    assert [i.path.name for i in truncated] == ["a.jpg"]
    assert [(p.reason, Path(p.image).name, p.boxes, p.split) for p in src.problems] == [("image cannot be decoded", "e.jpg", 1, "train")]
    assert sorted(i.path.stem for i in src.images) == list("abcdfgh")  # a kept (to restore), e out


def test_restored_path_keeps_the_path_below_the_dataset_and_an_outsiders_whole_path(tmp_path: Path):
    out = tmp_path / "data" / "pets"
    assert restored_path(out, tmp_path / "src", tmp_path / "src" / "train" / "a.jpg") == out / "restored" / "train" / "a.jpg"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "data.json").write_text("{}")
    assert restored_path(out, tmp_path / "src" / "data.json", tmp_path / "src" / "x" / "a.jpg") == out / "restored" / "x" / "a.jpg"
    outside = tmp_path / "elsewhere" / "a.jpg"
    assert restored_path(out, tmp_path / "src", outside) == out / "restored" / Path(*outside.parts[1:])
