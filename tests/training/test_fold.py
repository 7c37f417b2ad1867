"""BatchNorm folding (``detector.training.fold``): a fixed stage, or a training one under
``norm_eval``, runs as convolutions with the BatchNorm folded in, with the same outputs and
gradients as the stage itself, and follows its weights. Moved from test_model.py: the fold is
training's, not the network's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detector.model import build_backbone
from detector.training.fold import FoldedConv, FoldedStages, fold_batchnorm, norms_fixed
from detector.training.recipe import apply_freeze


def _random_statistics(model: nn.Module) -> None:
    """BatchNorm statistics and affine maps far from identity, so that a wrong fold shows."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t, (lo, hi) in ((m.running_mean, (-1, 1)), (m.running_var, (0.5, 2)), (m.weight, (0.5, 1.5)), (m.bias, (-1, 1))):
                    t.copy_(torch.empty(t.shape).uniform_(lo, hi, generator=gen))


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_fold_batchnorm_folds_every_pair_and_keeps_the_function(name):
    stage = build_backbone(name, "none").body[0].to(memory_format=torch.channels_last)
    _random_statistics(stage)
    stage.eval().requires_grad_(False)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    folded, count = fold_batchnorm(stage, x[:1])
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in stage.modules())
    assert count == norms == sum(isinstance(m, FoldedConv) for m in folded.modules())
    assert [id(t) for t in folded.parameters()] == [id(t) for t in stage.parameters()]  # shared, not copied
    with torch.no_grad():
        torch.testing.assert_close(folded(x), stage(x), rtol=1e-4, atol=1e-4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in stage.modules())  # the stage itself is untouched


def test_backbone_folds_a_fixed_stage_in_training_and_follows_its_weights():
    """A frozen stage with eval-mode BatchNorm runs folded in training: the same outputs as unfolded,
    nothing new in state_dict, and a changed weight (a loaded checkpoint) reaches the fold."""
    body = build_backbone("resnet18", "none")
    _random_statistics(body)
    keys = set(body.state_dict())
    groups = [body.body[0], nn.ModuleList(body.body[1:])]
    x = torch.randn(2, 3, 64, 64)
    calls = []
    body.body[0].bn1.register_forward_hook(lambda *_: calls.append(1))  # the stem's BatchNorm ran
    runner = FoldedStages()

    def stride8(fold: bool) -> torch.Tensor:
        calls.clear()
        body.train()
        apply_freeze(groups, (0,), train_bn=False)  # after model.train(), as StagedFreezing does
        body.stage_runner = runner if fold else None
        return body(x)[0].detach()

    stride8(True)  # builds the fold (one probing forward of a view, hooks included)
    folded = stride8(True)
    assert not calls and norms_fixed(body.body[0]) and not norms_fixed(body.body[1])
    torch.testing.assert_close(folded, stride8(False), rtol=1e-4, atol=1e-4)
    assert calls and set(body.state_dict()) == keys
    with torch.no_grad():
        body.body[0].conv1.weight.mul_(-1)  # e.g. load_state_dict: the fold must not go stale
    torch.testing.assert_close(stride8(True), stride8(False), rtol=1e-4, atol=1e-4)
    body.train()
    body.body[0].requires_grad_(True)  # unfrozen, BatchNorm training again: the stage itself runs
    calls.clear()
    body(x)
    assert calls and not norms_fixed(body.body[0])


@pytest.mark.parametrize("name, fixed_depthwise", [("resnet18", ()), ("efficientnet_lite0", ()), ("efficientnet_lite0", (1,))])
def test_training_stage_with_norm_eval_runs_folded_with_the_same_gradients(name, fixed_depthwise):
    """``norm_eval``: a training stage with eval-mode BatchNorm runs folded; its outputs and the
    gradients of every parameter (conv weights, BatchNorm affine) match the unfolded stage's, an
    optimiser step reaches the fold, and the view owns no tensor of its own. A fixed depthwise
    kernel keeps its BatchNorm (folding it would ask for the kernel's gradient)."""
    body = build_backbone(name, "none")
    _random_statistics(body)
    x = torch.randn(2, 3, 64, 64)
    runner = FoldedStages()

    def run(fold: bool) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        body.train()
        apply_freeze(body.layer_groups, (0,), train_bn=False, norm_eval=(1,), fixed_depthwise=fixed_depthwise)
        body.stage_runner = runner if fold else None
        body.zero_grad(set_to_none=True)
        out = body(x)[2]
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        return out.detach(), [None if p.grad is None else p.grad.clone() for p in body.body[1:].parameters()]

    out, grads = run(True)
    assert norms_fixed(body.body[1]) and any(p.requires_grad for p in body.body[1].parameters())
    view = body.stage_runner._cache[1][1]
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in body.body[1].modules())
    fixed = sum(isinstance(m, nn.Conv2d) and not m.weight.requires_grad for m in body.body[1].modules())
    assert (fixed > 0) == bool(fixed_depthwise)
    assert sum(isinstance(m, FoldedConv) for m in view.modules()) == norms - fixed
    assert {id(t) for t in view.parameters()} <= {id(t) for t in body.body[1].parameters()}  # shared, not copied
    ref_out, ref_grads = run(False)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)
    for g, r in zip(grads, ref_grads):
        assert (g is None) == (r is None)
        if r is not None:
            torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-4 * r.abs().max().item())
    torch.optim.SGD(body.body[1:].parameters(), lr=0.1).step()  # in place, as training does
    torch.testing.assert_close(run(True)[0], run(False)[0], rtol=1e-4, atol=1e-4)

