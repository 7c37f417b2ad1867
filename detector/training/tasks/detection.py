"""The lesson's SSD as a LightningModule: the network, the anchors, matching + loss, decoding + NMS
and the metrics, on the staged recipe of :class:`detector.training.tasks.staged.StagedModule`.

The network returns raw activations; everything the lesson did around it (``ssd_loss``,
``actn_to_bb``, ``nms``) is called from here (effdet's ``DetBenchTrain`` / ``DetBenchPredict``
idea). Each part's settings are a dataclass beside the code it configures:
:class:`~detector.core.anchors.AnchorConfig`, :class:`~detector.model.head.HeadConfig`,
:class:`~detector.core.loss.LossConfig`, :class:`~detector.core.postprocess.PostprocessConfig`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import MeanMetric

from detector.core.anchors import AnchorConfig, Anchors, mirror_index
from detector.core.loss import LossConfig, SSDLoss
from detector.core.postprocess import PostprocessConfig, flip_merge, postprocess, to_pixels
from detector.data.dataset import targets_in_pixels
from detector.errors import ConfigError
from detector.evaluation.metrics import DetectionMetrics, fitness, per_class
from detector.model import build_ssd
from detector.model.head import HeadConfig
from detector.training.dashboard import ResultsFolder
from detector.training.guards import batch_is_empty
from detector.training.tasks.staged import StagedModule, to_config

__all__ = ["AnchorConfig", "DetectorModule", "HeadConfig", "LossConfig", "PostprocessConfig"]


class DetectorModule(StagedModule):
    """The lesson's SSD as a LightningModule.

    Its other arguments (the classes, the backbone, its weights, the image size and the recipe)
    are :class:`~detector.training.tasks.staged.StagedModule`'s.

    Args:
        anchors: anchor grids, zooms and ratios (the lesson's 189 anchors by default); ``auto`` in a
            config: the image size and anchors chosen from the training boxes
            (:func:`detector.autoanchor.choice.resolve_auto_anchors`, which ``detector train`` calls).
        head: the SSD head's dropouts, class-logit bias, width and FPN top-down pathway.
        loss: box coder, matching threshold, focal loss and the terms' weights.
        postprocess: score and NMS thresholds, detections kept, flip test-time augmentation.
    """

    def __init__(
        self,
        anchors: AnchorConfig | Literal["auto"] | None = None,
        head: HeadConfig | None = None,
        loss: LossConfig | None = None,
        postprocess: PostprocessConfig | None = None,
        **kwargs: Any,
    ) -> None:
        if anchors == "auto":
            raise ConfigError(
                "anchors: auto is chosen from the training data before the model is built (detector train does it; "
                "in Python, detector.autoanchor.choice.resolve_auto_anchors(config) or an AnchorConfig)"
            )
        super().__init__(**kwargs)
        anchors, head = to_config(AnchorConfig, anchors), to_config(HeadConfig, head)
        loss, postprocess = to_config(LossConfig, loss), to_config(PostprocessConfig, postprocess)
        self.post_cfg = postprocess
        self.model = build_ssd(self.num_classes, self.backbone_name, self.weights, self.image_size, anchors, head)
        self.model_ready(anchors=asdict(anchors), head=asdict(head), loss=asdict(loss), postprocess=asdict(postprocess))
        a = anchors.make()
        self.register_buffer("anchor_cxcywh", a.cxcywh, persistent=False)  # (A, 4)
        self.register_buffer("anchor_cell", a.cell_size, persistent=False)  # (A, 1)
        self.register_buffer("anchor_mirror", mirror_index(a), persistent=False)  # (A,) for flip_tta
        self._anchor_meta = (a.grids, a.k)
        self.criterion = SSDLoss(**asdict(loss))
        self.coder = loss.coder
        self.val_metrics = DetectionMetrics(self.num_classes)
        self.test_metrics = DetectionMetrics(self.num_classes)
        self.val_loss = MeanMetric()

    @property
    def anchors(self) -> Anchors:
        """The anchor set on the module's device."""
        return Anchors(self.anchor_cxcywh, self.anchor_cell, *self._anchor_meta)

    # ------------------------------------------------------------------------------ detection
    def detect(self, images: Tensor, score_threshold: float | None = None) -> list[dict[str, Tensor]]:
        """``(B, 3, S, S)`` normalised images -> per-image detections, boxes xyxy in ``[0, 1]``
        (see :func:`~detector.core.postprocess.postprocess`; ``score_threshold`` overrides the config's)."""
        return self.detections(images, *self(images), score_threshold)

    def detections(
        self, images: Tensor, cls_logits: Tensor, box_deltas: Tensor, score_threshold: float | None = None
    ) -> list[dict[str, Tensor]]:
        """The network's outputs for ``images`` -> detections: ``flip_tta`` if configured, then decoding
        and NMS with the postprocess config (``score_threshold`` overrides its own)."""
        cfg = self.post_cfg
        if cfg.flip_tta:
            cls_logits, box_deltas = flip_merge(cls_logits, box_deltas, *self(images.flip(-1)), self.anchor_mirror)
        return postprocess(
            cls_logits.float(),
            box_deltas.float(),
            self.anchors,
            coder=self.coder,
            score_threshold=cfg.score_threshold if score_threshold is None else score_threshold,
            iou_threshold=cfg.iou_threshold,
            topk_per_class=cfg.topk_per_class,
            max_per_image=cfg.max_per_image,
        )

    # -------------------------------------------------------------------------------- training
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Matching + the loss terms ``loc``, ``cls`` and their total ``loss`` (in float32 under AMP)."""
        return self._loss_and_outputs(batch)[0]

    def _loss_and_outputs(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], tuple[Tensor, Tensor]]:
        cls_logits, box_deltas = (t.float() for t in self(batch["images"]))  # the loss runs in float32 under AMP
        terms = self.criterion(cls_logits, box_deltas, self.anchors, batch["boxes"], batch["labels"])
        return terms, (cls_logits, box_deltas)

    # ------------------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict[str, Tensor], batch_idx: int, metrics: DetectionMetrics) -> dict[str, Any]:
        if batch_is_empty(self, batch, batch_idx):
            return {"detections": []}
        terms, (cls_logits, box_deltas) = self._loss_and_outputs(batch)
        self.val_loss.update(terms["loss"], weight=batch["images"].shape[0])  # without flip_tta
        dets = self.detections(batch["images"], cls_logits, box_deltas)
        metrics.update(to_pixels(dets, batch["sizes"]), targets_in_pixels(batch))
        return {"detections": dets}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, batch_idx, self.val_metrics)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, batch_idx, self.test_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def _log_metrics(self, split: str, metrics: DetectionMetrics) -> None:
        """Log the split's loss, COCO/VOC mAPs and per-class AP@0.5, all computed over the whole split."""
        result = metrics.compute()
        logs = {f"{split}/loss": self.val_loss.compute()}
        for key in ("map", "map_50", "map_75", "voc07_map_50", "voc_map_50"):
            logs[f"{split}/{key}"] = torch.as_tensor(result[key], dtype=torch.float32)
        logs[f"{split}/fitness"] = fitness(logs[f"{split}/map_50"], logs[f"{split}/map"])  # what imported configs keep
        ap_50 = per_class(result)["map_50"]
        for i, name in enumerate(self.class_names):
            logs[f"{split}_ap50/{name}"] = torch.as_tensor(ap_50[i], dtype=torch.float32)
        # Already over every process's images (torchmetrics synced them), so equal on every process:
        # the max over processes is that value exactly (a mean of N copies need not be); logged with
        # sync_dist, Lightning does not warn about epoch values logged unsynced under DDP.
        self.log_dict(logs, sync_dist=True, reduce_fx="max")
        self.last_metrics = {split: result}
        if split == "val":  # every process's images, for the curves of the results folder
            with metrics.sync_context():
                self.last_validation = metrics.per_image()
        metrics.reset()
        self.val_loss.reset()

    def configure_callbacks(self) -> list[Any]:
        """:meth:`StagedModule.configure_callbacks`, and the results folder (:class:`ResultsFolder`)."""
        return [*super().configure_callbacks(), ResultsFolder()]

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> list[dict[str, Tensor]]:
        """Per image: detections in original-image pixels plus its ``image_id``."""
        dets = to_pixels(self.detect(batch["images"]), batch["sizes"])
        for det, image_id in zip(dets, batch["image_ids"]):
            det["image_id"] = image_id
        return dets
