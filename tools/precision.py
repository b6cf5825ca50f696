"""How far anomaly:detect's bfloat16 scores lie from its float32 scores, raster by raster.

    python tools/precision.py RASTER [RASTER ...]   (or a folder: every */*/image.tif in it)

Scores each raster with ``precision='float32'`` and with ``'bfloat16'`` (the default on a
CPU with native bfloat16 arithmetic) and prints the largest and the mean absolute
difference of the two maps, then the largest over all rasters.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from anomaly_detector.model.nn.detector import detect_raster
from anomaly_detector.model.nn.fused import native_bfloat16
from anomaly_detector.model.training.evaluate import read_score_map


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rasters", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if not native_bfloat16():
        print("this CPU has no native bfloat16 arithmetic: anomaly:detect uses float32 here")
        return 1
    rasters = [image for path in args.rasters
               for image in (sorted(path.glob("*/*/image.tif")) if path.is_dir() else [path])]
    largest = 0.0
    with tempfile.TemporaryDirectory() as folder:
        maps = {name: Path(folder) / f"{name}.tif" for name in ("float32", "bfloat16")}
        for raster in rasters:
            for name, path in maps.items():
                detect_raster(str(raster), str(path), device="cpu", precision=name)
            difference = np.abs(read_score_map(maps["bfloat16"]) - read_score_map(maps["float32"]))
            largest = max(largest, float(np.nanmax(difference)))
            print(f"{raster}: largest {np.nanmax(difference):.4f}, mean {np.nanmean(difference):.5f}")
    print(f"largest difference over {len(rasters)} rasters: {largest:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
