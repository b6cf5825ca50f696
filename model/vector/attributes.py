"""Attributes of each anomaly polygon: score, size, area, centroid, peak and its
longitude / latitude, ellipsoidal area and scene-relative share."""

import numpy as np
from osgeo import gdal, ogr, osr

from .groups import Ranked

FIELDS = (("rank", ogr.OFTInteger), ("score_max", ogr.OFTReal), ("score_mean", ogr.OFTReal),
          ("pixels", ogr.OFTInteger64), ("area", ogr.OFTReal), ("centroid_x", ogr.OFTReal),
          ("centroid_y", ogr.OFTReal), ("peak_x", ogr.OFTReal), ("peak_y", ogr.OFTReal),
          ("lon", ogr.OFTReal), ("lat", ogr.OFTReal), ("area_m2", ogr.OFTReal),
          ("top_share", ogr.OFTReal))
"""Attribute fields of every polygon output, in order."""

NO_GEOTRANSFORM = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
"""Grid of a raster without georeferencing, as QGIS shows it (y from -height to 0)."""


def _apply_transformer(geom, transformer) -> None:
    """Move every vertex of polygon ``geom`` (in :data:`NO_GEOTRANSFORM` units) through
    ``transformer`` (pixel, line -> map coordinates)."""
    for r in range(geom.GetGeometryCount()):
        ring = geom.GetGeometryRef(r)
        points = [(p[0], -p[1]) for p in ring.GetPoints()]
        moved, _ = transformer.TransformPoints(0, points)
        for i, p in enumerate(moved):
            ring.SetPoint_2D(i, p[0], p[1])


def _wgs84_and_equal_area(srs):
    """Transformations from the layer's CRS to WGS 84 (lon, lat) and to an equal-area
    projection on the WGS 84 ellipsoid (for ellipsoidal areas); (None, None) without CRS."""
    if srs is None:
        return None, None
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    equal_area = osr.SpatialReference()
    equal_area.ImportFromProj4("+proj=cea +lon_0=0 +lat_ts=0 +datum=WGS84 +units=m +no_defs")
    equal_area.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(srs, wgs84), osr.CoordinateTransformation(srs, equal_area)


def _pixel_point(gt, transformer, row: int, col: int):
    """The centre of pixel (row, col) as an OGR point in the layer's coordinates."""
    point = ogr.Geometry(ogr.wkbPoint)
    if transformer is not None:  # GCPs: through the same transformer as the polygons
        moved, _ = transformer.TransformPoints(0, [(col + 0.5, row + 0.5)])
        x, y = moved[0][0], moved[0][1]
    else:
        x = gt[0] + (col + 0.5) * gt[1] + (row + 0.5) * gt[2]
        y = gt[3] + (col + 0.5) * gt[4] + (row + 0.5) * gt[5]
    point.AddPoint_2D(float(x), float(y))
    return point


def layer_srs(info):
    """The polygons' CRS: the raster's, or that of its GCPs; None without one."""
    if not (info.projection_wkt or info.gcp_wkt):
        return None
    srs = osr.SpatialReference()
    srs.ImportFromWkt(info.projection_wkt or info.gcp_wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def write_features(out_layer, polygons, fid_of_rank: np.ndarray, ranked: Ranked,
                   shares: np.ndarray, dataset, info, gt, srs) -> None:
    """Write the kept groups' polygons (from layer ``polygons``) in rank order."""
    groups = ranked.groups
    to_wgs84, to_equal_area = _wgs84_and_equal_area(srs)
    # GCP-georeferenced: vertices through GDAL's GCP transformer, as QGIS warps it
    transformer = gdal.Transformer(dataset, None, []) if info.gcps else None
    for i in range(len(groups.ids)):
        source = polygons.GetFeature(int(fid_of_rank[i + 1]))  # alive while cloning
        geom = source.GetGeometryRef().Clone()
        if transformer is not None:
            _apply_transformer(geom, transformer)
        pixels = int(groups.pixels[i])
        centroid = geom.Centroid()
        feat = ogr.Feature(out_layer.GetLayerDefn())
        feat.SetField("rank", i + 1)
        feat.SetField("score_max", float(groups.peak[i]))
        feat.SetField("score_mean", float(groups.score_sum[i] / pixels))
        feat.SetField("pixels", pixels)
        feat.SetField("area", float(geom.GetArea() if transformer else pixels * info.pixel_area))
        feat.SetField("centroid_x", float(centroid.GetX()))
        feat.SetField("centroid_y", float(centroid.GetY()))
        peak = _pixel_point(gt, transformer, *divmod(int(groups.peak_at[i]), info.width))
        feat.SetField("peak_x", peak.GetX())
        feat.SetField("peak_y", peak.GetY())
        feat.SetField("top_share", float(shares[i]))
        if to_wgs84 is not None:
            peak.Transform(to_wgs84)
            feat.SetField("lon", peak.GetX())
            feat.SetField("lat", peak.GetY())
            metric = geom.Clone()
            metric.Transform(to_equal_area)
            feat.SetField("area_m2", metric.GetArea())
        feat.SetGeometry(geom)
        out_layer.CreateFeature(feat)
