"""Hard-example filters: which of an edge model's answers are too uncertain to keep.

A filter looks at the class probabilities the edge model gave each row and says which rows are *hard*:
those go to the big model in the centre (:mod:`roost.learn.joint`). Every filter here has the same
shape: it gives each row a score in [0, 1] (how sure the edge is) and calls the row hard when its score
is **below** the filter's threshold, so one threshold in [0, 1] moves every filter from "the edge
answers everything" (0) to "the centre answers (nearly) everything" (1).

=================  ===========================================================  =====================
Filter             score of a row                                               default threshold
=================  ===========================================================  =====================
``threshold``      the top class's probability                                  0.5 (Sedna ``Threshold``)
``cross-entropy``  ``1 - H(p) / log K``: 1 for a one-hot answer, 0 for uniform  0.5 (Sedna ``CrossEntropy``)
``margin``         top probability minus the second one                          0.5 (Roost's; Sedna has none)
``random``         a uniform draw (seeded): hard with probability ``ratio``     0.3 (Sedna ``Random``)
=================  ===========================================================  =====================

The defaults are KubeEdge Sedna's (``threshold=0.5``, ``threshold_cross_entropy=0.5``,
``random_ratio=0.3``). Sedna's ``IBT`` filter counts object-detection boxes below a score and has no
meaning for one class distribution per row, so it is refused by name with a pointer to the others.
As in Sedna, a row whose probabilities are not all within [0, 1] is not hard (the edge answers).
Names are matched without case, ``_`` or ``-``: Sedna's ``CrossEntropy`` is ``cross-entropy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from roost.learn.errors import FilterError

__all__ = ["DEFAULT_THRESHOLDS", "FILTERS", "HardExampleFilter", "make_filter", "scores"]

Probabilities = npt.NDArray[np.floating]
Mask = npt.NDArray[np.bool_]

#: The filters, by their canonical name.
FILTERS: Final = ("threshold", "cross-entropy", "margin", "random")
DEFAULT_THRESHOLDS: Final[dict[str, float]] = {"threshold": 0.5, "cross-entropy": 0.5, "margin": 0.5, "random": 0.3}
_ALIASES: Final[dict[str, str]] = {"threshold": "threshold", "confidence": "threshold", "crossentropy": "cross-entropy",
                                   "entropy": "cross-entropy", "margin": "margin", "random": "random"}


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key == "ibt":
        raise FilterError("the IBT filter (image box thresholds) counts object-detection boxes; a classifier's "
                          f"answer is one class distribution per row: use one of {', '.join(FILTERS)}")
    if key not in _ALIASES:
        raise FilterError(f"unknown hard-example filter {name!r}: choose one of {', '.join(FILTERS)}")
    return _ALIASES[key]


def _check_probabilities(probs: Probabilities) -> npt.NDArray[np.float64]:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise FilterError(f"a hard-example filter needs one row of at least 2 class probabilities per sample, "
                          f"got shape {p.shape}", code="FILTER_NEEDS_PROBABILITIES")
    return p


def scores(name: str, probs: Probabilities, *, rng: np.random.Generator | None = None) -> npt.NDArray[np.float64]:
    """Each row's score in [0, 1] under filter ``name`` (NaN for a row whose probabilities are invalid)."""
    kind = _canonical(name)
    p = _check_probabilities(probs)
    valid = ((p >= 0.0) & (p <= 1.0)).all(axis=1)
    if kind == "random":
        draw = (rng or np.random.default_rng()).random(len(p))
        return np.where(valid, draw, np.nan)
    if kind == "threshold":
        out = p.max(axis=1)
    elif kind == "margin":
        top2 = np.sort(p, axis=1)[:, -2:]
        out = top2[:, 1] - top2[:, 0]
    else:
        safe = np.where(p > 0.0, p, 1.0)  # 0 * log 0 is 0
        entropy = -(p * np.log(safe)).sum(axis=1)
        out = 1.0 - entropy / math.log(p.shape[1])
    return np.where(valid, np.clip(out, 0.0, 1.0), np.nan)


@dataclass(frozen=True)
class HardExampleFilter:
    """A filter and its threshold; :meth:`hard` says which rows go to the centre."""

    name: str
    threshold: float
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _canonical(self.name))
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or not 0.0 <= t <= 1.0:
            what = "random ratio" if self.name == "random" else "threshold"
            raise FilterError(f"the {self.name} filter's {what} {t!r} is not a number from 0 to 1",
                              code="FILTER_THRESHOLD_INVALID")
        object.__setattr__(self, "threshold", float(t))
        object.__setattr__(self, "_rng", np.random.default_rng(self.seed))

    def scores(self, probs: Probabilities) -> npt.NDArray[np.float64]:
        rng: np.random.Generator = self._rng  # type: ignore[attr-defined]
        return scores(self.name, probs, rng=rng)

    def hard(self, probs: Probabilities) -> Mask:
        """``True`` for each row the centre should answer (score below the threshold; invalid rows never)."""
        s = self.scores(probs)
        return np.asarray(np.nan_to_num(s, nan=np.inf) < self.threshold, dtype=np.bool_)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "threshold": self.threshold}


def make_filter(name: str = "threshold", threshold: float | None = None, *,
                seed: int | None = None) -> HardExampleFilter:
    """A filter by name (any case, Sedna's names too), with Sedna's default threshold when none is given."""
    kind = _canonical(name)
    return HardExampleFilter(kind, DEFAULT_THRESHOLDS[kind] if threshold is None else threshold, seed)
