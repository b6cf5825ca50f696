"""Synthetic scenes and reference results used by test modules in several folders."""

import math

import numpy as np
import pytest

from conftest import write_raster

ND = -9999.0
GT = (600000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0)

# (row slice, col slice or pixel list, score, pixel count); expected rank order A, C, B, D
BLOBS = {
    "A": dict(pixels=[(r, c) for r in range(10, 13) for c in range(10, 14)], score=9.0,
              peak=((11, 12), 10.0)),
    "B": dict(pixels=[(30, 30), (31, 31), (32, 32)], score=7.0),  # 8-connected diagonal
    "C": dict(pixels=[(50, 60), (50, 61), (51, 60), (51, 61)], score=8.0),
    "D": dict(pixels=[(5, 70)], score=6.0),
}
ORDER = ["A", "C", "B", "D"]


def synthetic_scores(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, size=(60, 80)).astype(np.float32)
    for blob in BLOBS.values():
        for r, c in blob["pixels"]:
            a[r, c] = blob["score"]
        if "peak" in blob:
            (r, c), v = blob["peak"]
            a[r, c] = v
    a[55:60, 0:10] = ND  # nodata corner
    return write_raster(tmp_path / "scores.tif", a, nodata=ND, geotransform=GT), a


def expected(name):
    blob = BLOBS[name]
    vals = [blob["score"]] * len(blob["pixels"])
    if "peak" in blob:
        vals[blob["pixels"].index(blob["peak"][0])] = blob["peak"][1]
    rows = [r for r, _ in blob["pixels"]]
    cols = [c for _, c in blob["pixels"]]
    bbox = (GT[0] + 10 * min(cols), GT[0] + 10 * (max(cols) + 1),
            GT[3] - 10 * (max(rows) + 1), GT[3] - 10 * min(rows))
    return dict(score_max=max(vals), score_mean=float(np.mean(vals)), pixels=len(vals),
                area=100.0 * len(vals), bbox=bbox)


def read_features(path):
    from osgeo import ogr
    ds = ogr.Open(str(path))
    layer = ds.GetLayer(0)
    srs = layer.GetSpatialRef()
    feats = [(f.items(), f.GetGeometryRef().GetEnvelope()) for f in layer]
    epsg = srs.GetAuthorityCode(None) if srs else None
    ds = None
    return feats, epsg


def check_features(feats, names):
    assert [f[0]["rank"] for f in feats] == list(range(1, len(names) + 1))
    for (attrs, env), name in zip(feats, names):
        exp = expected(name)
        assert attrs["pixels"] == exp["pixels"], name
        assert math.isclose(attrs["score_max"], exp["score_max"], rel_tol=1e-6)
        assert math.isclose(attrs["score_mean"], exp["score_mean"], rel_tol=1e-6)
        assert math.isclose(attrs["area"], exp["area"])
        assert env == pytest.approx(exp["bbox"])


def numpy_rx(a, valid, bands=None):
    """Reference RX: plain Mahalanobis distance with np.cov and pinv."""
    sel = [b - 1 for b in bands] if bands else list(range(a.shape[0]))
    x = a[sel].astype(np.float64)
    xv = x[:, valid]
    mu = xv.mean(axis=1)
    p = np.linalg.pinv(np.atleast_2d(np.cov(xv)))
    c = x.reshape(len(sel), -1) - mu[:, None]
    d = np.sqrt(np.maximum(np.einsum("in,ij,jn->n", c, p, c), 0))
    return d.reshape(a.shape[1:])


def rx_scene(shape, seed=0):
    """Two correlated bands around 100 with a bright 3 x 4 target."""
    rng = np.random.default_rng(seed)
    a = rng.normal(100, 5, size=shape).astype(np.float32)
    a[1] = 0.5 * a[0] + rng.normal(0, 1, size=shape[1:])
    a[:, 20:23, 30:34] += 40
    return a
