"""How an output was made, written into it: score rasters and polygon layers record the
plugin version, the algorithm, its parameters, the threshold, the device and the date
(readable with ``gdalinfo`` / ``ogrinfo`` and in QGIS's layer properties)."""

import configparser
import datetime
import json
from pathlib import Path

from osgeo import gdal

_METADATA = Path(__file__).resolve().parent.parent / "metadata.txt"


def plugin_version() -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(_METADATA, encoding="utf-8")
    return parser.get("general", "version", fallback="unknown")


def provenance(algorithm_id: str, parameters: dict, **facts) -> dict:
    """Metadata items (str -> str) describing one run of ``algorithm_id``."""
    items = {"ANOMALY_DETECTOR_VERSION": plugin_version(), "ALGORITHM": algorithm_id,
             "CREATED": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "PARAMETERS": json.dumps({k: str(v) for k, v in sorted(parameters.items())})}
    items.update({key.upper(): str(value) for key, value in facts.items() if value is not None})
    return items


def record_in_raster(path: str, items: dict, description: str) -> None:
    """Add ``items`` to a (closed) score raster's metadata and name its band."""
    dataset = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_UPDATE)
    dataset.SetMetadata({**(dataset.GetMetadata() or {}), **items})
    dataset.GetRasterBand(1).SetDescription(description)
    dataset = None


def record_in_vector(path: str, items: dict) -> None:
    """Add ``items`` to a GeoPackage's metadata (other vector formats have no place for it)."""
    if not path.lower().endswith(".gpkg"):
        return
    dataset = gdal.OpenEx(path, gdal.OF_VECTOR | gdal.OF_UPDATE)
    dataset.SetMetadata({**(dataset.GetMetadata() or {}), **items})
    dataset = None
