"""Vector outputs: the OGR driver of a file name and a layer written completely or
not at all."""

import os
from typing import Optional

from osgeo import gdal, ogr

from ..raster.errors import RasterInputError, RasterOutputError
from ..raster.output import atomic_output, gdal_quiet
from ..raster.progress import CancelFn, check_cancelled
from .attributes import FIELDS

OGR_DRIVERS = {
    ".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON",
    ".fgb": "FlatGeobuf", ".gml": "GML", ".kml": "KML", ".sqlite": "SQLite", ".csv": "CSV",
    ".tab": "MapInfo File", ".mif": "MapInfo File",
}

LAYER_OPTIONS = {"GPKG": ["SPATIAL_INDEX=YES"], "CSV": ["GEOMETRY=AS_WKT"]}
"""Layer creation options per driver (a CSV keeps its polygons as WKT)."""


def vector_driver(path: str) -> str:
    """The OGR driver of a vector output, from its extension (GeoPackage without one)."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext and ext not in OGR_DRIVERS:
        raise RasterOutputError(
            f"The vector output '{path}' has the extension '{ext}', which is not a vector "
            f"format. Choose a name ending in {', '.join(sorted(set(OGR_DRIVERS)))}.")
    return OGR_DRIVERS.get(ext, "GPKG")


def write_vector(dst_path: str, name: str, srs, write, failures,
                 is_cancelled: CancelFn = None, geometry_type: int = ogr.wkbPolygon) -> None:
    """Create the layer ``name`` of ``geometry_type`` with :data:`FIELDS` in ``dst_path``,
    fill it with ``write(layer)`` and move it into place when complete (with every
    sidecar file)."""
    driver_name = vector_driver(dst_path)
    driver = ogr.GetDriverByName(driver_name)
    dataset = layer = None
    with atomic_output(dst_path, several_files=True,
                       remove_previous=lambda path: _remove_vector(driver, path)) as partial:
        try:
            dataset = driver.CreateDataSource(partial)
            if dataset is None:
                raise RasterOutputError(
                    f"Could not create the output file '{dst_path}'. Check that the folder "
                    "exists and is writable.")
            layer = dataset.CreateLayer(name, srs=srs, geom_type=geometry_type,
                                        options=LAYER_OPTIONS.get(driver_name, []))
            for field_name, field_type in FIELDS:
                if driver_name == "MapInfo File" and field_type == ogr.OFTInteger64:
                    field_type = ogr.OFTReal  # MapInfo has no 64-bit integers
                layer.CreateField(ogr.FieldDefn(field_name, field_type))
            layer.StartTransaction()
            write(layer)
            layer.CommitTransaction()
            layer = dataset = None
            check_cancelled(is_cancelled)
            failures.check(dst_path)
        finally:
            with gdal_quiet():  # a failed write fails again when closed: said once
                layer = dataset = None  # noqa: F841


def _remove_vector(driver, dst_path: str) -> None:
    """Remove the output ``dst_path`` with all its files (e.g. a Shapefile's .dbf/.shx)."""
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        driver.DeleteDataSource(dst_path)
    except RuntimeError:  # not a dataset of this format: removed below
        pass
    finally:
        gdal.PopErrorHandler()
    if os.path.exists(dst_path):
        os.remove(dst_path)


def count_polygons(path: str, layer_name: Optional[str] = None) -> int:
    """Number of features in a polygon output written by :func:`polygonize_scores`."""
    ds = ogr.Open(str(path))
    if ds is None:
        raise RasterInputError(f"Could not open the vector file '{path}'.")
    layer = ds.GetLayerByName(layer_name) if layer_name else ds.GetLayer(0)
    return int(layer.GetFeatureCount())
