"""Callbacks: the staged freezing of the lesson's recipe, and pictures + per-class AP for the dashboards."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import random

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from torch import nn

from detector.visualize import denormalize, detection_grid, figure_to_array

__all__ = ["StagedFreezing", "apply_freeze", "RNGState", "RunIdentity", "ValidationPictures", "per_class_table"]

_BATCHNORM = (nn.modules.batchnorm._BatchNorm,)


def apply_freeze(groups: Sequence[nn.Module], frozen: Sequence[int], train_bn: bool = True) -> None:
    """Freeze the layer groups whose indices are in ``frozen``; make the others trainable.

    With ``train_bn`` (fastai's default), BatchNorm layers inside frozen groups keep training their
    affine parameters and running statistics; without it they are frozen and put in eval mode.
    """
    for i, group in enumerate(groups):
        freeze = i in frozen
        for module in group.modules():
            is_bn = isinstance(module, _BATCHNORM)
            trainable = not freeze or (is_bn and train_bn)
            for p in module.parameters(recurse=False):
                p.requires_grad_(trainable)
            if is_bn and freeze and not train_bn:
                module.eval()


class StagedFreezing(L.Callback):
    """Applies the recipe's freeze setting for the current epoch before every training epoch.

    The stage is a pure function of the epoch (``DetectorModule.frozen_groups``), so a run resumed
    from a checkpoint freezes exactly what the interrupted run froze, and the optimiser (which holds
    every group from the first step) never changes shape.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        frozen = pl_module.frozen_groups(trainer.current_epoch)
        apply_freeze(pl_module.model.layer_groups, frozen, pl_module.train_bn)


class RNGState(L.Callback):
    """Saves the global RNG states (torch CPU and CUDA, NumPy, ``random``) with every checkpoint and
    restores them on resume, so a resumed run draws the same dropout masks as an uninterrupted one.

    Lightning restores epoch, step, optimiser and scheduler but not these. The data pipeline does not
    need them (its shuffling and augmentation are seeded by (seed, epoch, index)); dropout does.
    Stored as tensors and plain lists, so checkpoints still load with ``weights_only=True``.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(_tuples(state["python"]))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    """``random.setstate`` wants the nested tuples back (a checkpoint may hand over lists)."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


class RunIdentity(L.Callback):
    """Records each logger's run id (TensorBoard/CSV ``version``, wandb run ``id``) in checkpoints.

    ``train.py fit --ckpt_path ...`` reads them back before building the loggers, so a resumed run
    keeps writing to the same dashboard run instead of starting a new one.
    """

    def __init__(self) -> None:
        self.loggers: list[dict[str, Any]] = []

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        self.loggers = [{"type": type(lg).__name__, "version": lg.version} for lg in trainer.loggers]

    def state_dict(self) -> dict[str, Any]:
        return {"loggers": self.loggers}


def per_class_table(class_names: Sequence[str], per_class: dict[str, Any]) -> str:
    """A markdown table of per-class AP (COCO AP, AP@0.5, VOC07 AP@0.5)."""
    rows = ["| class | AP | AP@0.5 | VOC07 AP@0.5 |", "|---|---|---|---|"]
    for i, name in enumerate(class_names):
        vals = [float(torch.as_tensor(per_class[k][i])) for k in ("map", "map_50", "voc07_map_50")]
        rows.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return "\n".join(rows)


class ValidationPictures(L.Callback):
    """Every validation epoch, logs a grid of the first val images with predicted (solid, scored) and
    ground-truth (dashed) boxes, and the per-class AP table, to whichever loggers the run uses
    (TensorBoard images/text, wandb images/tables, CSV: PNG and markdown files in the log dir)."""

    def __init__(self, num_images: int = 8) -> None:
        self.num_images = num_images
        self._sample: dict[str, Any] | None = None

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        n = min(self.num_images, batch["images"].shape[0])
        backbone = pl_module.model.backbone
        S = batch["images"].shape[-1]
        thr = pl_module.post_cfg.picture_score_threshold
        preds = []
        for det in outputs["detections"][:n]:
            keep = det["scores"] >= thr
            preds.append({k: v[keep].cpu() for k, v in det.items()})
            preds[-1]["boxes"] = preds[-1]["boxes"] * S
        targets = []
        for i in range(n):
            real = batch["labels"][i] >= 0
            targets.append({"boxes": batch["boxes"][i][real].cpu() * S, "labels": batch["labels"][i][real].cpu()})
        images = denormalize(batch["images"][:n], backbone.mean, backbone.std)
        self._sample = {"images": list(images), "preds": preds, "targets": targets}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self._sample is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        s, self._sample = self._sample, None
        fig = detection_grid(s["images"], s["preds"], s["targets"], pl_module.class_names)
        picture = figure_to_array(fig)
        metrics = getattr(pl_module, "last_metrics", {}).get("val")
        table = per_class_table(pl_module.class_names, metrics["per_class"]) if metrics else None
        step, epoch = trainer.global_step, trainer.current_epoch
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/pictures", picture, step, dataformats="HWC")
                if table:
                    logger.experiment.add_text("val/per_class_ap", table, step)
            elif isinstance(logger, WandbLogger):
                logger.log_image("val/pictures", [picture], step=step)
                if table:
                    logger.log_text("val/per_class_ap", columns=["table"], data=[[table]], step=step)
            elif isinstance(logger, CSVLogger):
                out = Path(logger.log_dir) / "pictures"
                out.mkdir(parents=True, exist_ok=True)
                import matplotlib.image

                matplotlib.image.imsave(out / f"val_epoch{epoch:03d}.png", picture)
                if table:
                    (out / f"per_class_ap_epoch{epoch:03d}.md").write_text(table + "\n")
