from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from detector.core.anchors import make_anchors
from detector.core.box_coder import SSDCoder, TanhCoder, make_box_coder
from detector.core.boxes import clip_boxes, xywh_to_xyxy, xyxy_to_cxcywh, xyxy_to_xywh
from reference import actn_to_bb


@pytest.fixture
def anchors():
    return make_anchors()  # the lesson's 189


def test_make_box_coder_by_name():
    assert isinstance(make_box_coder("tanh"), TanhCoder)
    assert isinstance(make_box_coder("ssd"), SSDCoder)
    coder = SSDCoder(center_variance=0.2)
    assert make_box_coder(coder) is coder
    with pytest.raises(ValueError, match="unknown box coder 'yolo'"):
        make_box_coder("yolo")


def test_tanh_zero_activation_is_the_anchor(anchors):
    boxes = TanhCoder().decode(torch.zeros(2, len(anchors), 4), anchors)
    torch.testing.assert_close(boxes, anchors.xyxy.expand(2, -1, -1))


def test_tanh_bounds_half_a_cell_and_half_to_one_and_a_half(anchors):
    coder = TanhCoder()
    big = torch.full((len(anchors), 4), 50.0)  # tanh = 1 in float32
    for sign in (1.0, -1.0):
        got = xyxy_to_cxcywh(coder.decode(sign * big, anchors))
        shift = sign * anchors.cell_size / 2  # (A, 1)
        torch.testing.assert_close(got[:, :2], anchors.cxcywh[:, :2] + shift)
        torch.testing.assert_close(got[:, 2:], anchors.cxcywh[:, 2:] * (1 + sign / 2))
    # Random activations never leave those bounds.
    got = xyxy_to_cxcywh(coder.decode(5 * torch.randn(3, len(anchors), 4), anchors))
    moved = (got[..., :2] - anchors.cxcywh[:, :2]).abs()
    assert (moved <= anchors.cell_size / 2 + 1e-6).all()
    scale = got[..., 2:] / anchors.cxcywh[:, 2:]
    assert (scale >= 0.5 - 1e-6).all() and (scale <= 1.5 + 1e-6).all()


def test_tanh_matches_the_lesson_port(anchors):
    deltas = torch.randn(4, len(anchors), 4, dtype=torch.float64)
    got = TanhCoder().decode(deltas, anchors)
    for b in range(4):
        torch.testing.assert_close(got[b], actn_to_bb(deltas[b], anchors), rtol=0, atol=1e-12)


def test_tanh_loc_loss_is_l1_on_decoded_boxes(anchors):
    """Against the lesson port's ``actn_to_bb``, not the coder's own ``decode``."""
    deltas = torch.randn(2, len(anchors), 4, dtype=torch.float64)
    target = anchors.xyxy.to(torch.float64) + 0.01
    got = TanhCoder().loc_loss(deltas, target, anchors)
    for b in range(2):
        torch.testing.assert_close(got[b], (actn_to_bb(deltas[b], anchors) - target).abs(), rtol=0, atol=1e-12)


def test_ssd_encode_by_hand():
    anchors = make_anchors(grids=(1,), zooms=(0.5,), ratios=((1.0, 1.0),))  # one box: centre 0.5, side 0.5
    box = torch.tensor([[[0.3, 0.2, 0.9, 1.0]]])  # centre (0.6, 0.6), size (0.6, 0.8)
    got = SSDCoder().encode(box, anchors)
    want = torch.tensor([[[0.1 / 0.5 / 0.1, 0.1 / 0.5 / 0.1, math.log(0.6 / 0.5) / 0.2, math.log(0.8 / 0.5) / 0.2]]])
    torch.testing.assert_close(got, want)


def test_ssd_round_trips(anchors):
    coder = SSDCoder()
    boxes = xyxy_to_cxcywh(anchors.xyxy).expand(3, -1, -1).clone()
    boxes[..., :2] += 0.05 * torch.randn(3, len(anchors), 2)
    boxes[..., 2:] *= torch.empty(3, len(anchors), 2).uniform_(0.3, 3.0)
    boxes = torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], dim=-1)
    torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes)
    deltas = torch.randn(3, len(anchors), 4)
    torch.testing.assert_close(coder.encode(coder.decode(deltas, anchors), anchors), deltas, rtol=1e-4, atol=1e-4)


def test_ssd_decode_clamps_the_log_size(anchors):
    coder = SSDCoder()
    boxes = coder.decode(torch.full((1, len(anchors), 4), 1e4), anchors)
    assert torch.isfinite(boxes).all()
    width = boxes[..., 2] - boxes[..., 0]
    torch.testing.assert_close(width / anchors.cxcywh[:, 2], torch.full_like(width, 1000 / 16))


def test_ssd_loc_loss_is_smooth_l1_on_encoded_deltas(anchors):
    coder = SSDCoder()
    target = anchors.xyxy.expand(2, -1, -1) * 0.9 + 0.05
    encoded = coder.encode(target, anchors)
    assert coder.loc_loss(encoded, target, anchors).abs().max() < 1e-6
    deltas = torch.randn(2, len(anchors), 4)
    want = F.smooth_l1_loss(deltas, encoded, reduction="none")
    torch.testing.assert_close(coder.loc_loss(deltas, target, anchors), want)
    # Hand-computed: a delta 0.5 off is quadratic (0.5 * 0.5**2 = 0.125), 3 off is linear (3 - 0.5 = 2.5).
    off = encoded + torch.tensor([0.5, -3.0, 0.0, 0.0])
    torch.testing.assert_close(coder.loc_loss(off, target, anchors)[0, 0], torch.tensor([0.125, 2.5, 0.0, 0.0]))


def test_wrong_shape_fails_loudly(anchors):
    with pytest.raises(ValueError, match="A=189"):
        TanhCoder().decode(torch.zeros(2, 16, 4), anchors)


def test_clip_boxes_clamps_into_the_image_and_keeps_the_boxes_dtype():
    boxes = torch.tensor([[-0.5, -2.0, 1.5, 0.5], [0.2, 0.3, 0.4, 9.0]])
    torch.testing.assert_close(clip_boxes(boxes), torch.tensor([[0.0, 0.0, 1.0, 0.5], [0.2, 0.3, 0.4, 1.0]]))
    # per-box sizes as a float64 (N, 1) tensor: the result is still the boxes' float32
    sizes = torch.tensor([[0.3], [2.0]], dtype=torch.float64)
    got = clip_boxes(boxes, width=sizes, height=sizes.flip(0))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor([[0.0, 0.0, 0.3, 0.5], [0.2, 0.3, 0.4, 0.3]]))


def test_clip_boxes_moves_per_box_sizes_to_the_boxes_device():
    # boxes on an accelerator (the meta device stands in), per-box sizes still on the CPU
    boxes = torch.zeros(2, 4, device="meta")
    sizes = torch.tensor([[0.3], [2.0]])
    got = clip_boxes(boxes, width=sizes, height=sizes)
    assert got.device.type == "meta" and got.shape == (2, 4)


def test_coco_xywh_conversions_by_hand():
    xyxy = torch.tensor([[10.0, 20.0, 40.0, 25.0]])
    xywh = torch.tensor([[10.0, 20.0, 30.0, 5.0]])
    torch.testing.assert_close(xyxy_to_xywh(xyxy), xywh)
    torch.testing.assert_close(xywh_to_xyxy(xywh), xyxy)


def test_anchors_select_keeps_the_full_sets_grids_and_k(anchors):
    some = anchors.select(torch.tensor([0, 5, 188]))
    torch.testing.assert_close(some.cxcywh, anchors.cxcywh[[0, 5, 188]])
    torch.testing.assert_close(some.cell_size, anchors.cell_size[[0, 5, 188]])
    assert (some.grids, some.k) == (anchors.grids, anchors.k) == ((4, 2, 1), 9)


def test_anchors_to_a_device_keeps_everything(anchors):
    moved = anchors.to("cpu")
    assert torch.equal(moved.cxcywh, anchors.cxcywh) and torch.equal(moved.cell_size, anchors.cell_size)
    assert (moved.grids, moved.k) == (anchors.grids, anchors.k)
    assert moved.cxcywh.device.type == moved.cell_size.device.type == "cpu"


def test_make_anchors_refuses_an_empty_set_a_bad_ratio_or_grid():
    for grids, zooms, ratios in (((), (1.0,), ((1, 1),)), ((4,), (), ((1, 1),)), ((4,), (1.0,), ())):
        with pytest.raises(ValueError, match="anchors need at least one grid, zoom and ratio"):
            make_anchors(grids, zooms, ratios)
    with pytest.raises(ValueError, match=r"each ratio must be an \(rh, rw\) pair"):
        make_anchors((4,), (1.0,), ((1.0, 1.0), (2.0,)))
    with pytest.raises(ValueError, match="grid sides must be >= 1"):
        make_anchors((4, 0), (1.0,), ((1.0, 1.0),))


def test_make_anchors_shapes_and_cell_sizes(anchors):
    assert anchors.cxcywh.shape == (189, 4) and anchors.cell_size.shape == (189, 1)
    assert anchors.cell_size[:, 0].unique().tolist() == pytest.approx([0.25, 0.5, 1.0])  # grids 4, 2, 1


def test_anchors_move_to_the_device_asked_for(anchors):
    moved = anchors.to("meta")  # the meta device stands in for an accelerator: shapes, no data
    assert moved.cxcywh.device.type == moved.cell_size.device.type == "meta"
    assert moved.cxcywh.shape == (189, 4) and moved.cell_size.shape == (189, 1) and (moved.grids, moved.k) == ((4, 2, 1), 9)


def test_make_anchors_are_float32_whatever_the_default_dtype():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        anchors = make_anchors()
    finally:
        torch.set_default_dtype(previous)
    assert anchors.cxcywh.dtype == anchors.cell_size.dtype == torch.float32
    torch.testing.assert_close(anchors.cxcywh, make_anchors().cxcywh)


def test_make_anchors_names_every_grid_row_major_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when meshgrid's indexing is left to its default
        anchors = make_anchors((2,), (1.0,), ((1.0, 1.0),))
    torch.testing.assert_close(anchors.cxcywh[:, :2], torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]))
