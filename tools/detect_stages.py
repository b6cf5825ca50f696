"""Where ``detect_raster`` spends its time on one raster: statistics, reduction, scoring.

    PYTHONPATH=build/pythonpath python tools/detect_stages.py RASTER [--rounds 2] [--tile-size 512]

Warms up on a 256 x 256 corner of RASTER as ``make bench`` does (PyTorch, the weights,
oneDNN kernels, as a QGIS session that has run the detector once), then scores the whole
raster ``--rounds`` times and prints, per round, the seconds of the whole call, of the
band statistics pass, of the tile scoring, and the rest (for rasters of more than 5 bands
mostly the reduction pass that reads every band again; otherwise opening, loading the
weights, closing), and the network's seconds on the first tile against the median of the
others (the first one shares the cores with the reader preparing the next two). Then the
peak RSS of the process (warm-up included). ``--tile-size`` asks for other tiles (the
memory setting may cap them).
With another checkout's package first on ``PYTHONPATH`` it times that code.
"""
from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np
from bench import warm_up

import anomaly_detector.model.nn.detector as detector
from anomaly_detector.model.defaults import TILE_SIZE
from anomaly_detector.model.raster.memory import peak_rss_mb

STAGES = ("detection_statistics", "score_raster")


def timed(owner, name: str, record) -> None:
    """Wrap ``owner.<name>`` so that each call passes its seconds to ``record(name, s)``."""
    function = getattr(owner, name)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            record(name, time.perf_counter() - start)
    setattr(owner, name, wrapper)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raster", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tile-size", type=int, default=TILE_SIZE)
    args = parser.parse_args(argv)
    seconds: dict[str, float] = {}
    tiles: list[float] = []
    for name in STAGES:
        timed(detector, name, lambda n, s: seconds.__setitem__(n, seconds.get(n, 0.0) + s))
    timed(detector.TileScorer, "score_prepared", lambda _, s: tiles.append(s))
    print(f"package: {Path(detector.__file__).resolve().parents[2]}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        scores = f"{scratch}/scores.tif"
        warm_up(str(args.raster), scores, detector.detect_raster, 1)
        for round_ in range(1, args.rounds + 1):
            seconds.clear()
            tiles.clear()
            start = time.perf_counter()
            detector.detect_raster(str(args.raster), scores, device="cpu",
                                   tile_size=args.tile_size)
            total = time.perf_counter() - start
            rest = total - sum(seconds.values())
            others = f"{np.median(tiles[1:]):.3f}" if len(tiles) > 1 else "-"
            print(f"round {round_}: whole {total:.2f} s, statistics "
                  f"{seconds['detection_statistics']:.2f} s, scoring "
                  f"{seconds['score_raster']:.2f} s, rest {rest:.2f} s; network on "
                  f"{len(tiles)} tile(s): first {tiles[0]:.3f} s, others' median {others} s",
                  flush=True)
    print(f"tile size {args.tile_size}; peak RSS of this process {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
