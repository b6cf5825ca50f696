"""Peak points: one point per anomaly polygon, at its highest-scoring pixel, with the
polygon's attributes (rank, scores, lon/lat, ...), for GPS receivers and field work."""

import os

from osgeo import ogr

from ..raster.errors import RasterInputError
from ..raster.output import WriteFailures
from ..raster.progress import CancelFn
from .attributes import FIELDS
from .output import write_vector


def write_peak_points(polygons_path: str, points_path: str, *,
                      is_cancelled: CancelFn = None) -> int:
    """Write the peaks of the polygons in ``polygons_path`` (as written by
    :func:`.polygons.polygonize_scores`) to ``points_path``, in rank order; returns how
    many. The format follows the extension of ``points_path`` (GeoPackage by default)."""
    source = ogr.Open(str(polygons_path))
    if source is None:
        raise RasterInputError(f"Could not open the anomaly polygons '{polygons_path}'.")
    polygons = source.GetLayer(0)
    features = sorted(polygons, key=lambda feature: feature.GetField("rank"))
    name = os.path.splitext(os.path.basename(str(points_path)))[0] or "anomaly_peaks"

    def write(layer) -> None:
        definition = layer.GetLayerDefn()
        for feature in features:
            point = ogr.Feature(definition)
            for field_name, _ in FIELDS:
                point.SetField(field_name, feature.GetField(field_name))
            peak = ogr.Geometry(ogr.wkbPoint)
            peak.AddPoint_2D(feature.GetField("peak_x"), feature.GetField("peak_y"))
            point.SetGeometry(peak)
            layer.CreateFeature(point)

    failures = WriteFailures(str(points_path))
    with failures.watch():
        write_vector(str(points_path), name, polygons.GetSpatialRef(), write, failures,
                     is_cancelled, geometry_type=ogr.wkbPoint)
    return len(features)
