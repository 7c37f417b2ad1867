"""detector.evaluation.coco_matches against pycocotools (every image once, and images copied), and
the paired bootstrap of detector.evaluation.bootstrap on synthetic runs with known answers."""

from __future__ import annotations

import pytest
import torch

from detector.evaluation.bootstrap import compare_runs, draw_counts, percentile_interval
from detector.evaluation.coco_matches import METRICS, match_images
from test_metrics import metrics_of, random_split

C = 4


def copies(items: list, counts: torch.Tensor) -> list:
    """``items[i]`` repeated ``counts[i]`` times, in order: the multiset a resample stands for."""
    return [item for item, n in zip(items, counts.long().tolist()) for _ in range(n)]


def shifted(preds: list[dict], by: float = 1000.0) -> list[dict]:
    """The same detections moved far off every object: no hit at any IoU threshold."""
    return [{**p, "boxes": p["boxes"] + by} for p in preds]


# --------------------------------------------------------------------- COCO AP of weighted images


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_image_once_gives_pycocotools_numbers(seed: int):
    preds, targets = random_split(seed, num_images=25, num_classes=C)
    expected = metrics_of(preds, targets, C)
    found = match_images(preds, targets, C).metrics()
    for key in METRICS:
        assert float(found[key][0]) == pytest.approx(float(expected[key]), abs=1e-6), key
    assert 0.05 < float(found["map"][0]) < 0.95  # a split where AP means something


@pytest.mark.parametrize("seed", [3, 4])
def test_integer_weights_give_pycocotools_numbers_on_the_copies(seed: int):
    """Each weighting (with zeros and repeats) against pycocotools on the split with each image
    written that many times."""
    preds, targets = random_split(seed, num_images=20, num_classes=C)
    matches = match_images(preds, targets, C)
    weights = draw_counts(len(targets), 4, torch.Generator().manual_seed(seed))
    assert (weights == 0).any() and (weights > 1).any()
    found = matches.metrics(weights)
    for r, w in enumerate(weights):
        expected = metrics_of(copies(preds, w), copies(targets, w), C)
        for key in METRICS:
            assert float(found[key][r]) == pytest.approx(float(expected[key]), abs=1e-6), (r, key)


def test_ap_per_class_leaves_out_classes_without_objects_in_the_drawn_images():
    preds, targets = random_split(5, num_images=10, num_classes=C)
    ap = match_images(preds, targets, C).average_precision()  # (1, T, K)
    assert ap.shape == (1, 10, C)
    assert ap[0, :, C - 1].isnan().all()  # random_split never gives the last class an object
    only = torch.zeros(1, len(targets), dtype=torch.float64)
    only[0, 4] = 1  # random_split's image 4 has no objects at all
    assert match_images(preds, targets, C).average_precision(only).isnan().all()


def test_no_hit_at_all_is_ap_zero_where_there_are_objects():
    preds, targets = random_split(6, num_images=8, num_classes=C)
    found = match_images(shifted(preds), targets, C).metrics()
    assert {k: float(v[0]) for k, v in found.items()} == {"map": 0.0, "map_50": 0.0, "map_75": 0.0}
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}] * len(targets)
    assert float(match_images(empty, targets, C).metrics()["map"][0]) == 0.0


# ------------------------------------------------------------------------------------- bootstrap


def test_draws_and_percentiles():
    counts = draw_counts(7, 50, torch.Generator().manual_seed(0))
    assert counts.shape == (50, 7) and (counts.sum(1) == 7).all()
    assert not torch.equal(counts[0], counts[1])
    low, high = percentile_interval(torch.arange(1001, dtype=torch.float64), level=0.9)
    assert (low, high) == pytest.approx((50.0, 950.0))
    assert percentile_interval(torch.tensor([float("nan"), 1.0, 1.0])) == (1.0, 1.0)


def test_identical_sides_differ_by_exactly_zero():
    runs = []
    for seed in (10, 11):
        preds, targets = random_split(seed, num_images=15, num_classes=C)
        runs.append(match_images(preds, targets, C))
    for resample_seeds in (True, False):
        comparisons = compare_runs([runs, list(runs)], resamples=200, seed=1, resample_seeds=resample_seeds)
        for c in comparisons:
            d = c.differences[0]
            assert d.difference == 0.0 and d.low == 0.0 and d.high == 0.0 and d.shown == 0
            assert d.verdict("B", "A").startswith("no difference shown between B and A (+0.000")
            assert c.means[0] == c.means[1] and c.sds[0] == c.sds[1]


def test_a_side_whose_detections_miss_is_shown_worse_and_the_other_way_better():
    preds, targets = random_split(20, num_images=15, num_classes=C)
    rescored = [{**p, "scores": p["scores"].flip(0)} for p in preds]  # a second seed: the same boxes ranked otherwise
    good = [match_images(preds, targets, C), match_images(rescored, targets, C)]
    bad = [match_images(shifted(preds), targets, C), match_images(shifted(rescored), targets, C)]
    worse = compare_runs([good, bad], resamples=300, seed=0)
    for c in worse:
        d = c.differences[0]
        assert d.high < 0 and d.shown == -1 and d.difference == pytest.approx(-c.means[0])
        assert d.verdict("B", "A").startswith(f"B worse than A ({d.difference:+.3f}, 95 % CI")
        assert d.low <= d.difference <= d.high
    better = compare_runs([bad, good], resamples=300, seed=0)
    assert all(c.differences[0].low > 0 and c.differences[0].verdict("B", "A").startswith("B better") for c in better)


def test_seed_resampling_holds_the_noise_between_seeds():
    """Side B is side A's two runs in the other order: on every image draw the seeds' means are the
    same (images only: exactly 0), but drawing seeds pairs A's first run with B's second, which differ."""
    one = match_images(*random_split(30, num_images=15, num_classes=C), C)
    preds, targets = random_split(30, num_images=15, num_classes=C)
    worse = [{**p, "scores": torch.rand(len(p["scores"]))} for p in preds]  # the same boxes, ranked at random
    two = match_images(worse, targets, C)
    (c, *_) = compare_runs([[one, two], [two, one]], resamples=400, seed=0, resample_seeds=True)
    d = c.differences[0]
    assert d.difference == pytest.approx(0.0, abs=1e-12)
    assert d.images_only == pytest.approx((0.0, 0.0), abs=1e-12)
    assert d.low < 0 < d.high and d.shown == 0


def test_the_same_seed_gives_the_same_interval_and_sides_must_match():
    runs = [match_images(*random_split(s, num_images=12, num_classes=C), C) for s in (40, 41)]
    preds, targets = random_split(40, num_images=12, num_classes=C)
    a = [match_images(preds, targets, C)] * 2
    b = [match_images(shifted(preds, 3.0), targets, C)] * 2
    first = compare_runs([a, b], resamples=100, seed=7)
    again = compare_runs([a, b], resamples=100, seed=7)
    assert [c.as_dict() for c in first] == [c.as_dict() for c in again]
    with pytest.raises(ValueError, match="same number of runs"):
        compare_runs([a, b[:1]])
    with pytest.raises(ValueError, match="same images"):
        compare_runs([a, [runs[0], match_images(*random_split(42, num_images=9, num_classes=C), C)]])
