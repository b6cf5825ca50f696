"""What the detector's sampled statistics change: scores of dev scenes enlarged beyond 2^20
pixels, with the statistics from a quarter of the blocks against every block's grid.

    PYTHONPATH=build/pythonpath python tools/statistics_sample.py DATA_DIR

Each ``<modality>/<scene>/{image,mask}.tif`` of DATA_DIR is enlarged by repeating each
pixel f x f times (f the smallest factor that brings it to at least 2^20 pixels, where
the statistics are estimated; GeoTIFF tiled 256), then scored by ``detect_raster``
twice: as shipped (statistics from a quarter of the blocks, see
``raster.stats.band_statistics``) and with the statistics from the regular grid over
every block. Prints per scene the pixel ROC AUC both ways and the largest score
difference, then the mean of modality means of the AUCs and the largest |difference|.
"""
from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
from osgeo import gdal

import anomaly_detector.model.nn.detector as detector
from anomaly_detector.model.training.evaluate import (find_scenes, read_array, read_score_map,
                                                      roc_auc)

EXACT_LIMIT = 1 << 20


def enlarged(image: Path, target: Path) -> int:
    """Write ``image`` with each pixel repeated f x f times; return f."""
    source = gdal.Open(str(image))
    array = read_array(image)
    factor = max(2, math.ceil(math.sqrt(EXACT_LIMIT / (array.shape[1] * array.shape[2]))))
    big = np.repeat(np.repeat(array, factor, axis=1), factor, axis=2)
    ds = gdal.GetDriverByName("GTiff").Create(
        str(target), big.shape[2], big.shape[1], big.shape[0],
        source.GetRasterBand(1).DataType, ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256"])
    for band in range(big.shape[0]):
        ds.GetRasterBand(band + 1).WriteArray(big[band])
    ds = None
    return factor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    args = parser.parse_args(argv)
    shipped = detector.band_statistics

    def every_block(*a, **kw):
        return shipped(*a, **{**kw, "quarters": False})

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for scene in find_scenes(args.data):
            big, out = Path(scratch) / "image.tif", Path(scratch) / "scores.tif"
            factor = enlarged(scene.image_path, big)
            mask = read_array(scene.mask_path)[0] > 0
            labels = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
            scores = {}
            for name, statistics in (("quarter", shipped), ("every block", every_block)):
                detector.band_statistics = statistics
                detector.detect_raster(str(big), str(out), device="cpu")
                scores[name] = read_score_map(out)
            detector.band_statistics = shipped
            aucs = {name: roc_auc(s, labels) for name, s in scores.items()}
            difference = float(np.nanmax(np.abs(scores["quarter"] - scores["every block"])))
            rows.append((scene.modality, aucs["quarter"], aucs["every block"], difference))
            print(f"{scene.modality:<15} {scene.name:<28} x{factor:<3} AUC quarter "
                  f"{aucs['quarter']:.4f} every block {aucs['every block']:.4f} "
                  f"max |score difference| {difference:.4f}", flush=True)
    modalities = sorted({row[0] for row in rows})

    def macro(column: int) -> float:
        return float(np.mean([np.mean([r[column] for r in rows if r[0] == m])
                              for m in modalities]))
    print(f"mean of modality means: AUC quarter {macro(1):.4f}, every block {macro(2):.4f}; "
          f"largest |AUC difference| {max(abs(r[1] - r[2]) for r in rows):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
