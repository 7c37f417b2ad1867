"""The lessons' stepping stones (``detector.training.tasks``): targets, heads, losses against the lesson's
formulas, metrics, a tiny overfit per task, prediction from a checkpoint, and each config through
``train.py``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle
from PIL import Image

from coco_files import write_jpeg, write_json
from detector.cli.predict import main
from detector.cli.train import cli as training_cli
from detector.data.datamodule import DetectionDataModule
from detector.data.shapes import CLASS_NAMES
from detector.deploy.loading import checkpoint_task, load_detector, load_model
from detector.errors import CheckpointError
from detector.pictures import detection_grid, figure_to_array, show_labels
from detector.training.recipe import OptimizerConfig, Stage
from detector.training.tasks import (
    LargestBoxRegressor,
    LargestObjectClassifier,
    MultiLabelClassifier,
    SingleObjectDetector,
    TaskModule,
)
from detector.training.tasks.detection import DetectorModule
from detector.training.tasks.nets import box_head, feature_side, single_object_head
from detector.training.tasks.targets import largest_object, present_classes
from helpers import REPO

TASKS = [LargestObjectClassifier, LargestBoxRegressor, SingleObjectDetector, MultiLabelClassifier]
S = 64  # image size of the tiny models
CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread runs them faster than two, and far faster on a CPU shared
    with other jobs (two OpenMP threads then wait on each other at every layer)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(make_shapes) -> Path:
    """8 train and 4 val shapes images at about 64 px (conftest.py: generated once, read only)."""
    return make_shapes(n_train=8, n_val=4, image_size=S)


def task(cls: type[TaskModule], **kw) -> TaskModule:
    args = dict(num_classes=3, class_names=CLASSES, backbone="resnet18", weights="none", image_size=S)
    return cls(**{**args, **kw})


def batch_of(boxes: list[list[list[float]]], labels: list[list[int]], difficult: list[list[bool]] | None = None) -> dict:
    """A padded batch like the data module's (images are random: only the targets matter here)."""
    B, M = len(labels), max(len(row) for row in labels)
    pad = lambda rows, fill: [row + [fill] * (M - len(row)) for row in rows]  # noqa: E731
    difficult = difficult or [[False] * len(row) for row in labels]
    return {
        "images": torch.randn(B, 3, S, S),
        "boxes": torch.tensor(pad(boxes, [0.0] * 4), dtype=torch.float32).reshape(B, M, 4),
        "labels": torch.tensor(pad(labels, -1), dtype=torch.int64).reshape(B, M),
        "difficult": torch.tensor(pad(difficult, False), dtype=torch.bool).reshape(B, M),
        "image_ids": torch.arange(B),
        "sizes": torch.tensor([[100, 200]] * B),
    }


# ------------------------------------------------------------------------------------- targets
def test_largest_object_by_area_skipping_padding_and_difficult():
    batch = batch_of(
        boxes=[
            [[0.0, 0.0, 0.2, 0.2], [0.1, 0.1, 0.6, 0.5], [0.5, 0.5, 0.9, 0.9]],  # areas 0.04, 0.20, 0.16
            [[0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.4, 0.4]],  # the whole image is difficult
            [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]],  # a tie: the first one
            [],  # no object
        ],
        labels=[[0, 2, 1], [1, 0], [2, 1], []],
        difficult=[[False, False, False], [True, False], [False, False], []],
    )
    batch["boxes"][3, 0] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # a padding row with a big box is never chosen
    got = largest_object(batch["boxes"], batch["labels"], batch["difficult"])
    assert got.labels.tolist() == [2, 0, 2, -1]
    assert got.found.tolist() == [True, True, True, False]
    torch.testing.assert_close(got.boxes[0], torch.tensor([0.1, 0.1, 0.6, 0.5]))
    torch.testing.assert_close(got.boxes[1], torch.tensor([0.2, 0.2, 0.4, 0.4]))
    torch.testing.assert_close(got.boxes[3], torch.zeros(4))
    # Without the difficult flags the whole-image box wins.
    assert largest_object(batch["boxes"], batch["labels"]).labels.tolist() == [2, 1, 2, -1]
    # A batch without any object at all (M = 0).
    empty = largest_object(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.int64))
    assert empty.found.tolist() == [False, False] and empty.labels.tolist() == [-1, -1] and empty.boxes.shape == (2, 4)


def test_present_classes_is_a_set_of_usable_objects():
    labels = torch.tensor([[1, 1, 1, -1], [0, 2, 2, 2], [-1, -1, -1, -1]])
    difficult = torch.zeros_like(labels, dtype=torch.bool)
    difficult[1, 0] = True  # its class 0 is the image's only 0: not present
    got = present_classes(labels, 4, difficult)
    assert got.tolist() == [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert present_classes(labels, 4).tolist()[1] == [1, 0, 1, 0]
    assert present_classes(torch.zeros(2, 0, dtype=torch.int64), 3).tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="label 3 out of range for 3 classes"):
        present_classes(torch.tensor([[3]]), 3)


# ---------------------------------------------------------------------------------------- nets
def test_heads_are_the_lessons_at_resnet34_224():
    """25088 = 512 * 7 * 7 inputs, as the lesson's head_reg4 and single-object head."""
    assert feature_side(224) == 7 and feature_side(192) == 6 and feature_side(100) == 4
    reg4 = box_head(512, 224)
    assert [type(m).__name__ for m in reg4] == ["Flatten", "Linear"]
    assert (reg4[1].in_features, reg4[1].out_features) == (25088, 4)
    detn = single_object_head(512, 224, num_classes=20)
    names = [type(m).__name__ for m in detn]
    assert names == ["Flatten", "ReLU", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"]
    assert (detn[3].in_features, detn[3].out_features, detn[7].out_features) == (25088, 256, 24)
    assert detn[2].p == detn[6].p == 0.5


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_flattening_heads_fit_the_backbones_map_at_any_size(backbone: str):
    for cls in (LargestBoxRegressor, SingleObjectDetector):
        model = task(cls, backbone=backbone, image_size=100).eval()  # 100 px: a 4 x 4 map
        assert model(torch.randn(2, 3, 100, 100)).shape == (2, 4 if cls is LargestBoxRegressor else 4 + 3)


@pytest.mark.parametrize("cls", TASKS, ids=lambda c: c.__name__)
def test_layer_groups_are_the_ssds(cls: type[TaskModule]):
    model = task(cls)
    groups = model.model.layer_groups
    assert len(groups) == 3
    assert groups[0] is model.model.backbone.body[0] and groups[2] is model.model.head
    params = model.model.param_groups()
    ids = [{id(p) for p in group} for group in params]
    assert all(ids) and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == {id(p) for p in model.model.parameters()}


# -------------------------------------------------------------------------------------- losses
BATCH = dict(
    boxes=[[[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 0.2, 0.2]], [[0.3, 0.3, 0.4, 0.4]], [], [[0.5, 0.0, 1.0, 0.25]]],
    labels=[[2, 0], [1], [], [0]],
)
FOUND = [0, 1, 3]  # the third image has no object
LARGEST_LABEL = torch.tensor([2, 1, 0])
LARGEST_BOX = torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.3, 0.3, 0.4, 0.4], [0.5, 0.0, 1.0, 0.25]]) * S  # pixels


def test_classifier_loss_is_cross_entropy_of_the_largest_objects_class():
    model = task(LargestObjectClassifier)
    outputs = torch.randn(4, 3)
    terms, n = model.loss_terms(outputs, batch_of(**BATCH))
    assert n == 3
    torch.testing.assert_close(terms["loss"], F.cross_entropy(outputs[FOUND], LARGEST_LABEL))
    outputs[2] = 100.0  # the image without an object does not count
    torch.testing.assert_close(model.loss_terms(outputs, batch_of(**BATCH))[0]["loss"], terms["loss"])


def test_regressor_loss_is_l1_in_input_pixels():
    model = task(LargestBoxRegressor)
    outputs = torch.rand(4, 4) * S
    terms, n = model.loss_terms(outputs, batch_of(**BATCH))
    assert n == 3
    torch.testing.assert_close(terms["loss"], (outputs[FOUND] - LARGEST_BOX).abs().mean())


def lesson_detn_loss(outputs: torch.Tensor, bb_t: torch.Tensor, c_t: torch.Tensor) -> torch.Tensor:
    """The lesson's ``detn_loss``, with its 224 as the image size ``S``."""
    bb_i, c_i = outputs[:, :4], outputs[:, 4:]
    bb_i = torch.sigmoid(bb_i) * S
    return F.l1_loss(bb_i, bb_t) + F.cross_entropy(c_i, c_t) * 20


def test_single_object_loss_is_the_lessons_detn_loss():
    model = task(SingleObjectDetector)
    outputs = torch.randn(4, 4 + 3) * 2
    terms, n = model.loss_terms(outputs, batch_of(**BATCH))
    assert n == 3
    torch.testing.assert_close(terms["loss"], lesson_detn_loss(outputs[FOUND], LARGEST_BOX, LARGEST_LABEL))
    torch.testing.assert_close(terms["loss"], terms["l1"] + 20 * terms["ce"])
    light = task(SingleObjectDetector, ce_weight=1.0).loss_terms(outputs, batch_of(**BATCH))[0]
    torch.testing.assert_close(light["loss"], terms["l1"] + terms["ce"])


def test_multilabel_loss_is_bce_over_the_set_of_classes_every_image_counts():
    model = task(MultiLabelClassifier)
    outputs = torch.randn(4, 3)
    terms, n = model.loss_terms(outputs, batch_of(**BATCH))
    targets = torch.tensor([[1.0, 0, 1], [0, 1, 0], [0, 0, 0], [1, 0, 0]])
    assert n == 4
    torch.testing.assert_close(terms["loss"], F.binary_cross_entropy_with_logits(outputs, targets))


@pytest.mark.parametrize("cls", [LargestObjectClassifier, LargestBoxRegressor, SingleObjectDetector], ids=lambda c: c.__name__)
def test_a_batch_without_objects_gives_a_zero_loss_that_backpropagates(cls: type[TaskModule]):
    model = task(cls)
    batch = batch_of(boxes=[[], []], labels=[[], []])
    outputs = model(batch["images"])
    terms, n = model.loss_terms(outputs, batch)
    assert n == 0 and float(terms["loss"].detach()) == 0.0
    terms["loss"].backward()
    assert all(p.grad is not None and not p.grad.any() for p in model.model.head.parameters())
    assert model.metric_inputs(outputs, batch) == {}


# ------------------------------------------------------------------------------------- metrics
def scored(model: TaskModule, outputs: torch.Tensor, batch: dict) -> dict[str, float]:
    metrics = model.make_metrics()
    for name, (preds, target) in model.metric_inputs(outputs, batch).items():
        metrics[name].update(preds, target)
    return {name: float(m.compute()) for name, m in metrics.items()}


def test_classifier_accuracy_is_the_fraction_of_images_right():
    """fastai's ``accuracy`` (micro), not torchmetrics' default per-class mean (macro)."""
    model = task(LargestObjectClassifier)
    batch = batch_of(boxes=[[[0, 0, 1, 1]]] * 4, labels=[[0], [0], [0], [1]])
    outputs = F.one_hot(torch.tensor([0, 0, 0, 0]), 3).float()  # right on the three 0s, wrong on the 1
    assert scored(model, outputs, batch) == {"acc": pytest.approx(0.75)}  # macro would say 0.5


def test_single_object_metrics_detn_acc_and_detn_l1_in_pixels():
    model = task(SingleObjectDetector)
    outputs = torch.zeros(4, 4 + 3)  # sigmoid(0) = 0.5: every box is (S/2, S/2, S/2, S/2)
    outputs[[0, 1, 3], 4 + LARGEST_LABEL] = 5.0
    outputs[3, 4:] = torch.tensor([0.0, 9.0, 0.0])  # the last one's class wrong
    got = scored(model, outputs, batch_of(**BATCH))
    assert got["detn_acc"] == pytest.approx(2 / 3)
    assert got["detn_l1"] == pytest.approx(float((LARGEST_BOX - S / 2).abs().mean()), rel=1e-5)


def test_multilabel_accuracy_at_the_lessons_threshold_and_mean_f1():
    model = task(MultiLabelClassifier)
    batch = batch_of(boxes=[[[0, 0, 1, 1]] * 2, [[0, 0, 1, 1]]], labels=[[0, 2], [1]])
    p = torch.tensor([[0.45, 0.1, 0.9], [0.1, 0.8, 0.1]])  # 0.45 is "present" at the lesson's 0.4
    assert scored(model, torch.logit(p), batch) == {"acc": pytest.approx(1.0), "f1": pytest.approx(1.0)}
    p[1, 1] = 0.2  # one miss out of 6 decisions; class 1's F1 drops to 0
    assert scored(model, torch.logit(p), batch) == {"acc": pytest.approx(5 / 6), "f1": pytest.approx(2 / 3)}
    strict = task(MultiLabelClassifier, threshold=0.5)
    p[1, 1] = 0.8
    assert scored(strict, torch.logit(p), batch)["acc"] == pytest.approx(5 / 6)  # 0.45 no longer counts


# -------------------------------------------------------------------------------------- detect
def test_detect_gives_each_task_its_keys():
    images = torch.randn(2, 3, S, S)
    with torch.no_grad():
        cls = task(LargestObjectClassifier).eval()
        cls.model.head[-1].weight.data.zero_()  # every image: softmax(0.1, 0.6, 0.3), class 1 at 0.6
        cls.model.head[-1].bias.data = torch.log(torch.tensor([0.1, 0.6, 0.3]))
        preds = cls.detect(images)
        assert [sorted(p) for p in preds] == [["labels", "scores"]] * 2
        for p in preds:
            assert p["labels"].tolist() == [1]
            torch.testing.assert_close(p["scores"], torch.tensor([0.6]))
        assert all(len(p["labels"]) == 0 for p in cls.detect(images, score_threshold=0.65))
        assert all(p["labels"].tolist() == [1] for p in cls.detect(images, score_threshold=0.55))

        reg = task(LargestBoxRegressor).eval()
        reg.model.head[1].bias.data = torch.tensor([-10.0, 5.0, 30.0, 1000.0])  # pixels; clipped to the image
        reg.model.head[1].weight.data.zero_()
        for p in reg.detect(images):
            assert sorted(p) == ["boxes"]
            torch.testing.assert_close(p["boxes"], torch.tensor([[0.0, 5 / S, 30 / S, 1.0]]))

        det = task(SingleObjectDetector).eval()
        box = torch.tensor([0.1, 0.25, 0.6, 0.9])  # sigmoid of the box activations: no clipping, no scaling by S
        det.model.head[-1].weight.data.zero_()
        det.model.head[-1].bias.data = torch.cat([torch.logit(box), torch.log(torch.tensor([0.2, 0.1, 0.7]))])
        for p in det.detect(images):
            assert sorted(p) == ["boxes", "labels", "scores"]
            torch.testing.assert_close(p["boxes"], box[None])
            assert p["labels"].tolist() == [2]
            torch.testing.assert_close(p["scores"], torch.tensor([0.7]))
        assert all(p["boxes"].shape == (0, 4) for p in det.detect(images, score_threshold=0.75))

        multi = task(MultiLabelClassifier).eval()
        multi.model.head[-1].weight.data.zero_()
        multi.model.head[-1].bias.data = torch.logit(torch.tensor([0.45, 0.9, 0.1]))
        for p in multi.detect(images):
            assert p["labels"].tolist() == [1, 0]  # above 0.4, most probable first
            torch.testing.assert_close(p["scores"], torch.tensor([0.9, 0.45]))
        assert [p["labels"].tolist() for p in multi.detect(images, score_threshold=0.5)] == [[1], [1]]


# ------------------------------------------------------------------------------------ training
class EpochMetrics(L.Callback):
    """The epoch-level training metrics after every epoch, by name (``train/acc_epoch`` -> ``acc``)."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        self.epochs.append({k[len("train/") : -len("_epoch")]: float(v) for k, v in metrics.items() if k.endswith("_epoch")})


def tiny_data(root: Path, batch_size: int = 8) -> DetectionDataModule:
    return DetectionDataModule(
        image_dir=str(root / "JPEGImages"), train_json=str(root / "shapes_train.json"), val_json=str(root / "shapes_val.json"),
        image_size=S, batch_size=batch_size, num_workers=0, train_augment="none",
    )


def fit(model: TaskModule, root: Path, tmp_path: Path, epochs: int, **kw) -> list[dict[str, float]]:
    record = EpochMetrics()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, callbacks=[record], **kw,
    )
    trainer.fit(model, tiny_data(root))
    return record.epochs


# (task, extra arguments, learning rate, epochs of one step, what the last epoch's training metrics
# must reach). The single-object box comes within 10 % of the side, not 5 %: a sigmoid box edge on
# the image's border (the largest shape often touches it) needs an ever larger activation.
OVERFIT = [
    (LargestObjectClassifier, {}, 1e-2, 8, lambda m: m["acc"] == 1.0),
    (MultiLabelClassifier, {}, 1e-2, 8, lambda m: m["acc"] == 1.0 and m["f1"] == 1.0),
    (LargestBoxRegressor, {}, 1e-2, 20, lambda m: m["l1"] < 0.05 * S),
    (SingleObjectDetector, {"dropout": 0.0}, 2e-2, 20, lambda m: m["detn_acc"] == 1.0 and m["detn_l1"] < 0.1 * S),
]


@pytest.mark.parametrize("cls, kw, lr, epochs, reached", OVERFIT, ids=[c[0].__name__ for c in OVERFIT])
def test_overfits_eight_images(cls, kw, lr, epochs, reached, tiny: Path, tmp_path: Path):
    """All 8 images in one batch, no augmentation, everything training: the loss falls at least
    tenfold and the training metrics become (near) perfect within ``epochs`` steps."""
    torch.manual_seed(0)
    model = task(cls, num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES, stages=[Stage(epochs, "none")],
                 optimizer=OptimizerConfig(lr=lr), **kw)
    history = fit(model, tiny, tmp_path, epochs, limit_val_batches=0)
    first, last = history[0], history[-1]
    assert last["loss"] < first["loss"] / 10, history
    assert reached(last), last


def test_training_logs_train_and_val_metrics_like_the_detector(tiny: Path, tmp_path: Path):
    model = task(SingleObjectDetector, num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES, stages=[Stage(1, "body")])
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, tiny_data(tiny, batch_size=4))
    logged = set(trainer.callback_metrics)
    for name in ("loss", "l1", "ce", "detn_acc", "detn_l1"):
        assert {f"train/{name}_step", f"train/{name}_epoch", f"val/{name}"} <= logged, sorted(logged)


# ---------------------------------------------------------------------------------- prediction
def test_predict_step_gives_boxes_in_original_pixels_and_image_ids(tmp_path: Path):
    """Two clearly non-square images (160 x 40 and 30 x 120): ``detect()``'s box times (W, H, W, H),
    so a swapped width and height or a box left in [0, 1] or in input pixels is seen."""
    sizes = {7: (160, 40), 9: (30, 120)}  # image_id: (width, height)
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": w, "height": h} for i, (w, h) in sizes.items()],
        "annotations": [{"id": 1, "image_id": 7, "bbox": [10, 5, 20, 10], "category_id": 1}],
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)],
    }
    for image in data["images"]:
        write_jpeg(tmp_path / "images" / image["file_name"], image["width"], image["height"])
    val_json = write_json(tmp_path / "val.json", data)
    model = task(SingleObjectDetector).eval()
    box = torch.tensor([0.1, 0.25, 0.6, 0.9])  # detect()'s box for every image
    model.model.head[-1].weight.data.zero_()
    model.model.head[-1].bias.data = torch.cat([torch.logit(box), torch.zeros(3)])
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    module = DetectionDataModule(image_dir=str(tmp_path / "images"), val_json=str(val_json), image_size=S,
                                 batch_size=4, num_workers=0)
    (preds,) = trainer.predict(model, module)  # both images, one batch
    assert [int(p["image_id"]) for p in preds] == list(sizes)
    for p in preds:
        width, height = sizes[int(p["image_id"])]
        torch.testing.assert_close(p["boxes"], box[None] * torch.tensor([width, height, width, height]))


# The keys of detections.json each task fills (see detector.deploy.inference).
KEYS = {
    LargestObjectClassifier: {"image_id", "file_name", "category_id", "category_name", "score"},
    LargestBoxRegressor: {"image_id", "file_name", "bbox"},
    SingleObjectDetector: {"image_id", "file_name", "category_id", "category_name", "bbox", "score"},
    MultiLabelClassifier: {"image_id", "file_name", "category_id", "category_name", "score"},
}


def save_untrained(model: L.LightningModule, path: Path) -> Path:
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", devices=1, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path, weights_only=True)
    return path


@pytest.fixture
def two_images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (100, 200, 3), dtype=np.uint8)).save(folder / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (90, 60, 3), dtype=np.uint8)).save(folder / "b.png")
    return folder


@pytest.mark.parametrize("cls", TASKS, ids=lambda c: c.__name__)
def test_predict_writes_each_tasks_answer(cls: type[TaskModule], two_images: Path, tmp_path: Path):
    torch.manual_seed(0)
    model = task(cls)
    box = torch.tensor([0.1, 0.25, 0.6, 0.9])  # the box tasks' detect() box for every image
    if cls is MultiLabelClassifier:  # an untrained head says about 0.5 for every class: make it say two
        model.model.head[-1].weight.data.zero_()
        model.model.head[-1].bias.data = torch.logit(torch.tensor([0.7, 0.2, 0.5]))
    elif cls is LargestBoxRegressor:  # its outputs are input pixels
        model.model.head[-1].weight.data.zero_()
        model.model.head[-1].bias.data = box * S
    elif cls is SingleObjectDetector:  # sigmoid box activations, then class logits
        model.model.head[-1].weight.data.zero_()
        model.model.head[-1].bias.data = torch.cat([torch.logit(box), torch.zeros(3)])
    checkpoint = save_untrained(model, tmp_path / "task.ckpt")
    assert isinstance(load_model(checkpoint), cls)
    with pytest.raises(CheckpointError, match=f"holds a {cls.__name__}, not the SSD"):
        load_detector(checkpoint)

    out = tmp_path / "out"
    assert main(["--checkpoint", str(checkpoint), "--images", str(two_images), "--out", str(out), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "detections.json"]
    assert Image.open(out / "a.png").size == (200, 100)  # the picture is the image at its own size
    entries = json.loads((out / "detections.json").read_text())
    assert all(set(e) == KEYS[cls] for e in entries)
    per_image = {name: [e for e in entries if e["file_name"] == name] for name in ("a.jpg", "b.png")}
    expected = 2 if cls is MultiLabelClassifier else 1  # classes 0 and 2 are above 0.4
    assert all(len(v) == expected for v in per_image.values()), entries
    for e in entries:
        if "bbox" in e:  # detect()'s box times the original (W, H): 200 x 100 and 60 x 90, not square
            width, height = (200, 100) if e["file_name"] == "a.jpg" else (60, 90)
            x1, y1, x2, y2 = (box * torch.tensor([width, height, width, height])).tolist()
            assert e["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.006), e  # rounded to 0.01 px
        if "category_id" in e:
            assert e["category_name"] == model.class_names[e["category_id"] - 1]
    if cls is MultiLabelClassifier:
        assert [e["category_name"] for e in per_image["a.jpg"]] == ["circle", "triangle"]


def test_pictures_of_classifier_and_regressor_predictions():
    """A classifier's answer is text in the top-left corner; a regressor's box has no label."""
    image = np.zeros((60, 80, 3), np.uint8)
    fig = show_labels(image, torch.tensor([2, 0]), CLASSES, torch.tensor([0.9, 0.5]))
    assert figure_to_array(fig, close=False).shape == (60, 80, 3)  # the image at its own size
    assert [t.get_text() for t in fig.axes[0].texts] == ["triangle 0.90\ncircle 0.50"]
    plt.close(fig)

    preds = [
        {"labels": torch.tensor([1]), "scores": torch.tensor([0.8])},  # classifier: no boxes
        {"boxes": torch.tensor([[10.0, 5.0, 40.0, 50.0]])},  # box regressor: no labels
        {"labels": torch.tensor([], dtype=torch.int64), "scores": torch.tensor([])},  # nothing above --score
    ]
    fig = detection_grid([image] * 3, preds, class_names=CLASSES)
    panels = fig.axes[:3]
    assert [sum(isinstance(p, Rectangle) for p in ax.patches) for ax in panels] == [0, 1, 0]
    assert [[t.get_text() for t in ax.texts] for ax in panels] == [["square 0.80"], [], []]
    plt.close(fig)


def test_checkpoint_task_reads_the_class_and_refuses_unknown_ones():
    assert checkpoint_task({"task_class": "detector.training.tasks.largest.LargestBoxRegressor"}) is LargestBoxRegressor
    assert checkpoint_task({"task_class": "detector.training.tasks.detection.DetectorModule"}) is DetectorModule
    # before every task wrote task_class, an SSD's checkpoint named none (the CLI's _class_path is not read)
    cli = {"hyper_parameters": {"_class_path": "detector.module.DetectorModule"}}
    assert checkpoint_task(cli) is DetectorModule and checkpoint_task({"hyper_parameters": {}}) is DetectorModule
    with pytest.raises(CheckpointError, match="'os.system', which is none of the known tasks"):
        checkpoint_task({"task_class": "os.system"})


def test_every_task_names_itself_in_the_checkpoints_it_writes():
    for model in (DetectorModule(num_classes=2, backbone="resnet18", weights="none"),
                  LargestObjectClassifier(num_classes=2, backbone="resnet18", weights="none")):
        checkpoint: dict = {}
        model.on_save_checkpoint(checkpoint)
        assert checkpoint_task(checkpoint) is type(model)
        assert checkpoint["task_class"] == f"{type(model).__module__}.{type(model).__qualname__}"


# --------------------------------------------------------------------------------------- configs
CONFIGS = {
    "largest_classifier": (LargestObjectClassifier, "val/acc"),
    "largest_box": (LargestBoxRegressor, "val/l1"),
    "single_object": (SingleObjectDetector, "val/detn_l1"),
    "multilabel": (MultiLabelClassifier, "val/f1"),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_trains_through_the_training_cli_and_predicts(name: str, tiny: Path, two_images: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    """Each task's YAML through LightningCLI (shrunk: tiny data, one short epoch), then detector
    predict on the checkpoint it wrote, which names its class the CLI's way."""
    cls, metric = CONFIGS[name]
    monkeypatch.chdir(tmp_path)  # the config's runs/ folders land here
    monkeypatch.setattr(sys, "argv", ["detector train"])  # the CLI reads its arguments from `args` only
    cli = training_cli([
        "fit", "--config", str(REPO / "configs" / f"{name}.yaml"),
        "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
        "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--model.init_args.weights", "none", "--model.init_args.image_size", str(S),
        "--model.init_args.stages", "[{epochs: 1, freeze: groups_0}]",
        "--data.image_dir", str(tiny / "JPEGImages"), "--data.train_json", str(tiny / "shapes_train.json"),
        "--data.val_json", str(tiny / "shapes_val.json"), "--data.generate", "null",
        "--data.batch_size", "4", "--data.num_workers", "0",
    ])
    assert isinstance(cli.model, cls) and cli.model.class_names == CLASS_NAMES
    assert metric in cli.trainer.callback_metrics
    checkpoint = tmp_path / "runs" / name / "v1" / "checkpoints" / "last.ckpt"
    assert isinstance(load_model(checkpoint), cls)
    out = tmp_path / "predicted"
    assert main(["--checkpoint", str(checkpoint), "--images", str(two_images), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"a.png", "b.png", "detections.json"}
