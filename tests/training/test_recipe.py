"""The recipe: fastai 0.7's CircularLR (use_clr) per stage, and which stage an epoch is in."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from torch import nn

from detector.errors import ConfigError
from detector.training.recipe import (
    FREEZE,
    OneCycle,
    Recipe,
    Stage,
    apply_freeze,
    freeze_for_epoch,
    lesson_stages,
    scale_stages,
    stage_at_epoch,
    total_epochs,
)

LESSON = (Stage(10, "body", 1.0), Stage(10, "groups_0", 0.25))


def test_lesson_stages_are_the_lessons_recipe():
    assert lesson_stages() == list(LESSON)


def test_stage_boundaries():
    assert total_epochs(LESSON) == 20
    assert [stage_at_epoch(LESSON, e) for e in (0, 9, 10, 19, 25)] == [0, 0, 1, 1, 1]
    three = (Stage(2), Stage(2), Stage(2))
    assert [stage_at_epoch(three, e) for e in range(7)] == [0, 0, 1, 1, 2, 2, 2]
    assert FREEZE == {"body": (0, 1), "groups_0": (0,), "none": ()}  # layer groups: body 0, body 1 (the head: 2)


def test_use_clr_20_10_shape():
    """use_clr=(20, 10) over a 100-step cycle: lr/20 at step 0, lr at step 10, back to lr/20 at 100."""
    f = OneCycle((Stage(1, "none", 1.0),), steps_per_epoch=100, div=20, cut_div=10)
    assert f(0) == pytest.approx(1 / 20)
    assert f(5) == pytest.approx((1 + 0.5 * 19) / 20)  # halfway up the linear climb
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx((1 + 0.5 * 19) / 20)  # halfway down: 1 - 45/90 = 0.5
    assert f(100) == pytest.approx(1 / 20)
    ups = [f(i) for i in range(11)]
    downs = [f(i) for i in range(10, 101)]
    assert ups == sorted(ups) and downs == sorted(downs, reverse=True)


def test_end_div_moves_only_the_end_of_the_fall():
    f = OneCycle((Stage(1, "none", 1.0),), steps_per_epoch=100, div=20, cut_div=10, end_div=2.5)
    assert f(0) == pytest.approx(1 / 20) and f(5) == pytest.approx((1 + 0.5 * 19) / 20)  # the climb as before
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx((1 + 1 / 2.5) / 2)  # halfway down between lr and lr / 2.5
    assert f(100) == pytest.approx(1 / 2.5)
    downs = [f(i) for i in range(10, 101)]
    assert downs == sorted(downs, reverse=True)


def test_each_stage_is_its_own_cycle_with_its_multiplier():
    f = OneCycle(LESSON, steps_per_epoch=10)  # 100 steps per stage
    assert f(10) == pytest.approx(1.0)  # stage 0 peak
    assert f(100) == pytest.approx(0.25 / 20)  # stage 1 restarts at (lr / 4) / 20
    assert f(110) == pytest.approx(0.25)  # stage 1 peak: the lesson's lrs / 4
    assert f(500) == pytest.approx(0.25 / 20)  # past the end: the last value holds
    g = OneCycle(LESSON + (Stage(10, "none", 0.5),), steps_per_epoch=10)
    assert g(210) == pytest.approx(0.5) and g(299) < g(210)  # stage 2 starts at step 200: its peak at 210


def test_scale_stages_keeps_shares_by_largest_remainder_and_one_epoch_each():
    assert scale_stages(LESSON, 20) == list(LESSON)
    assert scale_stages(LESSON, 7) == [Stage(4, "body", 1.0), Stage(3, "groups_0", 0.25)]  # a tie: the first
    three = (Stage(2, "body"), Stage(3, "groups_0"), Stage(5, "none", 0.5))
    assert [s.epochs for s in scale_stages(three, 4)] == [1, 1, 2]  # exact 0.8, 1.2, 2.0
    assert [s.epochs for s in scale_stages(three, 7)] == [1, 2, 4]  # exact 1.4, 2.1, 3.5: the 3.5 rounds up
    assert [s.epochs for s in scale_stages(three, 3)] == [1, 1, 1]
    lopsided = (Stage(1, "body"), Stage(1, "groups_0"), Stage(18, "none"))
    assert [s.epochs for s in scale_stages(lopsided, 4)] == [1, 1, 2]  # minimums overshoot: the longest gives
    assert [(s.freeze, s.lr_mult) for s in scale_stages(three, 30)] == [(s.freeze, s.lr_mult) for s in three]
    assert [s.epochs for s in scale_stages((Stage(3), Stage(5)), 5)] == [2, 3]  # 1.875, 3.125: remainder, not size
    assert [s.epochs for s in scale_stages((Stage(1), Stage(1), Stage(1)), 5)] == [2, 2, 1]  # one each, in order
    assert [s.epochs for s in scale_stages((Stage(18), Stage(1), Stage(1)), 4)] == [2, 1, 1]  # the longest gives
    five = (Stage(10), Stage(10), Stage(1), Stage(1), Stage(1))  # 3, 3, 1, 1, 1: three too many
    assert [s.epochs for s in scale_stages(five, 6)] == [1, 2, 1, 1, 1]  # equally long: the first gives first
    with pytest.raises(ConfigError, match="trainer.max_epochs 2: the recipe has 3 stages"):
        scale_stages(three, 2)


def test_recipe_refuses_no_stages_an_unknown_freeze_and_empty_stages():
    Recipe(stages=(Stage(1, "none"),))  # one epoch is enough
    with pytest.raises(ConfigError, match="at least one stage"):
        Recipe(stages=())
    with pytest.raises(ConfigError, match=r"stages\[1\].freeze = 'head' names no frozen layer groups"):
        Recipe(stages=(Stage(1, "body"), Stage(1, "head")))
    with pytest.raises(ConfigError, match=r"stages\[1\].epochs = 0: a stage lasts at least one epoch"):
        Recipe(stages=(Stage(1, "body"), Stage(0, "none")))


def test_one_cycle_shorter_than_cut_div_steps_still_climbs_one_step():
    f = OneCycle((Stage(1, "none", 1.0),), steps_per_epoch=5, div=20, cut_div=10)  # 5 // 10 = 0 -> a 1-step climb
    assert [f(i) for i in range(6)] == pytest.approx([1 / 20, 1.0, (1 + 0.75 * 19) / 20, (1 + 0.5 * 19) / 20,
                                                      (1 + 0.25 * 19) / 20, 1 / 20])
    two = OneCycle((Stage(1, "none", 1.0),), steps_per_epoch=2)  # up in one step, down in one
    assert [two(i) for i in range(3)] == pytest.approx([1 / 20, 1.0, 1 / 20])
    one = OneCycle((Stage(1, "none", 1.0),), steps_per_epoch=1)  # the fall has no steps: no division by zero
    assert one(0) == pytest.approx(1 / 20) and one(1) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one stage"):
        OneCycle((), steps_per_epoch=10)(0)


def _groups():
    """Three layer groups, each a conv and a BatchNorm, like the body's two groups and the head."""
    return [nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)).train() for _ in range(3)]


def _trainable(groups):
    return [[p.requires_grad for p in g.parameters()] for g in groups]  # conv w, b, bn w, b


def test_apply_freeze_keeps_batchnorm_training_by_default():
    groups = _groups()
    apply_freeze(groups, (0, 1))
    assert _trainable(groups) == [[False, False, True, True]] * 2 + [[True] * 4]
    assert all(g[1].training for g in groups)


def test_freeze_for_epoch_follows_the_recipes_stages():
    recipe = Recipe(stages=(Stage(1, "body"), Stage(1, "groups_0"), Stage(1, "none")), train_bn=False)
    groups = _groups()
    module = SimpleNamespace(recipe=recipe, model=SimpleNamespace(layer_groups=groups))
    frozen, trains = [False] * 4, [True] * 4
    for epoch, want in enumerate(([frozen, frozen, trains], [frozen, trains, trains], [trains, trains, trains])):
        for g in groups:
            g.train()  # as Lightning does before every training epoch
        freeze_for_epoch(module, epoch)
        assert _trainable(groups) == want, epoch
        assert [g[1].training for g in groups] == [w[2] for w in want], epoch  # frozen BatchNorm: eval


def test_freeze_for_epoch_norm_eval_and_fixed_depthwise_reach_both_body_groups():
    def depthwise_groups():
        return [nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.BatchNorm2d(2)).train() for _ in range(3)]

    for norm_eval, train_depthwise in ((False, True), (True, False)):
        recipe = Recipe(stages=(Stage(1, "none"),), norm_eval=norm_eval, train_depthwise=train_depthwise)
        groups = depthwise_groups()
        freeze_for_epoch(SimpleNamespace(recipe=recipe, model=SimpleNamespace(layer_groups=groups)), 0)
        assert [g[1].training for g in groups] == [not norm_eval] * 2 + [True]
        assert [g[0].weight.requires_grad for g in groups] == [train_depthwise] * 2 + [True]
