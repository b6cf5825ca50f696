"""Random small rasters through anomaly:detect, anomaly:rx, anomaly:local_rx and
anomaly:local_contrast, and through anomaly:detect and anomaly:rx with a random extent.

Every case: random size (1..70 per side), data type, band count (1..20), nodata
pattern and NaN placement, and the detector's tiles, analysis scale and arithmetic, with a
fixed seed. Checks: no crash (a failure is a QgsProcessingException with a known
sentence), the output grid equals the input grid, scores are finite where the input is
valid and nodata where it is not (a pixel is invalid where a band holds nodata or NaN, or
where GDAL's alpha band is 0).

``make test`` runs a few cases (bounded to a few seconds); ``make fuzz
FUZZ_CASES=500`` runs more (``FUZZ_SEED`` picks another sequence).
"""

import os

import numpy as np
import pytest
from osgeo import gdal

from anomaly_detector.model.raster.output import NODATA
from conftest import write_raster

CASES = int(os.environ.get("FUZZ_CASES", "12"))
SEED = int(os.environ.get("FUZZ_SEED", "20240501"))

TYPES = [np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.float32, np.float64]
PATTERNS = ["none", "random", "block", "rows", "nan", "all"]
KNOWN_REFUSALS = ("contains no valid pixels",)


def make_case(rng, path):
    """Write one random raster; return ``(path, valid mask, description)``."""
    height, width = (int(v) for v in rng.integers(1, 71, size=2))
    bands = int(rng.integers(1, 21))
    dtype = TYPES[int(rng.integers(len(TYPES)))]
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    lo, hi = (max(info.min, -5000), min(info.max, 5000)) if info else (-1e4, 1e4)
    data = rng.uniform(lo, hi, (bands, height, width))
    if rng.random() < 0.3:  # some smooth structure and a hot spot
        data = np.cumsum(data, axis=2) / max(width, 1)
        data[:, height // 2, width // 2] = hi
    data = np.clip(data, lo, hi).astype(dtype)
    nodata = None
    invalid = np.zeros((height, width), bool)
    if pattern in ("random", "block", "rows", "all"):
        nodata = lo if info else -9999.5
        if pattern == "random":
            invalid = rng.random((height, width)) < rng.uniform(0.05, 0.6)
        elif pattern == "block":
            invalid[: max(1, height // 2), : max(1, width // 3)] = True
        elif pattern == "rows":
            invalid[::2] = True
        else:
            invalid[:] = True
        data[data == np.asarray(nodata, dtype)] = np.asarray(nodata + 1, dtype)
        # nodata in one random band marks the pixel invalid
        band_of = rng.integers(bands, size=(height, width))
        for b in range(bands):
            data[b][invalid & (band_of == b)] = nodata
    elif pattern == "nan" and not info:
        invalid = rng.random((height, width)) < 0.2
        data[int(rng.integers(bands))][invalid] = np.nan
    write_raster(path, data, nodata=nodata, epsg=32631,
                 geotransform=(300000.0 + rng.integers(1000), 2.0, 0.0, 5000000.0, 0.0, -2.0),
                 options=("TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16"))
    alpha = _alpha_band(path)  # GDAL takes the 4th band of 4 bytes for transparency
    if alpha is not None:
        invalid |= data[alpha] == 0
    desc = f"{height}x{width}x{bands} {np.dtype(dtype).name} nodata={pattern}" + \
        (f" alpha=band {alpha + 1}" if alpha is not None else "")
    return str(path), ~invalid, desc


def _alpha_band(path):
    """0-based index of the band GDAL reads as alpha (0 = transparent), or None."""
    dataset = gdal.Open(str(path))
    alpha = [b for b in range(dataset.RasterCount)
             if dataset.GetRasterBand(b + 1).GetColorInterpretation() == gdal.GCI_AlphaBand]
    return alpha[0] if alpha else None


def check_output(src, score, valid, desc):
    sds, ods = gdal.Open(src), gdal.Open(score)
    assert (ods.RasterXSize, ods.RasterYSize) == (sds.RasterXSize, sds.RasterYSize), desc
    assert ods.GetGeoTransform() == sds.GetGeoTransform(), desc
    assert ods.GetProjection() == sds.GetProjection(), desc
    arr = ods.GetRasterBand(1).ReadAsArray().astype(np.float64)
    assert ods.GetRasterBand(1).GetNoDataValue() == NODATA, desc
    assert np.isfinite(arr).all(), desc
    assert (arr[valid] != NODATA).all(), desc
    assert (arr[~valid] == NODATA).all(), desc


@pytest.mark.parametrize("case", range(CASES))
def test_fuzz(tmp_path, run_alg, case):
    from qgis.core import QgsProcessingException
    rng = np.random.default_rng([SEED, case])
    src, valid, desc = make_case(rng, tmp_path / "in.tif")
    for alg, params in (
            ("anomaly:rx", {"OUTPUT": str(tmp_path / "rx.tif")}),
            ("anomaly:local_rx", {"OUTPUT": str(tmp_path / "local_rx.tif")}),
            ("anomaly:local_contrast", {"OUTPUT": str(tmp_path / "local_contrast.tif")}),
            ("anomaly:detect", {"DEVICE": 1, "SCALE": int(rng.integers(3)),
                                "PRECISION": int(rng.integers(2)),
                                "TILE_SIZE": int(rng.choice([32, 48, 64, 512])),
                                "OVERLAP": int(rng.choice([0, 16, 64])),
                                "OUTPUT_SCORE": str(tmp_path / "detect.tif"),
                                "OUTPUT_POLYGONS": str(tmp_path / "detect.gpkg")})):
        out = params.get("OUTPUT", params.get("OUTPUT_SCORE"))
        try:
            run_alg(alg, {"INPUT": src, **params})
        except QgsProcessingException as error:
            assert not valid.any() and any(k in str(error) for k in KNOWN_REFUSALS), \
                f"{alg} on {desc}: {error}"
            assert not os.path.exists(out), desc
            continue
        assert valid.any(), f"{alg} accepted a raster without valid pixels ({desc})"
        check_output(src, out, valid, f"{alg} on {desc}")
    leftovers = [n for n in os.listdir(tmp_path) if "partial" in n]
    assert not leftovers, leftovers


@pytest.mark.parametrize("case", range(CASES))
def test_fuzz_area_of_interest(tmp_path, run_alg, case):
    """A random EXTENT: the score raster is the window of the pixels it touches, valid
    where the input is."""
    from qgis.core import QgsProcessingException
    rng = np.random.default_rng([SEED, case, 1])
    src, valid, desc = make_case(rng, tmp_path / "in.tif")
    height, width = valid.shape
    x0, px, _, y0, _, py = gdal.Open(src).GetGeoTransform()
    c0, r0 = int(rng.integers(width)), int(rng.integers(height))
    c1, r1 = int(rng.integers(c0 + 1, width + 1)), int(rng.integers(r0 + 1, height + 1))
    extent = (f"{x0 + (c0 + 0.3) * px},{x0 + (c1 - 0.2) * px},"
              f"{y0 + (r1 - 0.1) * py},{y0 + (r0 + 0.4) * py} [EPSG:32631]")
    inside = valid[r0:r1, c0:c1]
    desc += f", rows {r0}:{r1}, columns {c0}:{c1}"
    for alg, params in (
            ("anomaly:rx", {"OUTPUT": str(tmp_path / "rx.tif")}),
            ("anomaly:detect", {"DEVICE": 1, "SCALE": int(rng.integers(3)),
                                "OUTPUT_SCORE": str(tmp_path / "detect.tif"),
                                "OUTPUT_POLYGONS": str(tmp_path / "detect.gpkg")})):
        out = params.get("OUTPUT", params.get("OUTPUT_SCORE"))
        try:
            run_alg(alg, {"INPUT": src, "EXTENT": extent, **params})
        except QgsProcessingException as error:
            assert not inside.any() and any(k in str(error) for k in KNOWN_REFUSALS), \
                f"{alg} on {desc}: {error}"
            continue
        scores = gdal.Open(out).ReadAsArray()
        assert scores.shape == inside.shape, f"{alg} on {desc}"
        assert np.isfinite(scores).all(), f"{alg} on {desc}"
        np.testing.assert_array_equal(scores != NODATA, inside, err_msg=f"{alg} on {desc}")
