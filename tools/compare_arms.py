"""Compare two training recipes, each run several times (seeds), on the same scenes.

    python tools/compare_arms.py --candidate RUN.tsv [RUN.tsv ...] --reference RUN.tsv [RUN.tsv ...]
        [--paired] [--method detector] [--resamples 4000]

Each file is the ``evaluation.tsv`` of one run. For pixel AUC and object R-precision
prints each arm's per-modality means (a scene's figure averaged over the arm's runs) and
candidate minus reference as the mean of modality means with a 90 % interval from a
two-level bootstrap: each resample draws the runs of each arm with replacement and the
scenes within each modality (the same scenes for both arms). Unlike the paired bootstrap
of ``tools/compare_evaluations.py``, the interval holds the spread of training runs as
well as the scenes'. An interval entirely below 0 means the candidate recipe is
resolvably worse on these scenes. With ``--paired`` the two arms are the same runs scored
two ways (the i-th candidate file is the i-th reference run), and each resample draws the
same runs for both arms.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from compare_evaluations import read_rows, verdict

METRICS = ("auc", "rprec")


def run_matrix(paths: list[Path], column: str, keys: list[tuple[str, str]]) -> np.ndarray:
    """(runs, scenes) figures of one arm, scenes in the order of ``keys``."""
    rows = []
    for path in paths:
        table = read_rows(path)
        if sorted(table) != keys:
            raise SystemExit(f"{path} does not hold the same scenes as the others")
        rows.append([float(table[key][column]) for key in keys])
    return np.array(rows)


def modality_means(per_scene: np.ndarray, modalities: np.ndarray) -> np.ndarray:
    """Means of each modality's scenes over the last axis (NaN scenes left out), in the
    order of ``np.unique(modalities)``."""
    return np.stack([np.nanmean(per_scene[..., modalities == m], axis=-1)
                     for m in np.unique(modalities)], axis=-1)


def macro_mean(per_scene: np.ndarray, modalities: np.ndarray) -> np.ndarray:
    """Mean of modality means over the last axis."""
    return modality_means(per_scene, modalities).mean(axis=-1)


def describe(per_scene: np.ndarray, modalities: np.ndarray, sign: str = "") -> str:
    """'<modality> <mean> ... | mean of modalities <mean>' of one row of scene figures."""
    means = modality_means(per_scene, modalities)
    return " ".join(f"{m} {v:{sign}.3f}" for m, v in zip(np.unique(modalities), means)) + \
        f" | mean of modalities {means.mean():{sign}.3f}"


def two_level_interval(candidate: np.ndarray, reference: np.ndarray, modalities: np.ndarray,
                       resamples: int, seed: int = 0, level: float = 0.9,
                       paired: bool = False) -> tuple[float, float]:
    """Percentile interval of the candidate-minus-reference mean of modality means, runs
    resampled within each arm (``paired``: the same runs for both) and scenes within each
    modality."""
    rng = np.random.default_rng(seed)
    scene_draws = np.empty((resamples, len(modalities)), dtype=np.int64)
    for modality in np.unique(modalities):
        members = np.flatnonzero(modalities == modality)
        scene_draws[:, members] = rng.choice(members, (resamples, len(members)))
    arm_means = []
    shared_runs = rng.integers(0, len(candidate), (resamples, len(candidate))) if paired else None
    for arm in (candidate, reference):
        runs = shared_runs if paired else rng.integers(0, len(arm), (resamples, len(arm)))
        arm_means.append(np.nanmean(arm[runs], axis=1))  # (resamples, scenes)
    difference = np.take_along_axis(arm_means[0] - arm_means[1], scene_draws, axis=1)
    values = macro_mean(difference, modalities)
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidate", type=Path, nargs="+", required=True)
    parser.add_argument("--reference", type=Path, nargs="+", required=True)
    parser.add_argument("--paired", action="store_true",
                        help="the arms are the same runs, in the same order, scored two ways")
    parser.add_argument("--method", default="detector", help="column prefix in the tables")
    parser.add_argument("--resamples", type=int, default=4000)
    args = parser.parse_args(argv)
    if args.paired and len(args.candidate) != len(args.reference):
        parser.error("--paired needs as many candidate files as reference files")
    keys = sorted(read_rows(args.reference[0]))
    modalities = np.array([modality for modality, _ in keys])
    for metric in METRICS:
        column = f"{args.method}_{metric}"
        arms = {"candidate": run_matrix(args.candidate, column, keys),
                "reference": run_matrix(args.reference, column, keys)}
        print(f"{metric}:")
        for name, arm in arms.items():
            runs = " ".join(f"{value:.3f}" for value in macro_mean(arm, modalities))
            print(f"  {name:9s} ({len(arm)} runs) "
                  f"{describe(np.nanmean(arm, axis=0), modalities)}; per run {runs}")
        difference = np.nanmean(arms["candidate"], axis=0) - np.nanmean(arms["reference"], axis=0)
        low, high = two_level_interval(arms["candidate"], arms["reference"], modalities,
                                       args.resamples, paired=args.paired)
        print(f"  candidate - reference: {describe(difference, modalities, '+')} "
              f"[{low:+.3f}, {high:+.3f}] {verdict(low, high)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
