"""Forward speed of detector weights, measured interleaved in one process.

    python tools/forward_speed.py WEIGHTS [WEIGHTS ...] [--tile 640] [--rounds 7]
        [--precision float32 [bfloat16 ...]]

Runs the scoring path of ``anomaly:detect`` (the fused CPU scorer when it applies) on one
random 5-channel tile per round, each weights file in each arithmetic in turn, so that
other load on the machine affects all alike; prints the median seconds per tile, MP/s and
the ratio to the first.
"""
from __future__ import annotations

import argparse
import sys

import torch
from bench import interleaved_medians

from anomaly_detector.model.nn.features import INPUT_CHANNELS
from anomaly_detector.model.defaults import PRECISIONS
from anomaly_detector.model.nn.fused import FusedScorer
from anomaly_detector.model.nn.weights import load_detector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--tile", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--precision", nargs="+", default=["float32"], choices=PRECISIONS,
                        help="the fused path's arithmetic(s) (default float32)")
    args = parser.parse_args(argv)
    scorers, names = {}, {}
    for path in args.weights:  # the same file may be given twice
        model = load_detector(path)
        for precision in args.precision:
            names[len(names)] = f"{path} ({precision})"
            scorers[len(scorers)] = FusedScorer.build(model, "cpu", precision) or model.score
    tile = torch.randn(1, INPUT_CHANNELS, args.tile, args.tile,
                       generator=torch.Generator().manual_seed(0))
    seconds = interleaved_medians(scorers, tile, args.rounds)
    first = seconds[0]
    for index, median in seconds.items():
        print(f"{names[index]}: {median * 1e3:.1f} ms per {args.tile} px tile, "
              f"{args.tile ** 2 / median / 1e6:.2f} MP/s, {first / median:.2f}x the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
