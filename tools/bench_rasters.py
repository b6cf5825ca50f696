"""Synthetic rasters of ``make bench``, written block of rows by block of rows.

* :func:`write_scene`: correlated spectra (a few smooth endmembers mixed per band) with
  noise and a sparse grid of small bright targets, like multi- and hyperspectral imagery;
* :func:`write_speckle`: a smooth backscatter field times exponential (one-look) speckle,
  independent per band, with a few bright point targets, like SAR intensities;
* :func:`write_noise`: independent uniform noise, the worst case for polygons.

``LAYOUTS`` are the GeoTIFF layouts of the ``qgis_process`` cases: band- or
pixel-interleaved, DEFLATE or ZSTD, striped or tiled.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from osgeo import gdal, osr

GDAL_TYPES = {"uint8": gdal.GDT_Byte, "int16": gdal.GDT_Int16, "uint16": gdal.GDT_UInt16,
              "float32": gdal.GDT_Float32}
TILED = ("TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256")
LAYOUTS = {
    "band-interleaved, DEFLATE, tiled 256": ("INTERLEAVE=BAND", "COMPRESS=DEFLATE") + TILED,
    "pixel-interleaved, ZSTD, striped": ("INTERLEAVE=PIXEL", "COMPRESS=ZSTD"),
    "pixel-interleaved, ZSTD, tiled 256": ("INTERLEAVE=PIXEL", "COMPRESS=ZSTD") + TILED,
    "band-interleaved, DEFLATE, striped": ("INTERLEAVE=BAND", "COMPRESS=DEFLATE"),
}
ROWS = 256  # rows generated at once: whole tiles of the tiled layouts


def _utm33() -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    return srs.ExportToWkt()


def _create(path: Path, bands: int, dtype: str, width: int, height: int, options):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), width, height, bands,
                                              GDAL_TYPES[dtype], list(options))
    ds.SetGeoTransform((500000.0, 1.0, 0.0, 4100000.0, 0.0, -1.0))
    ds.SetProjection(_utm33())
    return ds


def _write_blocks(path: Path, bands: int, dtype: str, width: int, height: int, options,
                  rows: int, block) -> Path:
    """Write ``block(y0, h) -> (bands, h, width)`` for each block of ``rows`` rows, all
    bands at once (whole blocks of a pixel-interleaved file are compressed once)."""
    ds = _create(path, bands, dtype, width, height, options)
    for y0 in range(0, height, rows):
        ds.WriteArray(block(y0, min(rows, height - y0)).astype(dtype), 0, y0)
    ds.FlushCache()
    ds = None
    return path


def write_scene(path: Path, bands: int, dtype: str, width: int, height: int, *,
                options=("TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "BIGTIFF=IF_NEEDED"),
                rows: int = 512, seed: int = 0) -> Path:
    """A textured scene with small bright targets; never more than ``rows`` rows in memory."""
    top = {"uint8": 255, "int16": 20000, "uint16": 60000}[dtype]
    rng = np.random.default_rng(seed)
    # spectra: a few smooth endmembers mixed per band (correlated, like real imagery)
    endmembers = min(bands, 6)
    mix = np.abs(rng.normal(size=(bands, endmembers))) + 0.2
    mix /= mix.sum(axis=1, keepdims=True)
    noise = rng.normal(size=(rows, width)).astype(np.float32)
    xs = np.arange(width, dtype=np.float32)

    def block(y0, h):
        yy = (y0 + np.arange(h, dtype=np.float32))[:, None]
        layers = np.stack([np.sin(xs[None] / (17 + 7 * e) + yy / (23 + 5 * e) + e)
                           for e in range(endmembers)])  # (E, h, w)
        values = np.tensordot(mix, layers, axes=1)  # (B, h, w)
        values = 0.5 + 0.3 * values + 0.03 * np.roll(noise[:h], y0 % 97, axis=1)[None]
        for ty in range(7, h, 211):  # a sparse grid of 3x3 bright targets
            values[:, ty:ty + 3, 5::331][..., :3] = 0.97
        return np.clip(values * top, 0, top)
    return _write_blocks(path, bands, dtype, width, height, options, rows, block)


def write_speckle(path: Path, bands: int, width: int, height: int, *, options=TILED,
                  seed: int = 1) -> Path:
    """UInt16 SAR-like intensities: a smooth backscatter field (correlated between bands)
    times one-look speckle (exponential, independent per band), with bright point targets."""
    rng = np.random.default_rng(seed)
    gain = rng.uniform(0.5, 1.5, size=(bands, 1, 1))
    xs = np.arange(width)[None]

    def block(y0, h):
        yy = (y0 + np.arange(h))[:, None]
        field = 1.0 + 0.6 * np.sin(xs / 97.0) * np.cos(yy / 131.0) + 0.3 * np.sin((xs + yy) / 41.0)
        values = 800.0 * gain * field[None] * rng.exponential(size=(bands, h, width))
        for ty in range(11, h, 173):  # 2 x 2 bright targets (ships, vehicles)
            values[:, ty:ty + 2, 13::257] *= 25.0
        return np.clip(values, 0, 65535)
    return _write_blocks(path, bands, "uint16", width, height, options, ROWS, block)


def write_noise(path: Path, bands: int, dtype: str, width: int, height: int, *,
                options=TILED, seed: int = 2) -> Path:
    """Independent uniform noise over the type's range (``float32``: [0, 1))."""
    rng = np.random.default_rng(seed)
    top = {"uint8": 256, "uint16": 65536, "float32": 1.0}[dtype]

    def block(y0, h):
        return rng.random((bands, h, width), dtype=np.float32) * top
    return _write_blocks(path, bands, dtype, width, height, options, ROWS, block)
