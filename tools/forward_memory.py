"""Peak memory of one tile's forward pass per tile pixel: what ``TileScorer.bytes_per_pixel``
budgets for when the engine sizes its tiles.

    PYTHONPATH=build/pythonpath .venv/bin/python tools/forward_memory.py WEIGHTS [WEIGHTS ...]
        [--precision float32 bfloat16] [--sizes 640 1024 1536]

Each measurement runs in a process of its own (the peak resident size is per process): a
3-band noise tile of side ``size`` is prepared, then scored once; the growth of the peak
resident size over the larger of the earlier peak and the resident size just before,
divided by the tile's pixels, is printed.
"""
from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys


def _resident_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


def measure(weights: str, precision: str, size: int) -> float:
    """Bytes of peak growth per tile pixel while one prepared tile is scored."""
    import numpy as np
    from anomaly_detector.model.nn.detector import TileScorer
    from anomaly_detector.model.nn.features import fit_from_array
    from anomaly_detector.model.nn.weights import load_detector

    bands = np.random.default_rng(0).normal(100, 10, (3, size, size)).astype(np.float32)
    scorer = TileScorer(load_detector(weights), fit_from_array(bands), precision=precision)
    scorer.score_prepared([scorer.prepare(bands[:, :64, :64])])  # warm-up
    prepared = scorer.prepare(bands)
    gc.collect()
    before = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _resident_kib())
    scorer.score_prepared([prepared])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (after - before) * 1024 / size ** 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[640, 1024, 1536])
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(f"{measure(args.weights[0], args.precision[0], args.sizes[0]):.0f}")
        return 0
    for weights in args.weights:
        for precision in args.precision:
            figures = [subprocess.run([sys.executable, __file__, weights, "--one", "--precision",
                                       precision, "--sizes", str(size)], check=True,
                                      capture_output=True, text=True).stdout.strip()
                       for size in args.sizes]
            print(f"{weights} ({precision}): " + ", ".join(
                f"{size} px {figure} B/px" for size, figure in zip(args.sizes, figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
