"""Quick-look PNG of a score raster with anomaly polygon outlines (GDAL + numpy only).

Usage: python tools/quicklook.py SCORE.tif POLYGONS.gpkg OUT.png [INPUT.tif]
With INPUT.tif the picture shows the input (grey) and the score side by side.
"""

import sys

import numpy as np
from osgeo import gdal, ogr

SCALE = 2
# anchor colours of a dark-to-bright "inferno"-like colour ramp
RAMP = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                 [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=np.float64)
OUTLINE = np.array([0, 255, 64], dtype=np.uint8)


def stretch(a, valid, lo_pct=2.0, hi_pct=99.8):
    if not valid.any():
        return np.zeros(a.shape)
    lo, hi = np.percentile(a[valid], [lo_pct, hi_pct])
    return np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)


def colourize(t):
    x = t * (len(RAMP) - 1)
    i = np.clip(np.floor(x).astype(int), 0, len(RAMP) - 2)
    f = (x - i)[..., None]
    return (RAMP[i] * (1 - f) + RAMP[i + 1] * f).astype(np.uint8)


def outlines(poly_path, ds, scale):
    """Boolean (H*scale, W*scale) mask of polygon boundaries."""
    h, w = ds.RasterYSize * scale, ds.RasterXSize * scale
    gt = list(ds.GetGeoTransform())
    gt[1] /= scale
    gt[2] /= scale
    gt[4] /= scale
    gt[5] /= scale
    mem = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Byte)
    mem.SetGeoTransform(gt)
    mem.SetProjection(ds.GetProjection())
    src = ogr.Open(poly_path)
    layer = src.GetLayer(0)
    line_ds = ogr.GetDriverByName("Memory").CreateDataSource("l")
    lines = line_ds.CreateLayer("l", srs=layer.GetSpatialRef())
    for f in layer:
        g = f.GetGeometryRef()
        if g is not None:
            nf = ogr.Feature(lines.GetLayerDefn())
            nf.SetGeometry(g.Boundary())
            lines.CreateFeature(nf)
    gdal.RasterizeLayer(mem, [1], lines, burn_values=[1], options=["ALL_TOUCHED=TRUE"])
    m = mem.ReadAsArray().astype(bool)
    # thicken to two pixels so that the outlines stay visible
    m[1:, :] |= m[:-1, :].copy()
    m[:, 1:] |= m[:, :-1].copy()
    lines = line_ds = layer = src = None
    return m


def main(score_path, poly_path, out_png, input_path=None):
    ds = gdal.Open(score_path)
    band = ds.GetRasterBand(1)
    a = band.ReadAsArray().astype(np.float64)
    nd = band.GetNoDataValue()
    valid = np.isfinite(a) & ((a != nd) if nd is not None else True)
    rgb = colourize(stretch(a, valid))
    rgb[~valid] = 96
    panels = [rgb]
    if input_path:
        ids = gdal.Open(input_path)
        x = ids.GetRasterBand(1).ReadAsArray().astype(np.float64)
        g = (stretch(x, np.isfinite(x), 0.5, 99.5) * 255).astype(np.uint8)
        panels.insert(0, np.repeat(g[..., None], 3, axis=2))
    edge = outlines(poly_path, ds, SCALE)
    ups = []
    for p in panels:
        up = np.repeat(np.repeat(p, SCALE, axis=0), SCALE, axis=1)
        up[edge] = OUTLINE
        ups.append(up)
    gap = np.full((ups[0].shape[0], 8, 3), 255, np.uint8)
    img = ups[0] if len(ups) == 1 else np.concatenate([ups[0], gap, ups[1]], axis=1)
    mem = gdal.GetDriverByName("MEM").Create("", img.shape[1], img.shape[0], 3, gdal.GDT_Byte)
    for i in range(3):
        mem.GetRasterBand(i + 1).WriteArray(img[..., i])
    gdal.GetDriverByName("PNG").CreateCopy(out_png, mem, options=["ZLEVEL=9"])
    mem = None
    aux = out_png + ".aux.xml"
    import os
    if os.path.exists(aux):
        os.remove(aux)


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    main(*sys.argv[1:])
