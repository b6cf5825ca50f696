"""The detector over raster files: data types, band counts, tiles, scales, nodata, device."""

import numpy as np
import pytest
from osgeo import gdal

from anomaly_detector.model.raster.output import NODATA
from anomaly_detector.model.nn.detector import TileScorer, detect_raster, resolve_device
from anomaly_detector.model.nn.features import fit_from_array
from anomaly_detector.model.nn.weights import load_detector
from conftest import read_raster, targets_scene, write_raster


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "float32", "float64"])
def test_detect_accepts_every_common_data_type(tmp_path, dtype):
    image, targets = targets_scene()
    src = write_raster(tmp_path / "in.tif", np.clip(image, 0, 255).astype(dtype))
    detect_raster(src, str(tmp_path / "out.tif"), device="cpu")
    scores, gt, wkt, nodata, size = read_raster(tmp_path / "out.tif")
    assert size == (110, 90) and scores.dtype == np.float32
    assert np.isfinite(scores).all() and 0 <= scores.min() and scores.max() <= 1
    for row, col in targets:  # every target is in the top 2 % of the map
        assert scores[row, col] > np.quantile(scores, 0.98)


@pytest.mark.parametrize("bands", [1, 3, 4, 13, 200, 500])
def test_detect_accepts_any_band_count(tmp_path, bands):
    image, _ = targets_scene(bands=bands, height=40, width=36)
    src = write_raster(tmp_path / "in.tif", image.astype(np.float32))
    detect_raster(src, str(tmp_path / "out.tif"), device="cpu")
    scores = read_raster(tmp_path / "out.tif")[0]
    assert scores.shape == (40, 36) and np.isfinite(scores).all()


def test_a_grey_image_saved_in_three_integer_bands_scores_as_the_grey_image(tmp_path):
    image, _ = targets_scene(bands=1)
    grey = np.clip(np.round(image), 0, 255)
    rng = np.random.default_rng(4)  # the copies differ by one grey level here and there
    copies = grey + rng.choice([-1.0, 0.0, 1.0], (3,) + grey.shape[1:], p=[0.1, 0.8, 0.1])
    scores = {}
    for name, array, dtype in [("grey", grey, "uint8"), ("copies", copies, "uint8"),
                               ("float", copies, "float32")]:
        src = write_raster(tmp_path / f"{name}.tif", array.astype(dtype))
        detect_raster(src, str(tmp_path / f"{name}-scores.tif"), precision="float32")
        scores[name] = read_raster(tmp_path / f"{name}-scores.tif")[0]
    assert np.abs(scores["copies"] - scores["grey"]).max() < 0.05
    # float bands keep their differences as components: other scores
    assert np.abs(scores["float"] - scores["grey"]).max() > 0.1


def test_single_tile_equals_direct_network_run(tmp_path):
    image, _ = targets_scene()
    src = write_raster(tmp_path / "in.tif", image.astype(np.float32))
    detect_raster(src, str(tmp_path / "out.tif"), tile_size=512, overlap=64)
    tiled = read_raster(tmp_path / "out.tif")[0]
    image = image.astype(np.float32)
    direct = TileScorer(load_detector(), fit_from_array(image))(image)
    np.testing.assert_allclose(tiled, direct, atol=1e-5)


@pytest.mark.parametrize("tile_size", [48, 64, 100])
def test_tiles_are_seam_free(tmp_path, tile_size):
    image, _ = targets_scene(height=150, width=131)
    src = write_raster(tmp_path / "in.tif", image.astype(np.float32))
    overlap = load_detector().receptive_radius + 2
    detect_raster(src, str(tmp_path / "one.tif"), tile_size=1024, overlap=overlap)
    detect_raster(src, str(tmp_path / "many.tif"), tile_size=tile_size, overlap=overlap)
    one, many = read_raster(tmp_path / "one.tif")[0], read_raster(tmp_path / "many.tif")[0]
    assert np.abs(one - many).max() < 1e-5


@pytest.mark.parametrize("scale", [2, 4])
def test_coarser_analysis_is_seam_free_on_the_input_grid(tmp_path, scale):
    image, targets = targets_scene(height=150, width=131)
    for row, col in targets:  # targets of a few pixels, as the coarser scales need
        image[:, row - 3:row + 4, col - 3:col + 4] += 60
    src = write_raster(tmp_path / "in.tif", image.astype(np.float32))
    one = detect_raster(src, str(tmp_path / "one.tif"), tile_size=1024, scale=scale)
    detect_raster(src, str(tmp_path / "many.tif"), tile_size=32, scale=scale)  # 2+ tiles
    assert one.scale == scale and one.overlap == 64 * scale
    one, many = read_raster(tmp_path / "one.tif"), read_raster(tmp_path / "many.tif")
    assert one[4] == (131, 150) and one[1] == gdal.Open(src).GetGeoTransform()
    assert np.abs(one[0] - many[0]).max() < 1e-5
    for row, col in targets:
        assert one[0][row, col] > np.quantile(one[0], 0.97)


def test_unknown_analysis_scale_is_refused(tmp_path):
    src = write_raster(tmp_path / "in.tif", targets_scene()[0].astype(np.float32))
    with pytest.raises(ValueError, match="analysis scale must be one of 1, 2, 4"):
        detect_raster(src, str(tmp_path / "out.tif"), scale=3)
    assert not (tmp_path / "out.tif").exists()


def test_nodata_and_grid_are_kept(tmp_path):
    image, _ = targets_scene(bands=4)
    image[:, :10, :12] = -1
    image[2, 50, 50] = np.nan
    src = write_raster(tmp_path / "in.tif", image.astype(np.float32), nodata=-1)
    detect_raster(src, str(tmp_path / "out.tif"))
    scores, gt, wkt, nodata, size = read_raster(tmp_path / "out.tif")
    source = gdal.Open(src)
    assert gt == source.GetGeoTransform() and wkt == source.GetProjection() and nodata == NODATA
    expected_invalid = np.zeros(scores.shape, bool)
    expected_invalid[:10, :12] = expected_invalid[50, 50] = True
    np.testing.assert_array_equal(scores == NODATA, expected_invalid)
    assert np.isfinite(scores).all() and (scores[~expected_invalid] >= 0).all()


def test_device_choice():
    assert resolve_device("auto") in ("cpu", "cuda")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("tpu")
