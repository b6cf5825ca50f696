"""Score-map smoothing, judged on maps that ``make evaluate`` kept.

    python tools/smoothing.py DATA EVALUATION_DIR [--sigma 1.0] [--out DIR]

Smooths each detector map of ``EVALUATION_DIR/maps/detector`` with a Gaussian of
``sigma`` pixels (the matched filter of a point target blurred by the sensor; nodata stays
nodata and does not leak into its neighbours) and scores the smoothed maps as
``make evaluate`` scores maps: pixel ROC AUC and the object metrics at the default
threshold. Writes ``DIR/evaluation.tsv`` (default ``EVALUATION_DIR-smoothed``) with the same
columns, for ``tools/compare_evaluations.py DIR/evaluation.tsv EVALUATION_DIR/evaluation.tsv``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from anomaly_detector.model.training.evaluate import evaluate_maps, kept_map, read_score_map


def smoothed(scores: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smoothed ``scores`` over the valid (finite) pixels, NaN where invalid."""
    valid = np.isfinite(scores)
    total = ndimage.gaussian_filter(np.where(valid, scores, 0.0), sigma, mode="nearest")
    weight = ndimage.gaussian_filter(valid.astype(np.float64), sigma, mode="nearest")
    return np.where(valid, total / np.maximum(weight, 1e-12), np.nan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("evaluation", type=Path)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or args.evaluation.with_name(args.evaluation.name + "-smoothed")
    evaluate_maps(args.data, lambda scene: smoothed(
        read_score_map(kept_map(args.evaluation, scene)), args.sigma), out / "evaluation.tsv")
    print(f"wrote {out / 'evaluation.tsv'} (sigma {args.sigma} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
