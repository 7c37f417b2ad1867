"""Export a trained checkpoint's network to ONNX, with a sidecar JSON that says how to decode it.

    detector export --checkpoint runs/shapes/checkpoints/best.ckpt --onnx model.onnx [--opset 17] [--dynamic-batch]

writes ``model.onnx`` and ``model.json``.

The ONNX graph is the network alone, raw activations out, exactly what ``SSD.forward`` returns:

    input   images      float32 (B, 3, S, S), RGB in [0, 1] normalised as (x - mean) / std
    output  cls_logits  float32 (B, A, C)  class logits (no background column)
    output  box_deltas  float32 (B, A, 4)  box activations for the checkpoint's box coder

``B`` is fixed to 1 unless ``--dynamic-batch``; ``S`` is always the checkpoint's image size (the
head's grids are built for it). The sidecar JSON (also stored in the ONNX file's metadata under the
key ``"detector"``) holds everything a deployment needs around the graph: ``class_names``,
``image_size``, ``mean``, ``std``, ``coder`` and ``coder_params``, ``postprocess`` (the thresholds), and the ``A``
anchors as ``anchors_cxcywh`` (``[cx, cy, w, h]`` in ``[0, 1]``), ``anchors_cell`` (the side
``1 / g`` of each anchor's grid cell) and ``anchors_mirror`` (each anchor's mirror anchor under a
left-right flip), in the order of the outputs' rows.

Decoding and NMS are left out of the graph on purpose: torchvision's NMS exports only through a
custom-op mapping whose output shape is data-dependent, which some runtimes reject; the steps are
short and every runtime has an NMS. For each image, as ``detector.core.postprocess`` does:

1. preprocess: RGB image -> squash-resize to ``S x S`` (no crop, no letterbox) -> ``/ 255`` ->
   ``(x - mean) / std`` -> CHW;
1b. with ``postprocess.flip_tta``: run the left-right mirrored image too, take its two outputs'
   rows in ``anchors_mirror`` order, negate the first box activation of each row, and average
   each output with the first image's (before step 2);
2. scores = ``sigmoid(cls_logits)``, ``(A, C)``;
3. boxes, coder ``"tanh"`` (the lesson's): ``t = tanh(box_deltas)``;
   ``cx = acx + t0 / 2 * cell``, ``cy = acy + t1 / 2 * cell``, ``w = aw * (1 + t2 / 2)``,
   ``h = ah * (1 + t3 / 2)``; coder ``"ssd"`` (``coder_params``: ``center_variance`` cv = 0.1,
   ``size_variance`` sv = 0.2, ``max_log_size`` m = log(62.5)): ``cx = acx + d0 * cv * aw``,
   ``cy = acy + d1 * cv * ah``, ``w = aw * exp(min(d2 * sv, m))``, ``h = ah * exp(min(d3 * sv, m))``;
   then corners ``x1 = cx - w / 2`` ... and clip to ``[0, 1]``;
4. per class: keep the ``topk_per_class`` best anchors, then those scoring above
   ``score_threshold``; NMS at ``iou_threshold``; keep the ``max_per_image`` best of all classes;
5. multiply x by the original width and y by the original height: boxes in its pixels.

:func:`decode_boxes` is step 3 in NumPy, checked against the PyTorch coders by the tests.

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): the network is plain
convolutions, which it traces exactly, and the ``torch.export``-based exporter needs the
``onnxscript`` package, which this project does not install. Tracing turns the head's input-size
check into a constant: the graph accepts only ``S x S`` inputs, which is what it was built for.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from detector.core.box_coder import make_box_coder
from detector.training.tasks.detection import DetectorModule

__all__ = ["decode_boxes", "export_onnx", "sidecar", "stamp"]

INPUT_NAME = "images"
OUTPUT_NAMES = ("cls_logits", "box_deltas")
METADATA_KEY = "detector"


def sidecar(model: DetectorModule, dynamic_batch: bool = False) -> dict[str, Any]:
    """The facts about ``model`` that a deployment needs to decode its raw outputs (JSON-ready)."""
    anchors = model.anchors
    backbone = model.model.backbone
    B, S = "batch" if dynamic_batch else 1, model.image_size
    return {
        "inputs": {INPUT_NAME: [B, 3, S, S]},
        "outputs": {OUTPUT_NAMES[0]: [B, len(anchors), model.num_classes], OUTPUT_NAMES[1]: [B, len(anchors), 4]},
        "class_names": list(model.class_names),
        "image_size": int(model.image_size),
        "mean": [float(v) for v in backbone.mean],
        "std": [float(v) for v in backbone.std],
        "coder": model.coder,
        "coder_params": {k: v for k, v in asdict(make_box_coder(model.coder)).items() if k != "name"},
        "postprocess": asdict(model.post_cfg),
        "grids": list(anchors.grids),
        "k": anchors.k,
        "anchors_cxcywh": anchors.cxcywh.cpu().tolist(),
        "anchors_cell": anchors.cell_size.squeeze(1).cpu().tolist(),
        "anchors_mirror": model.anchor_mirror.cpu().tolist(),
    }


def export_onnx(
    model: DetectorModule, path: str | Path, opset: int = 17, dynamic_batch: bool = False
) -> tuple[Path, Path]:
    """Write ``model``'s network to ``path`` (ONNX) and its :func:`sidecar` beside it (``.json``).

    The network is put in eval mode on the CPU in float32 (in place) before it is traced.

    Returns:
        The two paths written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = model.model.float().eval().cpu()
    size = model.image_size
    example = torch.zeros(1, 3, size, size)
    batch_axis = {0: "batch"}
    dynamic_axes = {name: batch_axis for name in (INPUT_NAME, *OUTPUT_NAMES)} if dynamic_batch else None
    with warnings.catch_warnings():
        # The head's shape checks become constants (see the module docstring), and the exporter
        # announces its deprecation: both expected.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            network,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
        )
    return path, stamp(path, sidecar(model, dynamic_batch))


def stamp(path: Path, info: dict[str, Any]) -> Path:
    """Put ``info`` into the ONNX file at ``path`` (metadata key ``detector``), check the model, and
    write ``info`` beside it as ``.json``; returns the JSON's path."""
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    json_path = path.with_suffix(".json")
    # One key per line, each value on its line (the anchors would take thousands of lines indented).
    json_path.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in info.items()) + "\n}\n")
    return json_path


def decode_boxes(box_deltas: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """Step 3 of the module docstring: ``(..., A, 4)`` raw box activations -> ``(..., A, 4)`` xyxy
    in ``[0, 1]``, not yet clipped, using the sidecar ``info``'s anchors and coder."""
    anchors = np.asarray(info["anchors_cxcywh"], dtype=np.float32)  # (A, 4)
    cell = np.asarray(info["anchors_cell"], dtype=np.float32)[:, None]  # (A, 1)
    d = np.asarray(box_deltas, dtype=np.float32)  # (..., A, 4)
    if info["coder"] == "tanh":
        t = np.tanh(d)
        centre = anchors[:, :2] + t[..., :2] / 2 * cell  # (..., A, 2)
        size = anchors[:, 2:] * (t[..., 2:] / 2 + 1)  # (..., A, 2)
    elif info["coder"] == "ssd":
        p = info["coder_params"]
        centre = anchors[:, :2] + d[..., :2] * p["center_variance"] * anchors[:, 2:]  # (..., A, 2)
        size = anchors[:, 2:] * np.exp(np.minimum(d[..., 2:] * p["size_variance"], p["max_log_size"]))  # (..., A, 2)
    else:
        raise ValueError(f"unknown coder {info['coder']!r} in the sidecar JSON")
    return np.concatenate([centre - size / 2, centre + size / 2], axis=-1)  # (..., A, 4)
