"""Anchor boxes ("default boxes" in the SSD paper), built exactly as Lesson 9 builds them.

For every grid ``g`` in ``grids`` (in the head's output order, e.g. 4x4, 2x2, 1x1) and every cell
``(row, col)`` of it, in row-major order, there are ``k = len(zooms) * len(ratios)`` anchors,
ordered zoom-major then ratio (the lesson's ``[(z * rh, z * rw) for z in zooms for rh, rw in ratios]``):

    centre = ((col + 0.5) / g, (row + 0.5) / g)
    size   = (zoom * rw / g, zoom * rh / g)        # (width, height)

``ratios`` are ``(rh, rw)`` pairs as the lesson writes them (its boxes were (y, x)): ``(1, 0.5)`` is
a tall anchor, ``(0.5, 1)`` a wide one. This order is the order in which the head flattens its conv
outputs ``(B, k*C, H, W) -> (B, H*W*k, C)``, so anchor ``a`` and output row ``a`` always belong together.

With the lesson's grids ``[4, 2, 1]``, zooms ``[0.75, 1.0, 1.3]`` and ratios
``[(1, 1), (1, 0.5), (0.5, 1)]``: k = 9 and 9 * (16 + 4 + 1) = 189 anchors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from detector.core.boxes import cxcywh_to_xyxy

__all__ = [
    "AnchorConfig",
    "Anchors",
    "LESSON_GRIDS",
    "LESSON_RATIOS",
    "LESSON_ZOOMS",
    "anchors_per_cell",
    "make_anchors",
    "mirror_index",
]

# The lesson's anchors (Lesson 9, pascal-multi.ipynb): 4x4, 2x2 and 1x1 grids, k = 9 per cell.
LESSON_GRIDS: tuple[int, ...] = (4, 2, 1)
LESSON_ZOOMS: tuple[float, ...] = (0.75, 1.0, 1.3)
LESSON_RATIOS: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.0, 0.5), (0.5, 1.0))


@dataclass
class AnchorConfig:
    """Anchor grids (finest first), zooms and ``(rh, rw)`` ratios; the lesson's by default (189 anchors)."""

    grids: list[int] = field(default_factory=lambda: list(LESSON_GRIDS))
    zooms: list[float] = field(default_factory=lambda: list(LESSON_ZOOMS))
    ratios: list[tuple[float, float]] = field(default_factory=lambda: list(LESSON_RATIOS))

    def make(self) -> Anchors:
        """:func:`make_anchors` of these settings."""
        return make_anchors(self.grids, self.zooms, self.ratios)


def anchors_per_cell(zooms: Sequence[float], ratios: Sequence[Sequence[float]]) -> int:
    """k, the number of anchors in each grid cell."""
    return len(zooms) * len(ratios)


@dataclass(frozen=True)
class Anchors:
    """An anchor set and what the box coders need to know about it.

    Attributes:
        cxcywh: ``(A, 4)`` centres and sizes in ``[0, 1]`` image units.
        cell_size: ``(A, 1)`` the side ``1 / g`` of the grid cell each anchor sits in (the lesson's
            ``grid_sizes``); the tanh coder moves a centre by at most half of it.
        grids: the grid sides, in order.
        k: anchors per cell.
    """

    cxcywh: Tensor
    cell_size: Tensor
    grids: tuple[int, ...]
    k: int

    @property
    def xyxy(self) -> Tensor:
        """``(A, 4)`` corners (the lesson's ``anchor_cnr``)."""
        return cxcywh_to_xyxy(self.cxcywh)

    def __len__(self) -> int:
        return self.cxcywh.shape[0]

    def level_sizes(self) -> list[int]:
        """The number of anchors on each grid, in the anchors' order: the runs of equal ``cell_size``
        (``make_anchors`` puts each grid's anchors together; a set concatenated grid by grid, with
        its own ``k`` per grid, works too). Adaptive matching picks its candidates per grid."""
        _, counts = torch.unique_consecutive(self.cell_size.detach().view(-1).cpu(), return_counts=True)
        return counts.tolist()

    def select(self, index: Tensor) -> Anchors:
        """The anchors at ``index`` (e.g. the positive ones, for the loss); ``grids`` and ``k`` still
        describe the full set (the box coders read only ``cxcywh`` and ``cell_size``)."""
        return Anchors(self.cxcywh[index], self.cell_size[index], self.grids, self.k)

    def to(self, device: torch.device | str) -> Anchors:
        return Anchors(self.cxcywh.to(device), self.cell_size.to(device), self.grids, self.k)


def make_anchors(
    grids: Sequence[int] = LESSON_GRIDS,
    zooms: Sequence[float] = LESSON_ZOOMS,
    ratios: Sequence[Sequence[float]] = LESSON_RATIOS,
) -> Anchors:
    """Build the anchors for ``grids`` x ``zooms`` x ``ratios`` in the head's output order.

    Returns:
        :class:`Anchors` with ``A = k * sum(g * g for g in grids)`` rows.
    """
    if not grids or not zooms or not ratios:
        raise ValueError(f"anchors need at least one grid, zoom and ratio; got {grids=}, {zooms=}, {ratios=}")
    if any(len(r) != 2 for r in ratios):
        raise ValueError(f"each ratio must be an (rh, rw) pair; got {ratios=}")
    # (k, 2) anchor (width, height) in cell units, zoom-major then ratio, as the lesson orders them.
    scales = torch.tensor([[z * rw, z * rh] for z in zooms for rh, rw in ratios], dtype=torch.float32)
    k = scales.shape[0]
    centres, sizes, cells = [], [], []
    for g in grids:
        if g < 1:
            raise ValueError(f"grid sides must be >= 1; got {grids=}")
        ticks = (torch.arange(g, dtype=torch.float32) + 0.5) / g  # (g,)
        cy, cx = torch.meshgrid(ticks, ticks, indexing="ij")  # (g, g) each, row-major
        ctr = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=1)  # (g*g, 2)
        centres.append(ctr.repeat_interleave(k, dim=0))  # (g*g*k, 2)
        sizes.append((scales / g).repeat(g * g, 1))  # (g*g*k, 2)
        cells.append(torch.full((g * g * k, 1), 1.0 / g, dtype=torch.float32))  # (g*g*k, 1)
    cxcywh = torch.cat([torch.cat(centres), torch.cat(sizes)], dim=1)  # (A, 4)
    return Anchors(cxcywh=cxcywh, cell_size=torch.cat(cells), grids=tuple(int(g) for g in grids), k=k)


def mirror_index(anchors: Anchors) -> Tensor:
    """``(A,)`` int64: ``mirror[a]`` is the anchor that anchor ``a`` becomes when the image is flipped
    left-right (same grid, row, size and shape; column ``g - 1 - col``). An involution.

    Raises ``ValueError`` for an anchor set that is not mirror-symmetric (every set built by
    :func:`make_anchors` is)."""
    c = anchors.cxcywh.double()  # (A, 4)
    key = lambda t: [tuple(row) for row in torch.round(t * 1e6).long().tolist()]  # noqa: E731 (exact up to 1e-6)
    where = {k: i for i, k in enumerate(key(c))}
    flipped = key(torch.stack([1.0 - c[:, 0], c[:, 1], c[:, 2], c[:, 3]], dim=1))  # (A, 4)
    if len(where) != len(c) or any(k not in where for k in flipped):
        raise ValueError("the anchor set is not symmetric under a left-right flip")
    return torch.tensor([where[k] for k in flipped], dtype=torch.long)
