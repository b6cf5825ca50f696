"""Opening and reading rasters: validation, band selection, signed bytes."""

import os

import numpy as np
import pytest

from anomaly_detector.model.raster.errors import ParameterError, RasterInputError
from anomaly_detector.model.raster.io import (open_dataset, open_raster_checked, parse_bands,
                                              read_window)
from conftest import write_raster


def test_model_package_imports_without_qgis():
    import subprocess
    import sys
    code = ("import sys; import anomaly_detector.model.raster.pipeline, "
            "anomaly_detector.model.classic.rx, anomaly_detector.model.vector.polygons; "
            "assert not any(m == 'qgis' or m.startswith('qgis.') for m in sys.modules); "
            "assert 'torch' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr


def test_open_raster_checked_ok(tmp_path):
    a = np.zeros((3, 7, 9), np.int16)
    p = write_raster(tmp_path / "a.tif", a, nodata=-1)
    info = open_raster_checked(p, [3, 1])
    assert (info.width, info.height, info.band_count, info.bands) == (9, 7, 3, [3, 1])
    assert info.nodata == [-1.0, -1.0] and info.dtypes == ["Int16", "Int16"]
    assert info.geotransform[1] == 10.0 and "32633" in info.projection_wkt
    assert open_raster_checked(p, None).bands == [1, 2, 3]


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"),
    ("empty", r"empty \(0 bytes\)"),
    ("text", "not a raster"),
    ("band", "Band 4 does not exist"),
])
def test_open_raster_checked_errors(tmp_path, case, words):
    p = tmp_path / "x.tif"
    bands = None
    if case == "empty":
        p.write_bytes(b"")
    elif case == "text":
        p.write_text("this is not a raster\n")
    elif case == "band":
        write_raster(p, np.zeros((3, 4, 4), np.float32))
        bands = [1, 4]
    with pytest.raises(RasterInputError, match=words):
        open_raster_checked(str(p), bands)


def test_signed_bytes_are_read_with_their_sign(tmp_path):
    values = np.array([[-128, -1, 0], [1, 100, 127]], dtype=np.int8)
    path = write_raster(tmp_path / "int8.tif", values, dtype="Int8")
    ds, info = open_dataset(path)
    data, valid = read_window(ds, info, 0, 0, 3, 2)
    assert info.dtypes == ["Int8"] and valid.all()
    np.testing.assert_array_equal(data[0], values.astype(np.float32))


def test_band_lists_that_are_not_band_numbers_are_parameter_errors():
    assert parse_bands("3, 1") == [3, 1] and parse_bands("") is None
    with pytest.raises(ParameterError, match="whole numbers"):
        parse_bands("1, x")
    with pytest.raises(ParameterError, match="more than once"):
        parse_bands([2, 2])
