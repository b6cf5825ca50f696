"""Rasters of many bands are reduced once before tiling: same scores, less reading."""

import numpy as np
import pytest
from osgeo import gdal

from anomaly_detector.model.nn.detector import TileScorer, detect_raster
from anomaly_detector.model.nn.features import INPUT_CHANNELS, fit_from_array
from anomaly_detector.model.nn.reduced_raster import reduced_raster, reduces_first
from anomaly_detector.model.nn.weights import load_detector
from anomaly_detector.model.raster.io import open_raster_checked
from anomaly_detector.model.raster.output import NODATA
from anomaly_detector.model.raster.stats import pool_mean
from conftest import read_raster, targets_scene, write_raster


def _scene_with_nodata(tmp_path, bands):
    image, _ = targets_scene(bands=bands, height=150, width=131)
    image[:, :10, :12] = -1
    image[3, 70, 40] = np.nan
    valid = np.isfinite(image).all(axis=0) & ~(image == -1).all(axis=0)
    path = write_raster(tmp_path / "in.tif", image.astype(np.float32), nodata=-1,
                        options=("INTERLEAVE=PIXEL",))  # striped, pixel-interleaved
    return image.astype(np.float32), valid, path


def test_only_many_band_rasters_whose_reduction_fits_are_reduced_first(tmp_path):
    info = open_raster_checked(write_raster(tmp_path / "a.tif",
                                            np.zeros((6, 40, 40), np.float32)))
    assert reduces_first(info)
    few = open_raster_checked(write_raster(tmp_path / "b.tif", np.zeros((5, 40, 40), np.float32)))
    assert not reduces_first(few)
    info.width = info.height = 8000  # 1.28 GB of reduced channels: over a quarter of 768 MiB
    assert not reduces_first(info)
    assert reduces_first(info, memory_mb=8192)


def test_reduced_raster_holds_the_reduction_and_nan_where_invalid(tmp_path):
    image, valid, path = _scene_with_nodata(tmp_path, bands=13)
    reduction = fit_from_array(image, valid)
    with reduced_raster(path, None, reduction, memory_mb=64) as reduced:
        dataset = gdal.Open(reduced)
        channels = dataset.ReadAsArray()
        assert dataset.RasterCount == INPUT_CHANNELS and channels.dtype == np.float32
        dataset = None
    np.testing.assert_array_equal(np.isnan(channels).all(axis=0), ~valid)
    np.testing.assert_allclose(channels[:, valid], reduction.apply(image, valid)[:, valid],
                               atol=1e-6)
    assert gdal.VSIStatL(reduced) is None  # removed afterwards


def test_many_band_scores_equal_one_pass_of_the_network_over_the_whole_image(tmp_path):
    image, valid, path = _scene_with_nodata(tmp_path, bands=13)
    detect_raster(path, str(tmp_path / "out.tif"), tile_size=48)  # several tiles
    scores, gt, _, nodata, _ = read_raster(tmp_path / "out.tif")
    assert gt == gdal.Open(path).GetGeoTransform() and nodata == NODATA
    np.testing.assert_array_equal(scores == NODATA, ~valid)
    direct = TileScorer(load_detector(), fit_from_array(image, valid))(image, valid)
    np.testing.assert_allclose(scores[valid], direct[valid], atol=1e-5)


@pytest.mark.parametrize("scale", [2, 4])
def test_many_band_scores_at_coarser_scales_equal_one_pass_over_the_whole_image(tmp_path,
                                                                              scale):
    image, valid, path = _scene_with_nodata(tmp_path, bands=13)
    # float32: the streamed and the direct statistics differ in the last bit of a few
    # reduced pixels, which bfloat16 convolutions may round apart by a few 1e-4
    detect_raster(path, str(tmp_path / "out.tif"), tile_size=32, scale=scale,
                  precision="float32")  # 2+ tiles
    scores = read_raster(tmp_path / "out.tif")[0]
    np.testing.assert_array_equal(scores == NODATA, ~valid)
    pooled, pooled_valid = pool_mean(np.where(valid, image, 0), valid, scale)
    reduction = fit_from_array(pooled, pooled_valid)
    direct = TileScorer(load_detector(), reduction, scale=scale, precision="float32")(image, valid)
    np.testing.assert_allclose(scores[valid], direct[valid], atol=1e-5)


def test_a_reduced_integer_raster_keeps_its_grey_level_floor(tmp_path):
    image, valid, _ = _scene_with_nodata(tmp_path, bands=13)
    stored = np.where(np.isfinite(image), np.round(image), -1).astype(np.int16)
    path = write_raster(tmp_path / "int.tif", stored, nodata=-1, options=("INTERLEAVE=PIXEL",))
    detect_raster(path, str(tmp_path / "out.tif"), tile_size=48, precision="float32")
    scores = read_raster(tmp_path / "out.tif")[0]
    reduction = fit_from_array(stored, valid)
    assert reduction.grey_step > 0.05  # one grey level is above the fixed floor here
    direct = TileScorer(load_detector(), reduction, precision="float32")
    values = stored.astype(np.float32)
    np.testing.assert_allclose(scores[valid], direct(values, valid)[valid], atol=1e-5)
    assert direct.with_reduction(reduction).grey_step == reduction.grey_step
    unfloored = TileScorer(load_detector(), reduction, precision="float32", grey_step=0.0)
    assert np.abs(unfloored(values, valid) - direct(values, valid))[valid].max() > 1e-3
