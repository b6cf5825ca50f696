"""Are the false alarms among the first ranked groups darker or brighter than around them,
and smoother?

    python tools/false_alarm_sign.py DATA MAPS [MAPS ...] [--fraction 0.005] [--ring 3]

MAPS/<modality>/<scene>.tif are score maps (e.g. build/evaluation/maps/detector, or an
``evaluate --out`` folder's ``maps/detector``). Groups and their ranking are those of the
object metrics (``model/training/objects.py``: the top ``fraction`` of pixels, 8-connected,
ranked by peak score, the first K for K targets). Each of the first K groups that touches
no target is a false alarm; it is *dark* when the mean of its pixels (over the bands) is
below the mean of a ``ring``-pixel ring around it, else *bright*; it is *smooth* when the
standard deviation of the brightness in the 13 x 13 window at its centre is below half of
that in the 41 x 41 window there. Prints the counts per modality, summed over all MAPS
folders.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import ndimage

from anomaly_detector.model.training.evaluate import find_scenes, read_array, read_score_map
from anomaly_detector.model.training.objects import EIGHT, flagged_groups


def false_alarm_signs(image: np.ndarray, score: np.ndarray, mask: np.ndarray,
                      fraction: float, ring: int) -> Counter:
    """'dark' / 'bright' / 'smooth' counts of the false alarms among the first K groups of
    ``score``."""
    brightness = np.nanmean(image.astype(np.float64), axis=0)
    target_count = ndimage.label(mask, structure=EIGHT)[1]
    groups, count = flagged_groups(score, fraction)
    labels = np.arange(1, count + 1)
    filled = np.where(np.isfinite(score), score, -np.inf)
    peaks = np.asarray(ndimage.maximum(filled, groups, labels))
    near = ndimage.binary_dilation(mask, structure=EIGHT)
    signs = Counter()
    for label in labels[np.argsort(-peaks, kind="stable")][:target_count]:
        group = groups == label
        if (group & near).any():
            continue
        around = ndimage.binary_dilation(group, iterations=ring) & ~group
        darker = brightness[group].mean() < brightness[around].mean()
        signs["dark" if darker else "bright"] += 1
        y, x = (int(axis.mean()) for axis in np.nonzero(group))
        near_std, wide_std = (brightness[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].std()
                              for r in (6, 20))
        signs["smooth"] += int(near_std < 0.5 * wide_std)
    return signs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("maps", type=Path, nargs="+")
    parser.add_argument("--fraction", type=float, default=0.005)
    parser.add_argument("--ring", type=int, default=3)
    args = parser.parse_args(argv)
    counts: dict[str, Counter] = {}
    for scene in find_scenes(args.data):
        mask = read_array(scene.mask_path)[0] > 0
        if not mask.any():
            continue
        image = read_array(scene.image_path)
        for maps in args.maps:
            score = read_score_map(maps / scene.modality / f"{scene.name}.tif")
            counts.setdefault(scene.modality, Counter()).update(
                false_alarm_signs(image, score, mask, args.fraction, args.ring))
    print("false alarms among the first K groups: dark / bright (of them smooth)")
    for modality, signs in sorted(counts.items()):
        print(f"  {modality:16s} {signs['dark']:4d} / {signs['bright']:4d} ({signs['smooth']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
