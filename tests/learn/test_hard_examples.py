"""Hard-example filters: scores, Sedna's defaults, names, and bad filters or thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from roost.learn.errors import FilterError
from roost.learn.hard_examples import DEFAULT_THRESHOLDS, make_filter, scores

PROBS = np.array([
    [0.9, 0.05, 0.05],   # sure
    [0.4, 0.35, 0.25],   # unsure, close second
    [1.0, 0.0, 0.0],     # one-hot
    [1 / 3, 1 / 3, 1 / 3],  # uniform
])


def test_defaults_are_sednas() -> None:
    assert DEFAULT_THRESHOLDS == {"threshold": 0.5, "cross-entropy": 0.5, "margin": 0.5, "random": 0.3}
    assert make_filter().describe() == {"name": "threshold", "threshold": 0.5}
    assert make_filter("CrossEntropy").name == "cross-entropy"  # Sedna's alias
    assert make_filter("Random").threshold == 0.3


def test_threshold_is_the_top_probability() -> None:
    assert scores("threshold", PROBS).tolist() == pytest.approx([0.9, 0.4, 1.0, 1 / 3])
    assert make_filter("threshold", 0.5).hard(PROBS).tolist() == [False, True, False, True]


def test_cross_entropy_is_one_minus_normalised_entropy() -> None:
    s = scores("cross-entropy", PROBS)
    h = -(0.9 * math.log(0.9) + 2 * 0.05 * math.log(0.05)) / math.log(3)
    assert s[0] == pytest.approx(1 - h)
    assert s[2] == pytest.approx(1.0)  # 0 log 0 counts as 0
    assert s[3] == pytest.approx(0.0, abs=1e-12)
    assert make_filter("cross-entropy").hard(PROBS).tolist() == [False, True, False, True]


def test_margin_is_top_minus_second() -> None:
    assert scores("margin", PROBS).tolist() == pytest.approx([0.85, 0.05, 1.0, 0.0])
    assert make_filter("margin", 0.1).hard(PROBS).tolist() == [False, True, False, True]


def test_random_sends_about_its_ratio_and_is_seeded() -> None:
    probs = np.tile(PROBS[0], (10_000, 1))
    share = make_filter("random", seed=1).hard(probs).mean()
    assert 0.28 < share < 0.32
    assert (make_filter("random", 0.3, seed=7).hard(probs) == make_filter("random", 0.3, seed=7).hard(probs)).all()


def test_thresholds_at_the_ends_and_invalid_rows() -> None:
    assert not make_filter("threshold", 0.0).hard(PROBS).any()
    bad = np.array([[1.2, -0.2], [0.5, 0.5]])  # a row outside [0, 1] is not hard (Sedna: invalid input)
    assert make_filter("threshold", 1.0).hard(bad).tolist() == [False, True]


@pytest.mark.parametrize("name", ["nope", "IBT", ""])
def test_unknown_filter(name: str) -> None:
    with pytest.raises(FilterError) as info:
        make_filter(name)
    assert info.value.code == "FILTER_UNKNOWN"
    assert "threshold, cross-entropy, margin, random" in info.value.message


@pytest.mark.parametrize("threshold", [-0.1, 1.5, math.nan, math.inf, True])
def test_threshold_out_of_range(threshold: float) -> None:
    with pytest.raises(FilterError) as info:
        make_filter("margin", threshold)
    assert info.value.code == "FILTER_THRESHOLD_INVALID"


def test_probabilities_of_the_wrong_shape() -> None:
    with pytest.raises(FilterError) as info:
        make_filter().hard(np.array([0.2, 0.8]))
    assert info.value.code == "FILTER_NEEDS_PROBABILITIES"
