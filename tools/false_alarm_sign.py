"""Are the false alarms among the first ranked groups darker or brighter than around them,
and smoother?

    python tools/false_alarm_sign.py DATA MAPS [MAPS ...] [--fraction 0.005] [--ring 3]
        [--list] [--faint CONTRAST]

MAPS/<modality>/<scene>.tif are score maps (e.g. build/evaluation/maps/detector, or an
``evaluate --out`` folder's ``maps/detector``). Groups and their ranking are those of the
object metrics (``model/training/objects.py``: the top ``fraction`` of pixels, 8-connected,
ranked by peak score, the first K for K targets). Each of the first K groups that touches
no target is a false alarm; it is *dark* when the mean of its pixels (over the bands) is
below the mean of a ``ring``-pixel ring around it, else *bright*; it is *smooth* when the
standard deviation of the brightness in the 13 x 13 window at its centre is below half of
that in the 41 x 41 window there. Prints the counts per modality, summed over all MAPS
folders. ``--list`` also prints, per scene and MAPS folder, the first group that touches a
target and every group ranked above it: rank, pixels, centre (row, column), the share of
the scene's pixels darker than its centre pixel, the two windows' standard deviations and
its contrast (its brightest pixel minus the ring's mean, in ring standard deviations).
``--faint C`` also prints, per MAPS folder and modality, how many false alarms ``--list``
names and how many of them have a contrast below C.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import ndimage

from anomaly_detector.model.training.evaluate import find_scenes, read_array, read_score_map
from anomaly_detector.model.training.objects import EIGHT, ranked_groups, target_objects

NEAR, WIDE = 6, 20  # half-sides of the 13 x 13 and 41 x 41 windows


class Group:
    """What the brightness says of one ranked group."""

    def __init__(self, brightness: np.ndarray, group: np.ndarray, ring: int) -> None:
        around = ndimage.binary_dilation(group, iterations=ring) & ~group
        self.pixels = int(group.sum())
        self.darker = brightness[group].mean() < brightness[around].mean()
        self.contrast = (brightness[group].max() - brightness[around].mean()) / \
            (brightness[around].std() + 1e-6)
        self.y, self.x = (int(round(axis.mean())) for axis in np.nonzero(group))
        self.percentile = float((brightness < brightness[self.y, self.x]).mean())
        self.near_std, self.wide_std = (
            float(brightness[max(0, self.y - r):self.y + r + 1,
                             max(0, self.x - r):self.x + r + 1].std()) for r in (NEAR, WIDE))

    @property
    def smooth(self) -> bool:
        return self.near_std < 0.5 * self.wide_std

    def describe(self) -> str:
        return (f"{self.pixels} px at {self.y},{self.x}, darker than {self.percentile:.2f} of "
                f"the scene, std {self.near_std:.1f} / {self.wide_std:.1f}, contrast "
                f"{self.contrast:+.1f}")


def scene_groups(image: np.ndarray, score: np.ndarray, mask: np.ndarray, fraction: float,
                 ring: int) -> tuple[int, list[tuple[int, Group, bool]]]:
    """``(K, [(rank, Group, touches a target)])`` of the groups ranked down to the K-th
    and down to the first that touches a target."""
    brightness = np.nanmean(image.astype(np.float64), axis=0)
    target_count = target_objects(mask)[1]
    groups, ranked = ranked_groups(score, fraction)
    near = ndimage.binary_dilation(mask, structure=EIGHT)
    described, found = [], False
    for rank, label in enumerate(ranked, 1):
        if rank > target_count and found:
            break
        group = groups == label
        hit = bool((group & near).any())
        described.append((rank, Group(brightness, group, ring), hit))
        found |= hit
    return target_count, described


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("maps", type=Path, nargs="+")
    parser.add_argument("--fraction", type=float, default=0.005)
    parser.add_argument("--ring", type=int, default=3)
    parser.add_argument("--list", action="store_true", help="describe each scene's groups")
    parser.add_argument("--faint", type=float, default=None, metavar="CONTRAST",
                        help="also count, per MAPS folder and modality, the false alarms that "
                             "--list names and those of them with a contrast below CONTRAST")
    args = parser.parse_args(argv)
    counts: dict[str, Counter] = {}
    faint: Counter = Counter()
    for scene in find_scenes(args.data):
        mask = read_array(scene.mask_path)[0] > 0
        if not mask.any():
            continue
        image = read_array(scene.image_path)
        for maps in args.maps:
            score = read_score_map(maps / scene.modality / f"{scene.name}.tif")
            target_count, described = scene_groups(image, score, mask, args.fraction, args.ring)
            signs = counts.setdefault(scene.modality, Counter())
            for rank, group, hit in described:
                if rank <= target_count and not hit:
                    signs["dark" if group.darker else "bright"] += 1
                    signs["smooth"] += group.smooth
            listed = [group for _, group, hit in described if not hit]
            if args.faint is not None:
                faint[maps, scene.modality, "listed"] += len(listed)
                faint[maps, scene.modality, "faint"] += sum(g.contrast < args.faint for g in listed)
            if args.list:
                print(f"{maps} {scene.modality}/{scene.name} (K {target_count})")
                for rank, group, hit in described:
                    if not hit or not any(h for r, _, h in described if r < rank):
                        kind = "target" if hit else "false alarm"
                        print(f"  rank {rank} {kind}: {group.describe()}")
    print("false alarms among the first K groups: dark / bright (of them smooth)")
    for modality, signs in sorted(counts.items()):
        print(f"  {modality:16s} {signs['dark']:4d} / {signs['bright']:4d} ({signs['smooth']})")
    if args.faint is not None:
        print(f"false alarms that --list names: all / contrast below {args.faint}")
        for maps, modality in sorted({key[:2] for key in faint}):
            print(f"  {maps} {modality:16s} {faint[maps, modality, 'listed']:4d} / "
                  f"{faint[maps, modality, 'faint']:4d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
