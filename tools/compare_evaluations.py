"""Paired comparison of two detectors scored by ``make evaluate`` on the same scenes.

    python tools/compare_evaluations.py CANDIDATE.tsv REFERENCE.tsv [--method detector]

Both files are ``evaluation.tsv`` tables written by ``model/training/evaluate.py``. For each
metric (pixel AUC, object R-precision, recall, hit@1) prints the per-modality mean of
candidate minus reference and the 90 % bootstrap interval of the mean of modality means
of the per-scene differences (scenes resampled within each modality: a paired bootstrap).
An interval entirely above 0 means the candidate is resolvably better on these scenes.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from anomaly_detector.model.training.objects import bootstrap_intervals

METRICS = ("auc", "rprec", "recall", "hit1")


def read_rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(path, newline="") as table:
        return {(row["modality"], row["scene"]): row for row in csv.DictReader(table, delimiter="\t")}


def paired_differences(candidate: dict, reference: dict, column: str) -> dict[str, np.ndarray]:
    """{modality: per-scene candidate - reference} over the scenes both tables hold."""
    if set(candidate) != set(reference):
        raise SystemExit("the two tables do not hold the same scenes")
    groups: dict[str, list[float]] = {}
    for key in sorted(candidate):
        groups.setdefault(key[0], []).append(
            float(candidate[key][column]) - float(reference[key][column]))
    return {modality: np.array(values) for modality, values in groups.items()}


def verdict(low: float, high: float) -> str:
    """What a 90 % interval of candidate minus reference says."""
    return "better" if low > 0 else "worse" if high < 0 else "not resolved"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("candidate", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("--method", default="detector", help="column prefix in both tables")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args(argv)
    candidate, reference = read_rows(args.candidate), read_rows(args.reference)
    for metric in METRICS:
        groups = paired_differences(candidate, reference, f"{args.method}_{metric}")
        _, (low, high) = bootstrap_intervals(groups, args.resamples)
        means = " ".join(f"{modality} {np.nanmean(values):+.3f}" for modality, values in groups.items())
        macro = np.mean([np.nanmean(values) for values in groups.values()])
        print(f"{metric:7s} {means} | mean of modalities {macro:+.3f} [{low:+.3f}, {high:+.3f}] "
              f"{verdict(low, high)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
