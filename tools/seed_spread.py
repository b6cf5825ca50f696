"""Spread of several training runs of one recipe, scored by ``make evaluate`` on the same scenes.

    python tools/seed_spread.py RUN.tsv RUN.tsv [RUN.tsv ...] [--method detector]

Each file is an ``evaluation.tsv`` of one run (another seed of the same recipe). Prints,
for pixel AUC and object R-precision, each modality's mean and the mean of modality means
per run, their smallest, largest and standard deviation over the runs, and how many of the
pairs of runs the paired bootstrap of ``tools/compare_evaluations.py`` calls resolvably
different (an interval of the mean of modality means that excludes 0).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from compare_evaluations import paired_differences, read_rows

from anomaly_detector.model.training.objects import bootstrap_intervals

METRICS = ("auc", "rprec")


def modality_means(rows: dict, column: str) -> dict[str, float]:
    """{modality: mean over its scenes, 'mean of modalities': mean of those}."""
    groups: dict[str, list[float]] = {}
    for (modality, _), row in sorted(rows.items()):
        groups.setdefault(modality, []).append(float(row[column]))
    means = {modality: float(np.nanmean(values)) for modality, values in groups.items()}
    means["mean of modalities"] = float(np.mean(list(means.values())))
    return means


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--method", default="detector", help="column prefix in the tables")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args(argv)
    tables = [read_rows(path) for path in args.runs]
    for metric in METRICS:
        column = f"{args.method}_{metric}"
        per_run = [modality_means(table, column) for table in tables]
        print(f"{metric}: smallest / largest / standard deviation over {len(tables)} runs")
        for name in per_run[0]:
            values = np.array([means[name] for means in per_run])
            print(f"  {name:20s} {values.min():.3f} / {values.max():.3f} / "
                  f"{values.std(ddof=1):.3f}   runs: "
                  + " ".join(f"{value:.3f}" for value in values))
        resolved = 0
        pairs = list(itertools.combinations(range(len(tables)), 2))
        for first, second in pairs:
            groups = paired_differences(tables[first], tables[second], column)
            _, (low, high) = bootstrap_intervals(groups, args.resamples)
            resolved += low > 0 or high < 0
        print(f"  pairs of runs resolvably different: {resolved} of {len(pairs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
