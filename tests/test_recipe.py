"""The recipe: fastai 0.7's CircularLR (use_clr) per stage, and which stage an epoch is in."""

from __future__ import annotations

import pytest

from detector.recipe import FREEZE, OneCycle, Stage, stage_at_epoch, total_epochs

LESSON = (Stage(10, "body", 1.0), Stage(10, "groups_0", 0.25))


def test_stage_boundaries():
    assert total_epochs(LESSON) == 20
    assert [stage_at_epoch(LESSON, e) for e in (0, 9, 10, 19, 25)] == [0, 0, 1, 1, 1]
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
