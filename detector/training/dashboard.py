"""What the dashboards and the run folder show beyond the logged numbers: pictures of the
validation predictions and the metrics table (:class:`ValidationPictures`), the precision-recall
curves and confusion matrix at each validation, and the results folder at the end of a fit
(:class:`ResultsFolder`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image

from detector.evaluation.evaluator import format_table, summarize
from detector.evaluation.results import SplitImages
from detector.training.loggers import CSVLogger

__all__ = ["ResultsFolder", "ValidationPictures"]


class ValidationPictures(L.Callback):
    """Every validation epoch, logs a grid of the first val images with predicted (solid, scored) and
    ground-truth (dashed) boxes, and the metrics table (:func:`detector.evaluation.evaluator.format_table`), to
    whichever loggers the run uses (TensorBoard images/text, wandb images/tables, CSV: PNG and
    markdown files in the log dir). The detector only (it reads its detections and metrics)."""

    def __init__(self, num_images: int = 8) -> None:
        self.num_images = num_images
        self._sample: dict[str, Any] | None = None
        self.last_picture: Any = None  # the latest grid, (H, W, 3) uint8: the results folder's predictions.png

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # The epoch's first batch that has images (on_bad_record: skip can empty one).
        if self._sample is not None or trainer.sanity_checking or not trainer.is_global_zero or not len(batch["images"]):
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
        from detector.pictures import denormalize

        images = denormalize(batch["images"][:n], backbone.mean, backbone.std)
        self._sample = {"images": list(images), "preds": preds, "targets": targets}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self._sample is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        from detector.pictures import detection_grid, figure_to_array

        s, self._sample = self._sample, None
        fig = detection_grid(s["images"], s["preds"], s["targets"], pl_module.class_names)
        picture = self.last_picture = figure_to_array(fig)
        metrics = getattr(pl_module, "last_metrics", {}).get("val")
        table = format_table(summarize(metrics, pl_module.class_names)) if metrics else None
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
            elif isinstance(logger, (CSVLogger, LightningCSVLogger)):
                out = Path(logger.log_dir) / "pictures"
                out.mkdir(parents=True, exist_ok=True)
                Image.fromarray(picture).save(out / f"val_epoch{epoch:03d}.png")
                if table:
                    (out / f"per_class_ap_epoch{epoch:03d}.md").write_text(table + "\n")


def _log_figure(trainer: L.Trainer, tag: str, picture: Any) -> None:
    """An ``(H, W, 3)`` uint8 picture to TensorBoard and wandb (the CSV log keeps no pictures)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, picture, trainer.global_step, dataformats="HWC")
        elif isinstance(logger, WandbLogger):
            logger.log_image(tag, [picture], step=trainer.global_step)


class ResultsFolder(L.Callback):
    """At each validation, the precision-recall curves and the confusion matrix go to TensorBoard
    and wandb; at the end of a fit, the last validation's results folder is written into the run's
    folder (``results/val``, :func:`detector.evaluation.results.write_results`), with the training curves of
    the CSV log, the last :class:`ValidationPictures` grid and the error analysis (its worst images
    read from the val split's files). The detector's model gives it itself
    (:meth:`detector.training.tasks.detection.DetectorModule.configure_callbacks`)."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        found = getattr(pl_module, "last_validation", None)
        if trainer.sanity_checking or not trainer.is_global_zero or found is None:
            return
        if not any(isinstance(lg, (TensorBoardLogger, WandbLogger)) for lg in trainer.loggers):
            return
        from detector.evaluation.results import result_figures
        from detector.pictures import figure_to_array

        for name, fig in result_figures(*found, pl_module.class_names, ("PR_curve", "confusion_matrix_normalized")).items():
            _log_figure(trainer, f"val/{name}", figure_to_array(fig))

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        found = getattr(pl_module, "last_validation", None)
        if not trainer.is_global_zero or found is None:
            return
        from detector.evaluation.results import write_results

        log = None
        for logger in trainer.loggers:
            logger.save()
            if isinstance(logger, (CSVLogger, LightningCSVLogger)):
                log = Path(logger.log_dir) / "metrics.csv"
        grid = next((cb.last_picture for cb in trainer.callbacks if isinstance(cb, ValidationPictures)), None)
        predictions = None
        if grid is not None:
            import matplotlib.pyplot as plt

            predictions = plt.figure(figsize=(grid.shape[1] / 100, grid.shape[0] / 100), dpi=100)
            predictions.figimage(grid)
        summary = summarize(pl_module.last_metrics["val"], pl_module.class_names) if "val" in pl_module.last_metrics else None
        write_results(
            Path(trainer.default_root_dir) / "results" / "val", *found, pl_module.class_names, summary, log, predictions,
            _val_images(trainer, found[1]), score_threshold=pl_module.post_cfg.picture_score_threshold,
        )


def _val_images(trainer: L.Trainer, ground_truths: list[dict[str, Any]]) -> SplitImages | None:
    """The validated images (ids from the metric's ``image_id``), or None when the data module has
    no val records for them (a data module other than :class:`DetectionDataModule`)."""
    dm = getattr(trainer, "datamodule", None)
    split = getattr(dm, "splits", {}).get("val")
    ids = [int(gt.get("image_id", -1)) for gt in ground_truths]
    if split is None or not {r.image_id for r in split.records} >= set(ids):
        return None
    return SplitImages.of(ids, split.records, dm.hparams.image_dir)
