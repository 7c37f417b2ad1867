from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from detector.core.anchors import make_anchors
from detector.core.loss import FocalBCESum, SSDLoss
from reference import get_y, match_one, random_targets, ssd_loss

C = 20


def _batch(seed: int, counts: list[int] | None = None, anchors=None, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    anchors = anchors or make_anchors()
    if counts is None:
        counts = torch.randint(0, 21, (6,), generator=gen).tolist()
        counts[1] = 0  # always one image without objects
    boxes, labels = random_targets(counts, C, gen, dtype)
    B, A = len(counts), len(anchors)
    cls_logits = (2 * torch.randn(B, A, C, generator=gen, dtype=dtype) - 2).requires_grad_()
    box_deltas = torch.randn(B, A, 4, generator=gen, dtype=dtype).requires_grad_()
    return cls_logits, box_deltas, anchors, boxes, labels


def _grads(terms: dict, cls_logits, box_deltas):
    return torch.autograd.grad(terms["loss"], (cls_logits, box_deltas))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("reduction", ["mean", "lesson_sum"])
@pytest.mark.parametrize("focal,gamma", [(True, 2.0), (True, 1.0), (False, 2.0)])
def test_batched_loss_and_gradients_equal_the_lesson_loop(seed, reduction, focal, gamma):
    cls_logits, box_deltas, anchors, boxes, labels = _batch(seed)
    got = SSDLoss(focal=focal, gamma=gamma, reduction=reduction)(cls_logits, box_deltas, anchors, boxes, labels)
    want = ssd_loss(cls_logits, box_deltas, boxes, labels, anchors, reduction=reduction, focal=focal, gamma=gamma)
    # float64 on both sides: they agree to rounding (about 1e-17 on gradients whose median is 3e-5).
    for name in ("loc", "cls", "loss"):
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12)
    for g, w in zip(_grads(got, cls_logits, box_deltas), _grads(want, cls_logits, box_deltas)):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)
        assert g.abs().sum() > 0


def test_dense_anchors_and_float32_equal_the_lesson_loop():
    anchors = make_anchors(grids=(8, 4, 2, 1))
    cls_logits, box_deltas, _, boxes, labels = _batch(5, anchors=anchors, dtype=torch.float32)
    got = SSDLoss()(cls_logits, box_deltas, anchors, boxes, labels)
    want = ssd_loss(cls_logits, box_deltas, boxes, labels, anchors, reduction="mean")
    torch.testing.assert_close(got["loss"], want["loss"], rtol=1e-5, atol=1e-5)
    for g, w in zip(_grads(got, cls_logits, box_deltas), _grads(want, cls_logits, box_deltas)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_focal_terms_by_hand():
    # p = sigmoid(x); pt = p if t else 1 - p; term = (a t + (1 - a)(1 - t)) (1 - pt)^2 * -log(pt), a = 0.25.
    x = torch.tensor([0.0, 1.0986123, -1.0986123, 0.0], requires_grad=True)  # p = 0.5, 0.75, 0.25, 0.5
    t = torch.tensor([1.0, 0.0, 1.0, 0.0])
    got = sigmoid_focal_loss(x, t, alpha=0.25, gamma=2, reduction="none")
    want = torch.tensor([
        0.25 * 0.25 * 0.6931472,  # t=1, pt=.5:  0.0433217
        0.75 * 0.5625 * 1.3862944,  # t=0, pt=.25: 0.5848430
        0.25 * 0.5625 * 1.3862944,  # t=1, pt=.25: 0.1949477
        0.75 * 0.25 * 0.6931472,  # t=0, pt=.5:  0.1299651
    ])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # The weight is in the graph, as in the lesson: at x = 0, t = 1,
    # d/dx [a (1-p)^2 (-log p)] = a (1-p)^2 (2 p log p - (1 - p)) = 0.0625 * (-0.6931472 - 0.5) = -0.0745717;
    # a detached weight would give a (1-p)^2 * (p - 1) = -0.03125.
    (grad,) = torch.autograd.grad(got[0], x)
    torch.testing.assert_close(grad[0], torch.tensor(-0.0745717), rtol=1e-5, atol=1e-6)


def test_focal_cls_term_of_one_anchor_by_hand():
    anchors = make_anchors(grids=(1,), zooms=(1.0,), ratios=((1.0, 1.0),))  # one anchor, the whole image
    boxes, labels = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]), torch.tensor([[1]])
    cls_logits = torch.tensor([[[1.0986123, 0.0]]])  # C = 2: p = 0.75 on class 0 (t=0), 0.5 on class 1 (t=1)
    terms = SSDLoss()(cls_logits, torch.zeros(1, 1, 4), anchors, boxes, labels)
    torch.testing.assert_close(terms["cls"], torch.tensor((0.5848430 + 0.0433217) / 2), rtol=1e-5, atol=1e-6)
    assert terms["loc"] == 0  # zero activations decode to the anchor, which is the ground truth
    plain = SSDLoss(focal=False)(cls_logits, torch.zeros(1, 1, 4), anchors, boxes, labels)
    torch.testing.assert_close(plain["cls"], torch.tensor((1.3862944 + 0.6931472) / 2), rtol=1e-5, atol=1e-6)


def test_mean_does_not_change_with_batch_size_lesson_sum_does():
    cls_logits, box_deltas, anchors, boxes, labels = _batch(3)
    twice = [torch.cat([x, x]) for x in (cls_logits, box_deltas, boxes, labels)]
    for reduction, factor in (("mean", 1.0), ("lesson_sum", 2.0)):
        loss = SSDLoss(reduction=reduction)
        once = loss(cls_logits, box_deltas, anchors, boxes, labels)
        double = loss(twice[0], twice[1], anchors, twice[2], twice[3])
        for name in ("loc", "cls"):
            torch.testing.assert_close(double[name], factor * once[name])


def test_images_without_objects_give_zero_loc_and_finite_gradients():
    cls_logits, box_deltas, anchors, boxes, labels = _batch(4, counts=[0, 0, 0])
    terms = SSDLoss()(cls_logits, box_deltas, anchors, boxes, labels)
    assert terms["loc"] == 0
    want_cls = F.binary_cross_entropy_with_logits(cls_logits, torch.zeros_like(cls_logits), reduction="none")
    want_cls = (want_cls * (0.75 * torch.sigmoid(cls_logits) ** 2)).sum() / C / 3  # all t = 0: pt = 1 - p
    torch.testing.assert_close(terms["cls"], want_cls)
    cls_grad, box_grad = _grads(terms, cls_logits, box_deltas)
    assert torch.isfinite(cls_grad).all() and (box_grad == 0).all()
    # M = 0: no padding column at all.
    no_boxes, no_labels = torch.zeros(3, 0, 4, dtype=torch.float64), torch.zeros(3, 0, dtype=torch.long)
    empty = SSDLoss()(cls_logits, box_deltas, anchors, no_boxes, no_labels)
    torch.testing.assert_close(empty["loss"], terms["loss"])


@pytest.mark.parametrize("iou_threshold", [0.2, 0.5])
def test_iou_threshold_reaches_the_matching(iou_threshold):
    cls_logits, box_deltas, anchors, boxes, labels = _batch(7)
    got = SSDLoss(iou_threshold=iou_threshold)(cls_logits, box_deltas, anchors, boxes, labels)
    want = ssd_loss(cls_logits, box_deltas, boxes, labels, anchors, reduction="mean", threshold=iou_threshold)
    default = SSDLoss()(cls_logits, box_deltas, anchors, boxes, labels)
    for name in ("loc", "cls"):
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12)
        assert not torch.isclose(got[name], default[name])  # other anchors are positive than at 0.4


def test_mean_loc_of_a_batch_with_one_image_with_objects_is_that_images():
    cls_logits, box_deltas, anchors, boxes, labels = _batch(9, counts=[0, 3, 0])
    got = SSDLoss()(cls_logits, box_deltas, anchors, boxes, labels)
    summed = SSDLoss(reduction="lesson_sum")(cls_logits, box_deltas, anchors, boxes, labels)  # image 1's alone
    torch.testing.assert_close(got["loc"], summed["loc"], rtol=1e-12, atol=0)
    assert got["loc"] > 0


def test_weights_combine_in_one_place():
    """The weights touch ``loss`` only: ``loc`` and ``cls`` are the unweighted loss's, each weighted once."""
    cls_logits, box_deltas, anchors, boxes, labels = _batch(6)
    plain = SSDLoss()(cls_logits, box_deltas, anchors, boxes, labels)
    terms = SSDLoss(loc_weight=3.0, cls_weight=0.5)(cls_logits, box_deltas, anchors, boxes, labels)
    for name in ("loc", "cls"):
        torch.testing.assert_close(terms[name], plain[name], rtol=1e-12, atol=0)
    torch.testing.assert_close(terms["loss"], 3.0 * plain["loc"] + 0.5 * plain["cls"], rtol=1e-12, atol=0)
    torch.testing.assert_close(plain["loss"], plain["loc"] + plain["cls"], rtol=1e-12, atol=0)


def _oracle_positives(anchors, boxes: torch.Tensor, labels: torch.Tensor):
    """Image by image, the oracle's matching: ``(positive (A,), target boxes (A, 4))`` of each image
    that has positive anchors."""
    out = []
    for b in range(len(boxes)):
        real_boxes, real_labels = get_y(boxes[b], labels[b])
        pos, gt_idx, _ = match_one(anchors, real_boxes, real_labels)
        if pos.any():
            out.append((b, pos, real_boxes[gt_idx]))
    return out


def _ssd_encode(boxes: torch.Tensor, anchors) -> torch.Tensor:
    """SSD eq. 2 written out, variances 0.1 and 0.2: ``(n, 4)`` xyxy boxes of ``(n,)`` anchors' ``(n, 4)``
    cxcywh -> ``(n, 4)`` deltas."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    acx, acy, aw, ah = anchors.unbind(1)
    return torch.stack([(cx - acx) / aw / 0.1, (cy - acy) / ah / 0.1, torch.log(w / aw) / 0.2, torch.log(h / ah) / 0.2], 1)


def test_ssd_coder_loc_is_smooth_l1_on_encoded_deltas_of_positives():
    cls_logits, box_deltas, anchors, boxes, labels = _batch(7)
    terms = SSDLoss(coder="ssd")(cls_logits, box_deltas, anchors, boxes, labels)
    per_image = []
    for b, pos, target_boxes in _oracle_positives(anchors, boxes, labels):
        encoded = _ssd_encode(target_boxes[pos], anchors.cxcywh[pos].to(boxes))  # (P, 4)
        per_image.append(F.smooth_l1_loss(box_deltas[b][pos], encoded))
    assert len(per_image) > 1
    torch.testing.assert_close(terms["loc"], sum(per_image) / len(per_image))
    assert all(torch.isfinite(g).all() for g in _grads(terms, cls_logits, box_deltas))


@pytest.mark.parametrize("beta", [0.0, 0.11])
def test_smooth_l1_beta_sets_the_ssd_coders_loss(beta):
    """smooth_l1_beta = 0 is plain L1 on the encoded deltas (mmdetection's RetinaNet), 0.11 Detectron's."""
    cls_logits, box_deltas, anchors, boxes, labels = _batch(7)
    terms = SSDLoss(coder="ssd", smooth_l1_beta=beta)(cls_logits, box_deltas, anchors, boxes, labels)
    per_image = []
    for b, pos, target_boxes in _oracle_positives(anchors, boxes, labels):
        encoded = _ssd_encode(target_boxes[pos], anchors.cxcywh[pos].to(boxes))  # (P, 4)
        diff = (box_deltas[b][pos] - encoded).abs()
        per_image.append(diff.mean() if beta == 0 else F.smooth_l1_loss(box_deltas[b][pos], encoded, beta=beta))
    torch.testing.assert_close(terms["loc"], sum(per_image) / len(per_image))
    assert terms["loc"] != SSDLoss(coder="ssd")(cls_logits, box_deltas, anchors, boxes, labels)["loc"]


def test_smooth_l1_beta_belongs_to_the_ssd_coder():
    with pytest.raises(ValueError, match="'tanh' coder"):
        SSDLoss(coder="tanh", smooth_l1_beta=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        SSDLoss(coder="ssd", smooth_l1_beta=-1.0)


def test_bad_inputs_fail_loudly():
    cls_logits, box_deltas, anchors, boxes, labels = _batch(8, counts=[2, 1])
    with pytest.raises(ValueError, match="A = 189"):
        SSDLoss()(cls_logits[:, :16], box_deltas[:, :16], anchors, boxes, labels)
    with pytest.raises(ValueError, match="labels must be < C"):
        SSDLoss()(cls_logits, box_deltas, anchors, boxes, labels.clamp(min=0) + C)
    with pytest.raises(ValueError, match="labels must be < C"):  # C itself is one too many
        SSDLoss()(cls_logits, box_deltas, anchors, boxes, labels.clamp(max=C - 1) + (labels == 0) * C)
    with pytest.raises(ValueError, match="reduction"):
        SSDLoss(reduction="sum")
    for alpha, gamma in ((0.0, 0.0), (1.0, 0.5)):  # the ends of the ranges are allowed
        SSDLoss(alpha=alpha, gamma=gamma)
    for alpha, gamma in ((1.5, 2.0), (-0.1, 2.0), (0.25, -1.0)):
        with pytest.raises(ValueError, match="focal loss needs 0 <= alpha <= 1 and gamma >= 0"):
            SSDLoss(alpha=alpha, gamma=gamma)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.25, 1.0), (0.4, 1.5), (None, 0.0)])
def test_closed_form_focal_sum_equals_torchvision_and_autograd(alpha, gamma):
    gen = torch.Generator().manual_seed(3)
    x = (3 * torch.randn(4, 30, 5, generator=gen, dtype=torch.float64)).requires_grad_()
    t = (torch.rand(4, 30, 5, generator=gen, dtype=torch.float64) < 0.1).to(torch.float64)
    ones = t.view(-1).nonzero().squeeze(1)
    got = FocalBCESum.apply(x, ones, alpha, gamma)
    if alpha is None:
        want = F.binary_cross_entropy_with_logits(x, t, reduction="sum")
    else:
        want = sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction="sum")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    (g,), (w,) = torch.autograd.grad(got, x), torch.autograd.grad(want, x)
    torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda v: FocalBCESum.apply(v, ones, alpha, gamma), (x,))


def test_closed_form_focal_sum_stays_finite_for_extreme_logits():
    x = torch.tensor([[-200.0, -30.0, 0.0, 30.0, 200.0]], requires_grad=True)
    ones = torch.tensor([1, 3])  # targets 0 1 0 1 0: the 200 logit is a confident false positive
    total = FocalBCESum.apply(x, ones, 0.25, 2.0)
    (grad,) = torch.autograd.grad(total, x)
    assert torch.isfinite(total) and torch.isfinite(grad).all()
    # 200 on a background class costs ~0.75 * 88 (log clamped at float32's tiny), gradient ~0.75
    assert 60 < total.item() < 80 and grad[0, 4].item() == pytest.approx(0.75, rel=1e-4)
    assert grad[0, 3].abs().item() < 1e-6 and grad[0, 0].abs().item() < 1e-6  # confident and right


@pytest.mark.slow
def test_torch_compile_gives_the_same_loss_and_gradients():
    # bench/loss.py --compile times this; compiling takes about a minute on a 2-core CPU.
    criterion, compiled = SSDLoss(), torch.compile(SSDLoss(), dynamic=True)
    for seed in (0, 1):  # a second batch, other object counts: no recompilation needed to stay right
        cls_logits, box_deltas, anchors, boxes, labels = _batch(seed, dtype=torch.float32)
        got, want = compiled(cls_logits, box_deltas, anchors, boxes, labels), criterion(cls_logits, box_deltas, anchors, boxes, labels)
        for name in ("loc", "cls", "loss"):
            torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
        for g, w in zip(_grads(got, cls_logits, box_deltas), _grads(want, cls_logits, box_deltas)):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_loss_of_low_precision_activations_is_computed_in_float32(dtype):
    """Under autocast the head gives bf16/fp16 logits and box deltas: the loss takes both as they
    come and computes in float32 (the same value as on their float32 copies), its gradients in their dtype."""
    cls_logits, box_deltas, anchors, boxes, labels = _batch(3, dtype=torch.float32)
    low = [t.detach().to(dtype).requires_grad_() for t in (cls_logits, box_deltas)]
    got = SSDLoss()(*low, anchors, boxes, labels)
    want = SSDLoss()(*(t.detach().float() for t in low), anchors, boxes, labels)
    assert got["loss"].dtype == torch.float32
    torch.testing.assert_close(got["loss"], want["loss"], rtol=1e-6, atol=0)
    assert [g.dtype for g in _grads(got, *low)] == [dtype, dtype]
