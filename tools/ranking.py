"""Which object score ranks the anomaly groups best? R-precision and hit@1 per ranking.

    python tools/ranking.py DATA MAPS [--fraction 0.005]

MAPS/<modality>/<scene>.tif are score maps (e.g. build/evaluation/maps/detector).
Groups are the 8-connected components of the top ``fraction`` of pixels (as
``model/training/objects.py``); they are ranked by each candidate object score in turn:

* ``peak``: the group's highest score (what ``anomaly:polygonize`` and
  ``../shared/tools/objects.py`` use);
* ``mean``: the group's mean score;
* ``mass``: the sum of its scores;
* ``prominence``: its peak minus the median score of a 3-pixel ring around it.

Prints per modality the mean R-precision and hit@1 of each ranking, and the paired
difference of each ranking from ``peak`` in mean of modality means with its 90 %
bootstrap interval over scenes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from anomaly_detector.model.training.evaluate import find_scenes, read_array, read_score_map
from anomaly_detector.model.training.objects import (EIGHT, bootstrap_intervals, flagged_groups,
                                                   target_objects)

RANKINGS = ("peak", "mean", "mass", "prominence")


def group_scores(score: np.ndarray, groups: np.ndarray, count: int) -> dict[str, np.ndarray]:
    labels = np.arange(1, count + 1)
    filled = np.where(np.isfinite(score), score, np.nanmin(score))
    peak = np.asarray(ndimage.maximum(filled, groups, labels))
    mean = np.asarray(ndimage.mean(filled, groups, labels))
    size = np.asarray(ndimage.sum(np.ones_like(filled), groups, labels))
    grown = ndimage.grey_dilation(groups, footprint=np.ones((7, 7)))
    ring = (grown > 0) & (groups == 0)
    ring_median = np.asarray(ndimage.median(filled, np.where(ring, grown, 0), labels))
    return {"peak": peak, "mean": mean, "mass": mean * size,
            "prominence": peak - np.nan_to_num(ring_median, nan=0.0)}


def scene_rankings(score: np.ndarray, mask: np.ndarray, fraction: float) -> dict[str, tuple]:
    target_count = target_objects(mask)[1]
    groups, count = flagged_groups(score, fraction)
    near = ndimage.binary_dilation(mask, structure=EIGHT)
    touches = np.asarray(ndimage.maximum(near, groups, np.arange(1, count + 1))) > 0
    result = {}
    for name, values in group_scores(score, groups, count).items():
        order = np.argsort(-values, kind="stable")[:target_count]
        result[name] = (float(touches[order].mean()), float(touches[order[0]]))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("maps", type=Path)
    parser.add_argument("--fraction", type=float, default=0.005)
    args = parser.parse_args(argv)
    rows = []
    for scene in find_scenes(args.data):
        mask = read_array(scene.mask_path)[0] > 0
        if not mask.any():
            continue
        score = read_score_map(args.maps / scene.modality / f"{scene.name}.tif")
        rows.append((scene.modality, scene_rankings(score, mask, args.fraction)))
    modalities = sorted({m for m, _ in rows})
    print(f"{'ranking':12s} " + " ".join(f"{m[:13]:>13s}" for m in modalities)
          + "   (R-precision / hit@1)")
    for name in RANKINGS:
        cells = []
        for modality in modalities:
            values = np.array([r[name] for m, r in rows if m == modality])
            cells.append(f"{values[:, 0].mean():.3f}/{values[:, 1].mean():.3f}")
        print(f"{name:12s} " + " ".join(f"{c:>13s}" for c in cells))
    print("\nR-precision minus peak's, mean of modality means [90 % bootstrap interval]:")
    for name in RANKINGS[1:]:
        groups = {m: np.array([r[name][0] - r["peak"][0] for mm, r in rows if mm == m])
                  for m in modalities}
        _, interval = bootstrap_intervals(groups)
        difference = np.mean([g.mean() for g in groups.values()])
        print(f"  {name:12s} {difference:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
