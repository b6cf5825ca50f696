"""Opening and reading rasters: validation, band selection, signed bytes."""

import os

import numpy as np
import pytest

from anomaly_detector.model.raster.errors import ParameterError, RasterInputError
from anomaly_detector.model.raster.io import (BufferPool, DatasetPerThread, aligned_windows,
                                              open_dataset, open_raster_checked, parse_bands,
                                              read_ahead, read_window)
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


def _covers_once(windows, width, height):
    count = np.zeros((height, width), int)
    for x, y, w, h in windows:
        count[y:y + h, x:x + w] += 1
    return (count == 1).all()


def test_aligned_windows_are_whole_blocks_that_cover_the_raster_once(tmp_path):
    image = np.zeros((2, 70, 100), np.float32)
    tiled = open_dataset(write_raster(tmp_path / "tiled.tif", image, options=(
        "TILED=YES", "BLOCKXSIZE=16", "BLOCKYSIZE=16")))[0]
    windows = aligned_windows(tiled, 16 * 16 * 3, multiple=2)
    assert _covers_once(windows, 100, 70)
    assert all(x % 16 == 0 and y % 16 == 0 and h == min(16, 70 - y) for x, y, _, h in windows)
    assert {w for x, _, w, _ in windows if x + w < 100} == {48}  # three whole tiles wide
    striped = open_dataset(write_raster(tmp_path / "striped.tif", image, options=(
        "TILED=NO", "BLOCKYSIZE=4")))[0]
    windows = aligned_windows(striped, 100 * 10, multiple=2)
    assert _covers_once(windows, 100, 70)
    assert all(w == 100 and y % 8 == 0 for _, y, w, _ in windows)  # full-width, 8 rows
    # no whole block fits, or blocks off the grid of ``multiple``: squares on that grid
    for ds, pixels, multiple in ((tiled, 100, 2), (striped, 10 ** 4, 3)):
        windows = aligned_windows(ds, pixels, multiple)
        assert _covers_once(windows, 100, 70)
        assert all(x % multiple == 0 and y % multiple == 0 for x, y, _, _ in windows)


def test_read_ahead_keeps_the_order_with_several_readers(tmp_path):
    image = np.arange(3 * 64 * 40, dtype=np.float32).reshape(3, 64, 40)
    path = write_raster(tmp_path / "a.tif", image)
    info = open_raster_checked(path)
    datasets = DatasetPerThread(path)
    rows = [(0, y, 40, 8) for y in range(0, 64, 8)]
    blocks = list(read_ahead(rows, lambda w: read_window(datasets(), info, *w)[0], readers=2))
    datasets.close()
    assert len(blocks) == 8
    for (x, y, w, h), block in zip(rows, blocks):
        np.testing.assert_array_equal(block, image[:, y:y + h])


def test_windows_are_read_into_the_memory_handed_back(tmp_path):
    image = np.arange(3 * 32 * 24, dtype=np.int16).reshape(3, 32, 24)
    path = write_raster(tmp_path / "a.tif", image)
    one_band = write_raster(tmp_path / "b.tif", image[0])
    ds, info = open_dataset(path)
    buffers = BufferPool()
    first, valid = read_window(ds, info, 0, 0, 24, 16, buffers)
    np.testing.assert_array_equal(first, image[:, :16])
    assert first.dtype == np.float32 and valid.all()
    buffers.give(first)
    second, _ = read_window(ds, info, 0, 16, 24, 16, buffers)
    assert second is first  # the same memory, now holding the second window
    np.testing.assert_array_equal(second, image[:, 16:])
    assert read_window(ds, info, 0, 0, 24, 16, buffers)[0] is not second  # still lent
    ds, info = open_dataset(one_band)
    single, _ = read_window(ds, info, 0, 0, 24, 16, buffers)
    np.testing.assert_array_equal(single, image[:1, :16])
    buffers.give(single)
    assert read_window(ds, info, 0, 16, 24, 16, buffers)[0] is single


def test_buffer_pool_keeps_only_its_own_arrays_of_the_shape_in_demand():
    buffers = BufferPool()
    taken = buffers.take((2, 4, 4))
    buffers.give(np.zeros((2, 4, 4), np.float32))  # not from the pool: not kept
    assert buffers.take((2, 4, 4)) is not taken
    buffers.give(taken)
    assert buffers.take((2, 4, 4)) is taken
    buffers.give(taken)
    other = buffers.take((2, 8, 8))  # another shape: the free arrays of the first go
    buffers.give(other)
    assert buffers.take((2, 4, 4)) is not taken
    assert buffers.take((2, 8, 8)) is not other
