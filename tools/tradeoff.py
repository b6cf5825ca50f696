"""The speed-vs-quality table of the analysis scales, from measured files only.

Reads ``bench/results.json`` (``make bench``: rows ``a``, ``a-s2``, ``a-s4``, ``b``, ...)
and the per-scene AUC of ``make evaluate SCALE=1|2|4`` (``build/evaluation[-scaleN]/
evaluation.tsv``) and prints one Markdown row per scale.

    python tools/tradeoff.py [--bench bench/results.json] [--build build]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPATH = REPO / "build" / "pythonpath"
if str(PYPATH) not in sys.path:
    sys.path.insert(0, str(PYPATH))

from anomaly_detector.model.nn.detector import SCALES  # noqa: E402
from anomaly_detector.model.training.evaluate import summarise  # noqa: E402


def modality_means(tsv: Path) -> dict[str, float]:
    """Mean detector AUC per modality, plus their mean (``mean_of_modalities``)."""
    with open(tsv, newline="") as handle:
        rows = [dict(row, detector_auc=float(row["detector_auc"]))
                for row in csv.DictReader(handle, delimiter="\t")]
    return summarise(rows, "detector_auc")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=REPO / "bench" / "results.json")
    parser.add_argument("--build", type=Path, default=REPO / "build")
    args = parser.parse_args(argv)
    rows = json.loads(args.bench.read_text())["rows"]
    speed = {(r["case"], r["algorithm"]): r["mp_per_s"] for r in rows}
    header = None
    for scale in SCALES:
        suffix = "" if scale == 1 else f"-s{scale}"
        tsv = args.build / ("evaluation" if scale == 1 else f"evaluation-scale{scale}") / \
            "evaluation.tsv"
        if not tsv.is_file():
            print(f"missing {tsv}: run make evaluate SCALE={scale}", file=sys.stderr)
            return 1
        means = modality_means(tsv)
        if header is None:
            header = list(means)
            print("| scale | (a) MP/s | (b) MP/s | " + " | ".join(header) + " |")
            print("|---" * (3 + len(header)) + "|")
        a = speed.get((f"a{suffix}", "anomaly:detect"), float("nan"))
        b = speed.get((f"b{suffix}", "anomaly:detect"), float("nan"))
        label = "full" if scale == 1 else f"1/{scale}"
        print(f"| {label} | {a:.2f} | {b:.2f} | " +
              " | ".join(f"{means[k]:.3f}" for k in header) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
