"""The pictures of the error analysis (:mod:`detector.evaluation.errors`): the AP each kind of
error costs (``errors.png``) and the images with the most errors, every box drawn as what it is
(``worst_images.png``). Pure functions returning figures; the numbers come from the analysis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor

from detector.evaluation.errors import ERROR_KINDS, FP_KINDS
from detector.pictures.draw import draw_boxes, image_grid

if TYPE_CHECKING:
    from detector.evaluation.errors import ErrorAnalysis, ImageVerdicts

__all__ = ["KIND_MEANING", "VERDICT_COLOURS", "errors_figure", "worst_images_figure"]

# Okabe and Ito's colour-blind-safe palette: true, false and missed never differ by hue alone.
VERDICT_COLOURS = {"tp": "#009E73", "fp": "#D55E00", "fn": "#56B4E9", "difficult": "#BBBBBB"}
_KIND_COLOURS = {"cls": "#E69F00", "loc": "#0072B2", "both": "#CC79A7", "dupe": "#F0E442", "bkg": "#D55E00", "missed": "#56B4E9"}
KIND_MEANING = {
    "cls": "right box, wrong class",
    "loc": "right class, box off",
    "both": "wrong class and box off",
    "dupe": "an object already found",
    "bkg": "nothing there",
    "missed": "an object never found",
}


def errors_figure(analysis: ErrorAnalysis) -> Figure:
    """TIDE's breakdown: a bar per error kind, the AP@``iou`` gained by fixing every error of that
    kind (its dAP), with how many errors of that kind there are (every analysed detection, as
    the dAP counts them), and beside them the two special errors (every false positive scored
    last, every object found).

    Args:
        analysis: :func:`detector.evaluation.errors.analyse_errors`' result.

    Returns:
        A figure with one axes: six bars for the kinds, two hatched for the special errors.
    """
    iou = f"{analysis.iou:g}"
    main = [analysis.dap[k] for k in ERROR_KINDS]
    special = [analysis.dap_false_positives, analysis.dap_false_negatives]
    fig, ax = plt.subplots(figsize=(10, 6))
    x_main = np.arange(len(main))
    x_special = len(main) + 0.6 + np.arange(2)
    bars = ax.bar(x_main, main, color=[_KIND_COLOURS[k] for k in ERROR_KINDS], edgecolor="black", linewidth=0.6)
    ax.bar(x_special, special, color="white", edgecolor="grey", hatch="//", linewidth=0.8)
    top = max([*main, *special, 1e-3])
    for x, v in zip([*x_main, *x_special], [*main, *special]):
        ax.text(x, max(v, 0) + top * 0.015, f"{v:.3f}", ha="center", va="bottom", fontsize=10)
    ax.axvline(len(main) - 0.5 + 0.3, color="grey", lw=0.8, ls=":")
    counts = [f"{k}\n{analysis.errors[k]}\n{'object' if k == 'missed' else 'detection'}{'' if analysis.errors[k] == 1 else 's'}"
              for k in ERROR_KINDS]
    ax.set_xticks([*x_main, *x_special], [*counts, "every FP\nscored last", "every object\nfound"], fontsize=9)
    ax.set_ylim(0, top * 1.15)
    ax.set_ylabel(f"dAP@{iou}: the AP gained by fixing them")
    ap = "n/a" if math.isnan(analysis.ap) else f"{analysis.ap:.3f}"
    ax.set_title(
        f"What each kind of error costs (TIDE, Bolya et al. 2020): AP@{iou} = {ap}\n"
        f"TIDE's AP: COCO's 101-point AP@{iou}, averaged over classes; each kind fixed alone; "
        "hatched: TIDE's special errors",
        fontsize=10,
    )
    ax.legend(
        bars, [f"{k}: {KIND_MEANING[k]}" for k in ERROR_KINDS], loc="upper center", bbox_to_anchor=(0.5, -0.16),
        ncols=3, fontsize=9, frameon=False,
    )
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def _take(boxes: Tensor, rows: np.ndarray) -> Tensor:
    """``boxes[rows]`` for a numpy index array (empty included)."""
    return boxes[torch.as_tensor(rows, dtype=torch.int64)]


def _names(texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """``draw_boxes`` writes ``class_names[label]``: one made-up class per box, its own text."""
    return np.arange(len(texts)), texts


def worst_images_figure(
    images: Sequence[np.ndarray],
    detections: Sequence[dict[str, Tensor]],
    ground_truths: Sequence[dict[str, Tensor]],
    verdicts: Sequence[ImageVerdicts],
    class_names: Sequence[str],
    score_threshold: float,
    iou: float,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
) -> Figure:
    """A grid of images with every detection scoring at least ``score_threshold`` drawn as what it
    is: a true positive (green, solid), a false positive (orange-red, solid, its error kind
    written first) or, dashed in blue, an object no kept detection found (FN); difficult objects
    dotted grey; detections on them are left out (neither true nor false).

    Args:
        images: ``(H, W, 3)`` uint8, the boxes' pixels.
        detections, ground_truths: per image, as :func:`detector.evaluation.errors.analyse_errors` took them.
        verdicts: :attr:`ErrorAnalysis.images` of those images.
        class_names: ``C`` names.
        score_threshold: the detections drawn (and counted) score at least this.
        iou: the analysis' matching IoU (for the caption).
        titles: one per image (default: the counts).

    Returns:
        A figure whose panel ``i`` holds one rectangle per TP, FP, FN and difficult object.
    """
    fig, axes = image_grid(max(len(images), 1), ncols)
    if not len(images):
        axes[0].text(0.5, 0.5, f"no false positive or missed object at score ≥ {score_threshold:g}",
                     ha="center", va="center", fontsize=11, transform=axes[0].transAxes)
    for i, ax in enumerate(axes[: len(images)]):
        det, gt, v = detections[i], ground_truths[i], verdicts[i]
        m = v.at(score_threshold)
        ax.imshow(images[i])
        name = [class_names[int(c)] for c in det["labels"]]
        gt_name = [class_names[int(c)] for c in gt["labels"]]
        difficult = np.flatnonzero(v.difficult)
        if len(difficult):
            draw_boxes(ax, _take(gt["boxes"], difficult), *_names(["difficult"] * len(difficult)),
                       colours=[VERDICT_COLOURS["difficult"]] * len(difficult), linestyle=":", linewidth=1.5)
        fn = np.flatnonzero(m["fn"])
        draw_boxes(ax, _take(gt["boxes"], fn), *_names([f"missed {gt_name[j]}" for j in fn]),
                   colours=[VERDICT_COLOURS["fn"]] * len(fn), linestyle="--")
        tp = np.flatnonzero(m["tp"])
        draw_boxes(ax, _take(det["boxes"], tp), *_names([name[j] for j in tp]), scores=v.scores[tp],
                   colours=[VERDICT_COLOURS["tp"]] * len(tp))
        fp = np.flatnonzero(m["fp"])
        texts = [f"{FP_KINDS[v.kind[j] - 1]}: {name[j]}" for j in fp]
        draw_boxes(ax, _take(det["boxes"], fp), *_names(texts), scores=v.scores[fp], colours=[VERDICT_COLOURS["fp"]] * len(fp))
        title = titles[i] if titles is not None else ""
        counts = f"TP {len(tp)} · FP {len(fp)} · FN {len(fn)}"
        ax.set_title(f"{title}\n{counts}" if title else counts, fontsize=9)
    handles = [
        Line2D([], [], color=VERDICT_COLOURS["tp"], lw=2.5, label="TP: a detection that found its object"),
        Line2D([], [], color=VERDICT_COLOURS["fp"], lw=2.5, label="FP: a false detection, its error kind first"),
        Line2D([], [], color=VERDICT_COLOURS["fn"], lw=2.5, ls="--", label="FN: an object no detection found"),
        Line2D([], [], color=VERDICT_COLOURS["difficult"], lw=2, ls=":", label="difficult object (not counted)"),
    ]
    fig.legend(handles=handles, loc="upper center", ncols=2, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(
        f"The images with the most errors (FP + FN) at score ≥ {score_threshold:g}, IoU {iou:g}. FP kinds:\n"
        + "; ".join(f"{k}: {KIND_MEANING[k]}" for k in FP_KINDS),
        fontsize=9, y=0.0, va="bottom",
    )
    height = fig.get_figheight()  # inches: the legend and the caption keep their room with one row or many
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.6 / height), h_pad=2.5)
    return fig
