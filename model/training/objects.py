"""Object-level (triage) quality of a score map, as an analyst reads the ranked polygons.

The definitions are those of ``../shared/tools/objects.py``: flag the top ``fraction``
of valid (finite) pixels (the exact k-th highest score, ``k = ceil(fraction n_valid)``,
ties kept; 0.005 is the product's default threshold), group the flagged pixels
8-connected, rank the groups by their peak score and keep the first K, K = number of
target objects (8-connected components of the mask).

* ``rprec``: share of the kept groups that touch a target (the mask dilated by 1 px);
* ``recall``: share of target objects touched by a kept group (through the dilation too);
* ``hit1``: 1 if the top-ranked group touches a target.

Also: a percentile bootstrap of means over scenes, stratified by modality.
"""
from __future__ import annotations

import math
from dataclasses import astuple, dataclass

import numpy as np
from scipy import ndimage

DEFAULT_FRACTION = 0.005
EIGHT = np.ones((3, 3), dtype=bool)
METRICS = ("rprec", "recall", "hit1")
Interval = tuple[float, float]


@dataclass(frozen=True)
class ObjectScores:
    rprec: float
    recall: float
    hit1: int

    def as_tuple(self) -> tuple[float, float, int]:
        return astuple(self)


MISSED = ObjectScores(0.0, 0.0, 0)


def target_objects(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The target objects of a boolean mask, its 8-connected components:
    ``(labels (H, W), number of targets)``."""
    return ndimage.label(mask, structure=EIGHT)


def flagged_groups(score: np.ndarray, fraction: float = DEFAULT_FRACTION
                   ) -> tuple[np.ndarray, int]:
    """The 8-connected groups of the top ``fraction`` of valid (finite) pixels of ``score``
    (the exact k-th highest score, ``k = ceil(fraction n_valid)``, ties kept):
    ``(labels (H, W), number of groups)``."""
    valid = np.isfinite(score)
    flagged = max(1, math.ceil(fraction * valid.sum()))
    threshold = np.partition(score[valid], -flagged)[-flagged]
    return ndimage.label(valid & (score >= threshold), structure=EIGHT)


def ranked_groups(score: np.ndarray, fraction: float = DEFAULT_FRACTION
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (H, W), group labels ranked by peak score)`` of the groups of
    :func:`flagged_groups`: highest peak first, ties in label order."""
    groups, count = flagged_groups(score, fraction)
    labels = np.arange(1, count + 1)
    filled = np.where(np.isfinite(score), score, -np.inf)
    peaks = np.asarray(ndimage.maximum(filled, groups, labels))
    return groups, labels[np.argsort(-peaks, kind="stable")]


def object_scores(score: np.ndarray, mask: np.ndarray,
                  fraction: float = DEFAULT_FRACTION) -> ObjectScores | None:
    """Object metrics of an ``(H, W)`` score map (NaN = invalid) against a boolean mask.

    None when the mask holds no target; :data:`MISSED` when no pixel is valid.
    """
    targets, target_count = target_objects(mask)
    if target_count == 0:
        return None
    score = np.asarray(score, dtype=np.float64)
    if not np.isfinite(score).any():
        return MISSED
    groups, ranked = ranked_groups(score, fraction)
    top = ranked[:target_count]
    near = ndimage.binary_dilation(mask, structure=EIGHT)
    touches = np.asarray(ndimage.maximum(near, groups, top)) > 0
    kept = np.isin(groups, top)
    found = np.unique(targets[kept & (targets > 0)])
    if len(found) < target_count:  # touching only through the dilation still finds a target
        found = np.unique(targets[ndimage.binary_dilation(kept, structure=EIGHT) & (targets > 0)])
    return ObjectScores(float(np.mean(touches)), len(found) / target_count, int(touches[0]))


def bootstrap_intervals(groups: dict[str, np.ndarray], resamples: int = 2000, level: float = 0.9,
                        seed: int = 0) -> tuple[dict[str, Interval], Interval]:
    """Percentile bootstrap intervals of the mean of each group and of the mean of group means.

    Scenes are resampled with replacement within each group (NaN values are dropped
    first); the interval of the mean of group means uses the same resamples.
    Returns ``({group: (low, high)}, (low, high))``; an empty group gets NaNs.
    """
    rng = np.random.default_rng(seed)
    quantiles = [(1 - level) / 2, (1 + level) / 2]
    resampled = {}
    for name, values in groups.items():
        values = np.asarray(values, dtype=np.float64)
        values = values[~np.isnan(values)]
        if len(values):
            draws = rng.integers(0, len(values), (resamples, len(values)))
            resampled[name] = values[draws].mean(axis=1)
        else:
            resampled[name] = np.full(resamples, np.nan)
    intervals = {name: tuple(np.quantile(means, quantiles)) for name, means in resampled.items()}
    macro = np.nanmean(np.stack(list(resampled.values())), axis=0)
    return intervals, tuple(np.quantile(macro, quantiles))
