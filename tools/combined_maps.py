"""Several detectors' opinions as one: the mean logit of maps that ``make evaluate`` kept.

    python tools/combined_maps.py DATA EVALUATION_DIR EVALUATION_DIR [...] --out DIR

For each scene, the mean over the evaluation folders of the logit of its detector map
(``EVALUATION_DIR/maps/detector/<modality>/<scene>.tif``, scores clipped to [1e-7, 1 - 1e-7]
first), its sigmoid scored as ``make evaluate`` scores maps: pixel ROC AUC and the object
metrics at the default threshold. Writes ``DIR/evaluation.tsv`` with the same columns, for
``tools/compare_evaluations.py`` and ``tools/compare_arms.py``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from anomaly_detector.model.training.evaluate import evaluate_maps, kept_map, read_score_map


def mean_logit(maps: list[np.ndarray]) -> np.ndarray:
    """The sigmoid of the mean logit of score ``maps`` (NaN where any is NaN)."""
    logits = [np.log(p) - np.log1p(-p) for p in
              (np.clip(m.astype(np.float64), 1e-7, 1 - 1e-7) for m in maps)]
    return 1 / (1 + np.exp(-np.mean(logits, axis=0)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("evaluations", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    evaluate_maps(args.data, lambda scene: mean_logit(
        [read_score_map(kept_map(folder, scene)) for folder in args.evaluations]),
        args.out / "evaluation.tsv")
    print(f"wrote {args.out / 'evaluation.tsv'} (the mean logit of {len(args.evaluations)} maps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
