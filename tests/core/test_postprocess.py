from __future__ import annotations

import pytest
import torch

from detector.core.anchors import Anchors, make_anchors, mirror_index
from detector.core.box_coder import SSDCoder
from detector.core.postprocess import _greedy_nms, flip_merge, postprocess, to_pixels
from detector.training.tasks.detection import AnchorConfig, DetectorModule, HeadConfig, LossConfig, PostprocessConfig
from reference import actn_to_bb
from reference import postprocess as reference_postprocess

C = 20


def _activations(seed: int, B: int = 4, anchors=None, mean: float = -6.0):
    """Logits ~ N(mean, 1.5): with mean -6, a few hundred (anchor, class) pairs per image pass 0.01."""
    gen = torch.Generator().manual_seed(seed)
    anchors = anchors or make_anchors()
    cls_logits = mean + 1.5 * torch.randn(B, len(anchors), C, generator=gen)
    box_deltas = torch.randn(B, len(anchors), 4, generator=gen)
    return cls_logits, box_deltas, anchors


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["labels"].dtype == torch.long and g["boxes"].shape == (len(g["scores"]), 4)
        torch.testing.assert_close(g["scores"], w["scores"], rtol=0, atol=0)
        assert torch.equal(g["labels"], w["labels"])
        torch.testing.assert_close(g["boxes"], w["boxes"], rtol=0, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "score_threshold,topk_per_class,max_per_image",
    [(0.01, 50, 100), (0.25, 50, 100), (0.01, 3, 100), (0.01, 50, 10)],
)
def test_batched_equals_the_lesson_loop(seed, score_threshold, topk_per_class, max_per_image):
    # ~650 candidates per image at 0.01 (batched_nms's per-class path, > 1,000 boxes in all);
    # ~100 per image at 0.25 (its single-call coordinate-offset path, < 1,000 boxes).
    cls_logits, box_deltas, anchors = _activations(seed, mean=-6.0 if score_threshold < 0.1 else -4.0)
    kwargs = dict(
        score_threshold=score_threshold, iou_threshold=0.4, topk_per_class=topk_per_class, max_per_image=max_per_image
    )
    got = postprocess(cls_logits, box_deltas, anchors, **kwargs)
    want = reference_postprocess(cls_logits, box_deltas, anchors, **kwargs)
    _assert_same(got, want)
    assert sum(len(d["scores"]) for d in got) > 4  # the comparison is not between empty lists


def test_many_candidates_equal_the_lesson_loop():
    # Dense anchors, ~10,000 candidates per image: top-k and the per-image cap both bite.
    cls_logits, box_deltas, anchors = _activations(3, B=8, anchors=make_anchors(grids=(8, 4, 2, 1)), mean=-4.0)
    got = postprocess(cls_logits, box_deltas, anchors, max_per_image=300)
    _assert_same(got, reference_postprocess(cls_logits, box_deltas, anchors, max_per_image=300))


def test_detections_are_sorted_clipped_and_capped():
    cls_logits, box_deltas, anchors = _activations(4, mean=-3.0)
    for det in postprocess(cls_logits, 3 * box_deltas, anchors, max_per_image=30):
        assert len(det["scores"]) == 30
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
        assert (det["boxes"] >= 0).all() and (det["boxes"] <= 1).all()
        assert ((det["labels"] >= 0) & (det["labels"] < C)).all()


def _three_boxes(topk_per_class: int):
    """Class 2 fires on anchors 3 (0.9), 0 (0.8) and 180 (0.7): 0 and 3 overlap (IoU 0.5625), 180 is apart."""
    anchors = make_anchors()
    cls_logits = torch.full((1, len(anchors), C), -20.0)
    for anchor, p in ((3, 0.9), (0, 0.8), (180, 0.7)):
        cls_logits[0, anchor, 2] = torch.logit(torch.tensor(p))
    return postprocess(cls_logits, torch.zeros(1, len(anchors), 4), anchors, topk_per_class=topk_per_class)[0], anchors


def test_nms_suppresses_and_top_k_is_taken_before_suppression():
    det, anchors = _three_boxes(topk_per_class=3)
    torch.testing.assert_close(det["scores"], torch.tensor([0.9, 0.7]))
    torch.testing.assert_close(det["boxes"], anchors.xyxy[[3, 180]].clamp(0, 1))
    assert det["labels"].tolist() == [2, 2]
    # Top 2 before NMS = anchors 3 and 0; NMS then removes 0, and anchor 180 never was a candidate.
    det, _ = _three_boxes(topk_per_class=2)
    torch.testing.assert_close(det["scores"], torch.tensor([0.9]))


def test_nms_is_per_class_and_per_image():
    anchors = make_anchors()
    cls_logits = torch.full((2, len(anchors), C), -20.0)
    cls_logits[:, 3, 2] = 2.0  # both images, class 2, anchor 3
    cls_logits[:, 0, 5] = 1.0  # overlaps anchor 3 but is class 5: kept
    dets = postprocess(cls_logits, torch.zeros(2, len(anchors), 4), anchors)
    for det in dets:
        assert det["labels"].tolist() == [2, 5]


def test_nms_decisions_near_the_threshold_are_exact_in_the_last_group():
    # Two boxes with IoU 0.39998 (both kept) in image 63, class 19: torchvision's coordinate offset for
    # that group is ~2,000, where float32 coordinates round by ~6e-5, enough to suppress one.
    anchors, coder = make_anchors(), SSDCoder()
    wanted = torch.tensor([[0.1, 0.1, 0.6, 0.6], [0.1, 0.1, 0.6, 0.29999]])  # inside: IoU = 0.19999 / 0.5
    box_deltas = torch.zeros(64, len(anchors), 4)
    box_deltas[63, :2] = coder.encode(torch.cat([wanted, anchors.xyxy[2:]])[None], anchors)[0, :2]
    cls_logits = torch.full((64, len(anchors), C), -20.0)
    cls_logits[63, :2, 19] = torch.tensor([2.0, 1.0])
    dets = postprocess(cls_logits, box_deltas, anchors, coder="ssd")
    assert [len(d["scores"]) for d in dets] == [0] * 63 + [2]
    torch.testing.assert_close(dets[63]["boxes"], wanted)


def test_nms_suppresses_only_above_the_threshold_not_at_it():
    # IoU exactly 0.5 (0.5 / (1 + 0.5 - 0.5), exact in float32): kept at 0.5, suppressed below it.
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.5]]])  # (1, 2, 4), ranked by score
    valid = torch.ones(1, 2, dtype=torch.bool)
    assert _greedy_nms(boxes, valid, 0.5).tolist() == [[True, True]]
    assert _greedy_nms(boxes, valid, 0.49).tolist() == [[True, False]]


def test_a_score_equal_to_the_threshold_is_not_above_it():
    cls_logits, box_deltas, anchors = _activations(12, B=2)
    at = postprocess(torch.zeros_like(cls_logits), box_deltas, anchors, score_threshold=0.5)  # sigmoid(0) = 0.5
    assert [len(d["scores"]) for d in at] == [0, 0]


def test_tied_scores_come_in_class_order():
    # 40 detections with the same score (20 classes at two far-apart anchors): a stable sort keeps
    # them by class; an unstable one (torch's CPU sort beyond ~16 values) would shuffle them.
    anchors = make_anchors()
    cls_logits = torch.full((1, len(anchors), C), -20.0)
    cls_logits[0, [0, 15]] = 0.0  # the top-left and bottom-right cells of the 4x4 grid
    (det,) = postprocess(cls_logits, torch.zeros(1, len(anchors), 4), anchors)
    assert len(det["scores"]) == 2 * C and (det["scores"] == 0.5).all()
    assert det["labels"].tolist() == sorted(det["labels"].tolist())


def test_nothing_above_the_threshold_gives_empty_detections():
    cls_logits, box_deltas, anchors = _activations(5, B=2, mean=-30.0)
    for det in postprocess(cls_logits, box_deltas, anchors):
        assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,) and det["labels"].dtype == torch.long


def test_ssd_coder_is_selectable():
    """One detection per image (anchor 40, 100, 170), non-zero offsets: its box is the chosen coder's
    decoding, written out here (the tanh one is the lesson port's ``actn_to_bb``)."""
    anchors = make_anchors()
    fired = [40, 100, 170]
    box_deltas = 0.5 * torch.randn(3, len(anchors), 4, generator=torch.Generator().manual_seed(6))
    cls_logits = torch.full((3, len(anchors), C), -20.0)
    cls_logits[[0, 1, 2], fired, 4] = 2.0
    ssd = postprocess(cls_logits, box_deltas, anchors, coder="ssd")
    tanh = postprocess(cls_logits, box_deltas, anchors, coder="tanh")
    for b, a in enumerate(fired):
        d, (cx, cy, w, h) = box_deltas[b, a], anchors.cxcywh[a]
        centre = torch.stack([cx + d[0] * 0.1 * w, cy + d[1] * 0.1 * h])  # SSD eq. 2 inverted, variances 0.1, 0.2
        size = torch.stack([w * torch.exp(d[2] * 0.2), h * torch.exp(d[3] * 0.2)])
        want_ssd = torch.cat([centre - size / 2, centre + size / 2]).clamp(0, 1)
        torch.testing.assert_close(ssd[b]["boxes"], want_ssd[None])
        torch.testing.assert_close(tanh[b]["boxes"], actn_to_bb(box_deltas[b], anchors)[a].clamp(0, 1)[None])
        assert (ssd[b]["boxes"] - tanh[b]["boxes"]).abs().max() > 0.01  # the coders disagree on these offsets


def test_to_pixels_by_hand():
    dets = [
        {"boxes": torch.tensor([[0.1, 0.2, 0.5, 1.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([3])},
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    out = to_pixels(dets, [(375, 500), (333, 500)])  # (height, width)
    torch.testing.assert_close(out[0]["boxes"], torch.tensor([[50.0, 75.0, 250.0, 375.0]]))
    assert out[0]["labels"].tolist() == [3] and out[1]["boxes"].shape == (0, 4)
    assert dets[0]["boxes"][0, 0] == 0.1  # the input is left alone
    with pytest.raises(ValueError, match="height, width"):
        to_pixels(dets, torch.tensor([[375, 500]]))


def test_bad_shapes_fail_loudly():
    cls_logits, box_deltas, anchors = _activations(7, B=2)
    with pytest.raises(ValueError, match="A = 189"):
        postprocess(cls_logits[:, :16], box_deltas[:, :16], anchors)
    for topk, cap in ((0, 100), (50, 0)):
        with pytest.raises(ValueError, match="topk_per_class and max_per_image must be >= 1"):
            postprocess(cls_logits, box_deltas, anchors, topk_per_class=topk, max_per_image=cap)
    one = postprocess(cls_logits, box_deltas, anchors, score_threshold=0.0, topk_per_class=1, max_per_image=1)
    assert [len(d["scores"]) for d in one] == [1, 1]


def test_mirror_index_reflects_every_anchor():
    anchors = make_anchors((4, 2, 1))
    mirror = mirror_index(anchors)
    assert torch.equal(mirror[mirror], torch.arange(len(anchors)))  # an involution
    cx, cy, w, h = anchors.cxcywh.unbind(1)
    torch.testing.assert_close(anchors.cxcywh[mirror], torch.stack([1 - cx, cy, w, h], dim=1))
    assert not torch.equal(mirror, torch.arange(len(anchors)))
    lopsided = Anchors(anchors.cxcywh[1:], anchors.cell_size[1:], anchors.grids, anchors.k)  # one corner anchor gone
    with pytest.raises(ValueError, match="not symmetric"):
        mirror_index(lopsided)


def test_flip_merge_of_outputs_and_their_exact_mirror_is_those_outputs():
    """flip_merge averages: when the flipped image's outputs are exactly the mirror of the image's
    (its anchors swapped by mirror_index, the x delta negated), the merge changes nothing."""
    cls_logits, box_deltas, anchors = _activations(11, B=2)
    mirror = mirror_index(anchors)
    flipped_box = box_deltas[:, mirror] * torch.tensor([-1.0, 1.0, 1.0, 1.0])
    merged_cls, merged_box = flip_merge(cls_logits, box_deltas, cls_logits[:, mirror], flipped_box, mirror)
    torch.testing.assert_close(merged_cls, cls_logits)
    torch.testing.assert_close(merged_box, box_deltas)


@pytest.mark.parametrize("coder", ["ssd", "tanh"])
def test_flip_tta_detections_of_a_mirrored_image_are_the_mirrored_detections(coder):
    """flip_tta averages an image's and its mirror image's predictions, so it is exactly symmetric:
    the flipped image gets the same scores and labels, with mirrored boxes."""
    torch.manual_seed(0)
    model = DetectorModule(
        num_classes=3, backbone="resnet18", weights="none", image_size=64,
        anchors=AnchorConfig(grids=[4, 2, 1]), head=HeadConfig(channels=16), loss=LossConfig(coder=coder),
        postprocess=PostprocessConfig(score_threshold=0.0, flip_tta=True),
    ).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        plain, mirrored = model.detect(images), model.detect(images.flip(-1))
        model.post_cfg.flip_tta = False
        single = model.detect(images.flip(-1))
    for p, m, u in zip(plain, mirrored, single):
        order_p, order_m = p["scores"].argsort(descending=True), m["scores"].argsort(descending=True)
        torch.testing.assert_close(m["scores"][order_m], p["scores"][order_p])
        assert torch.equal(m["labels"][order_m], p["labels"][order_p])
        x1, y1, x2, y2 = p["boxes"][order_p].unbind(1)
        torch.testing.assert_close(m["boxes"][order_m], torch.stack([1 - x2, y1, 1 - x1, y2], dim=1), atol=1e-5, rtol=0)
        assert not torch.allclose(u["scores"].sort().values[:5], m["scores"].sort().values[:5])  # TTA changed them


def test_greedy_nms_keeps_its_inputs_device():
    boxes = torch.zeros(2, 3, 5, 4, device="meta")  # the meta device stands in for an accelerator
    keep = _greedy_nms(boxes, torch.ones(2, 3, 5, dtype=torch.bool, device="meta"), 0.5)
    assert keep.device.type == "meta" and keep.shape == (2, 3, 5) and keep.dtype == torch.bool


def test_mirror_index_refusal_says_what_is_wrong():
    anchors = make_anchors((4,))
    lopsided = Anchors(anchors.cxcywh[1:], anchors.cell_size[1:], anchors.grids, anchors.k)
    with pytest.raises(ValueError) as error:
        mirror_index(lopsided)
    assert str(error.value) == "the anchor set is not symmetric under a left-right flip"
