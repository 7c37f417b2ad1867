"""Background-only images (no boxes): every importer keeps them (a VOC XML without objects, a YOLO
image with an empty, blank or missing label file, a COCO image without annotations), every
augmentation preset batches them, training learns from them (their scores fall), and the error
analysis counts every detection on them as a background false positive."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

import import_files
from coco_files import write_jpeg
from detector.core.loss import LossConfig
from detector.data.datamodule import DetectionDataModule
from detector.data.importers.importer import import_dataset
from detector.data.records import load_records
from detector.data.transforms import PRESETS
from detector.training.recipe import Stage
from helpers import detector, module

BACKGROUND = ["bg0.jpg", "bg1.jpg", "bg2.jpg"]


def with_background(root: Path, fmt: str) -> Path:
    """import_files' dataset in ``fmt`` (one negative, c.png, already) plus three background-only
    train images, each the format's own way of saying "no objects"."""
    if fmt == "voc":
        src = import_files.voc(root, "devkit")
        for k, name in enumerate(BACKGROUND):
            write_jpeg(src / "JPEGImages" / name, 48, 36, seed=50 + k)
            import_files.voc_xml(src / "Annotations" / f"bg{k}.xml", name, (48, 36) if k else None, [])  # bg0: no <size>
        sets = src / "ImageSets" / "Main" / "train.txt"
        sets.write_text(sets.read_text() + "bg0\nbg1\nbg2\n")
    elif fmt == "yolo":
        src = import_files.yolo(root)
        for k, (name, lines) in enumerate(zip(BACKGROUND, ["", "\n\n", None])):  # empty, blank lines, no file
            write_jpeg(src / "images" / "train" / name, 48, 36, seed=60 + k)
            if lines is not None:
                (src / "labels" / "train" / name.replace(".jpg", ".txt")).write_text(lines)
    else:
        src = import_files.coco(root)
        path = src / "train" / "_annotations.coco.json"
        data = json.loads(path.read_text())
        for k, name in enumerate(BACKGROUND):
            write_jpeg(src / "train" / name, 48, 36, seed=70 + k)
            data["images"].append({"id": 100 + k, "file_name": name, "width": 48, "height": 36})
        path.write_text(json.dumps(data))
    return src


@pytest.mark.parametrize("fmt", ["voc", "yolo", "coco"])
def test_every_importer_keeps_background_only_images(tmp_path: Path, fmt: str):
    done = import_dataset(with_background(tmp_path / "src", fmt), tmp_path / "out")
    assert not done.source.problems
    train = done.summary.splitlines()[2].split()
    assert train[:3] == ["train", "8", "4"], done.summary  # 8 images, 4 without boxes: c.png and the three
    image_dir = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["data"]["image_dir"]
    records = load_records(done.jsons["train"], image_dir).records
    assert sorted(Path(r.path).name for r in records if len(r.labels) == 0) == [*BACKGROUND, "c.png"]
    assert all(r.boxes.shape == (0, 4) for r in records if len(r.labels) == 0)


@pytest.fixture(scope="module")
def background_json(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A COCO JSON of background-only images (5: batches of 4 leave one of 1) and their folder."""
    root = tmp_path_factory.mktemp("background")
    images = []
    for k in range(5):
        write_jpeg(root / "images" / f"bg{k}.jpg", 64 + 8 * k, 48, seed=k)
        images.append({"id": k + 1, "file_name": f"bg{k}.jpg", "width": 64 + 8 * k, "height": 48})
    path = root / "bg.json"
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    return path, root / "images"


def background_data(background_json: tuple[Path, Path], **kw) -> DetectionDataModule:
    path, images = background_json
    return DetectionDataModule(str(images), train_json=str(path), val_json=str(path), image_size=64, batch_size=4, num_workers=0, **kw)


@pytest.mark.parametrize("preset", PRESETS)
def test_background_only_images_batch_through_every_augmentation(background_json, preset: str):
    dm = background_data(background_json, train_augment=preset)
    dm.setup("fit")
    for _ in range(2):
        for batch in [*dm.train_dataloader(), *dm.val_dataloader()]:
            B = len(batch["images"])
            assert batch["images"].shape == (B, 3, 64, 64) and torch.isfinite(batch["images"]).all()
            assert batch["boxes"].shape == (B, 0, 4) and batch["labels"].shape == (B, 0) and batch["difficult"].shape == (B, 0)
    assert sorted(i for b in dm.val_dataloader() for i in b["image_ids"].tolist()) == [1, 2, 3, 4, 5]  # none dropped


def test_training_on_background_only_images_lowers_their_scores(background_json):
    """Steps on batches without a single box: the location term is 0, the class term finite, and the
    highest score the model gives these images falls (it learns that nothing is there)."""
    torch.manual_seed(0)
    dm = background_data(background_json, train_augment="none")
    dm.setup("fit")
    # plain BCE: the focal loss's gradient at the head's starting scores (about 0.02) is ~p^2, too small to see in a few steps
    model = module([Stage(epochs=1, freeze="none")], num_classes=2, loss=LossConfig(focal=False))
    batch = next(iter(dm.val_dataloader()))
    model.eval()  # throughout: BatchNorm's running statistics and dropout would blur the comparison
    with torch.no_grad():
        before = torch.sigmoid(model(batch["images"])[0]).max().item()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(5):
        for train in dm.train_dataloader():
            terms = model.loss(train)
            assert terms["loc"] == 0 and torch.isfinite(terms["loss"]) and terms["cls"] > 0
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
    with torch.no_grad():
        after = torch.sigmoid(model(batch["images"])[0]).max().item()
    assert after < before * 0.9, (before, after)


def test_background_images_are_imported_trained_on_evaluated_and_counted_as_false_positives(tmp_path: Path):
    """The whole path: a YOLO export with background images in train and val, `data import`,
    a short `train fit`, `eval`: each background val image is in errors_per_image.csv with no
    objects and all its false positives of kind bkg (the picture threshold lowered to 0.001 so the
    barely trained model's detections count)."""
    src = import_files.yolo(tmp_path / "src")
    for k, split in enumerate(["train", "train", "val", "val"]):
        write_jpeg(src / "images" / split / f"bg{k}.jpg", 48, 36, seed=80 + k)
    code, err = detector("data", "import", str(src), "--out", str(tmp_path / "data" / "pets"))
    assert code == 0, err
    code, err = detector(
        "train", "fit", "--config", str(tmp_path / "data" / "pets" / "config.yaml"), "--epochs", "2",
        "--trainer.limit_train_batches", "1", "--run.root", str(tmp_path / "runs"), "--data.num_workers", "0",
        "--data.batch_size", "4", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--model.init_args.postprocess.picture_score_threshold", "0.001",
    )
    assert code == 0, err[-3000:]
    train = json.loads((tmp_path / "data" / "pets" / "pets_train.json").read_text())
    assert len({i["id"] for i in train["images"]} - {a["image_id"] for a in train["annotations"]}) == 3  # c.png, bg0, bg1
    out = tmp_path / "eval"
    code, err = detector("eval", "--run", "pets", "--runs", str(tmp_path / "runs"), "--split", "val", "--out", str(out), "--workers", "0")
    assert code == 0, err[-3000:]
    with open(out / "errors_per_image.csv") as f:
        rows = {r["file_name"]: r for r in csv.DictReader(f)}
    background = [rows[name] for name in rows if Path(name).name in ("bg2.jpg", "bg3.jpg")]
    assert len(background) == 2
    for row in background:
        assert row["objects"] == row["tp"] == row["fn"] == "0" and int(row["fp"]) > 0 and row["bkg"] == row["fp"]
    errors = json.loads((out / "metrics.json").read_text())["errors"]
    assert errors["errors_all_scores"]["bkg"] >= sum(int(r["fp"]) for r in background)
    # the fit's own results folder counted them too
    fit = next((tmp_path / "runs" / "pets").glob("v*/results/val/errors_per_image.csv"))
    assert any(Path(r["file_name"]).name == "bg2.jpg" and r["objects"] == "0" for r in csv.DictReader(fit.open()))
