"""Callbacks: the staged freezing of the lesson's recipe, and pictures + per-class AP for the dashboards."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from torch import nn

from detector.visualize import denormalize, detection_grid, figure_to_array

__all__ = ["StagedFreezing", "apply_freeze", "ValidationPictures", "per_class_table"]

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
