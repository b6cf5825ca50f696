"""Where ``detect_raster`` spends its time on one raster: statistics, reduction, scoring.

    PYTHONPATH=build/pythonpath python tools/detect_stages.py RASTER [--rounds 2]

Warms up on a 256 x 256 corner of RASTER (PyTorch, the weights, oneDNN kernels, as a
QGIS session that has run the detector once), then scores the whole raster ``--rounds``
times and prints, per round, the seconds of the whole call, of the band statistics pass,
of the tile scoring, and the rest (for rasters of more than 5 bands mostly the reduction
pass that reads every band again; otherwise opening, loading the weights, closing).
"""
from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

from osgeo import gdal

import anomaly_detector.model.nn.detector as detector

STAGES = ("detection_statistics", "score_raster")


def timed(seconds: dict[str, float], name: str) -> None:
    """Wrap ``detector.<name>`` so that its calls add their seconds to ``seconds[name]``."""
    function = getattr(detector, name)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
    setattr(detector, name, wrapper)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raster", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    seconds: dict[str, float] = {}
    for name in STAGES:
        timed(seconds, name)
    with tempfile.TemporaryDirectory() as scratch:
        corner, scores = f"{scratch}/corner.tif", f"{scratch}/scores.tif"
        gdal.Translate(corner, str(args.raster), srcWin=[0, 0, 256, 256])
        detector.detect_raster(corner, scores, device="cpu")
        for round_ in range(1, args.rounds + 1):
            seconds.clear()
            start = time.perf_counter()
            detector.detect_raster(str(args.raster), scores, device="cpu")
            total = time.perf_counter() - start
            rest = total - sum(seconds.values())
            print(f"round {round_}: whole {total:.2f} s, statistics "
                  f"{seconds['detection_statistics']:.2f} s, scoring "
                  f"{seconds['score_raster']:.2f} s, rest {rest:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
