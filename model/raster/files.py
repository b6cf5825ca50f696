"""Files behind an input raster and guards on output files: inputs are never
overwritten, outputs go to writable folders under distinct names; complex
rasters are read through a magnitude VRT."""
import os
import tempfile
import uuid
from typing import List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

from osgeo import gdal

from .errors import RasterOutputError
from .io import _open


_SIDECARS = ("", ".aux.xml", ".ovr", ".msk")
_ARCHIVES = ("/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/")


def _local_file(name: str) -> Optional[str]:
    """The file on disk behind ``name``: itself, the archive of a /vsizip/-like path,
    or None (memory and network paths)."""
    for prefix in _ARCHIVES:
        if name.startswith(prefix):
            rest = name[len(prefix):].strip("{}")
            parts = rest.split("/")
            for i in range(1, len(parts) + 1):
                candidate = "/".join(parts[:i])
                if candidate and os.path.isfile(candidate):
                    return candidate
            return None
    return None if name.startswith("/vsi") else name


def input_files(path: str) -> List[str]:
    """Every file on disk that reading the raster ``path`` involves.

    GDAL's file list (a VRT's sources, nested VRTs' too, an ENVI header, a world
    file...), the archive of a /vsizip/-like path, and the sidecars GDAL may read
    beside each of them.
    """
    names, pending = set(), [str(path)]
    while pending:  # a VRT's sources may be VRTs
        name = pending.pop()
        if name in names:
            continue
        names.add(name)
        if name == str(path) or name.lower().endswith(".vrt"):
            ds = _open(name)
            if ds is not None:
                pending += ds.GetFileList() or []
                ds = None
    files = {f for f in map(_local_file, names) if f}
    return sorted({f + s for f in files for s in _SIDECARS} |
                  {p for f in files for p in _world_files(f)})


def _world_files(path: str) -> List[str]:
    """``x.aux`` and the world files GDAL looks for beside ``x.ext`` (x.tfw, x.tifw, x.wld)."""
    stem, ext = os.path.splitext(path)
    names = [stem + ".aux", stem + ".wld"]
    if len(ext) > 2:
        names += [stem + ext[:2] + ext[-1] + "w", path + "w"]
    return names


def check_score_path(path: str, name: str = "score") -> None:
    """Refuse a score raster output whose extension is not GeoTIFF's (.tif, .tiff)."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in ("", ".tif", ".tiff"):
        raise RasterOutputError(
            f"The {name} output '{path}' has the extension '{ext}', but score rasters are "
            "written as GeoTIFF. Choose a name ending in .tif.")


def check_output_folder(dst_path: str) -> None:
    """Refuse an output whose folder does not exist."""
    folder = os.path.dirname(os.path.abspath(dst_path))
    if not os.path.isdir(folder):
        raise RasterOutputError(
            f"The output folder '{folder}' does not exist. Choose an existing folder.")


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` are one file (through symlinks and hard links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_inputs_as_outputs(outputs: Sequence[Tuple[str, str]], inputs: Sequence[str],
                             cache: Optional[dict] = None) -> None:
    """Raise :class:`RasterOutputError` when an output ``(NAME, path)`` is a file that an
    input raster reads: inputs are never overwritten. ``cache`` keeps each input's
    :func:`input_files` between calls."""
    cache = {} if cache is None else cache
    for source in inputs:
        if source not in cache:
            cache[source] = input_files(source)
        files = cache[source]
        for name, path in outputs:
            hit = next((f for f in files if path and same_file(path, f)), None)
            if hit is None:
                continue
            if _local_file(source) and same_file(hit, _local_file(source)):
                raise RasterOutputError(
                    f"The {name} output '{path}' is the input raster itself. Choose another "
                    "file name: inputs are never overwritten.")
            raise RasterOutputError(
                f"The {name} output '{path}' is the file '{hit}', which the input raster "
                f"'{source}' reads. Choose another file name: inputs are never overwritten.")


def _writable(folder: str) -> bool:
    """Whether a file can be created in ``folder`` (tried, not guessed from permissions)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        fd, probe = tempfile.mkstemp(prefix=".anomaly-write-test-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.remove(probe)
    return True


def check_output_paths(outputs: Sequence[Tuple[str, str]], inputs: Sequence[str]) -> None:
    """Refuse outputs ``(NAME, path)`` that are virtual paths, folders, each other, in a
    folder that does not exist or cannot be written, or files an input reads."""
    seen = {}
    for name, path in outputs:
        if not path:
            continue
        if path.startswith("/vsi"):
            raise RasterOutputError(
                f"The {name} output '{path}' is a virtual GDAL path. Choose a file on disk.")
        if os.path.isdir(path):
            raise RasterOutputError(
                f"The {name} output '{path}' is a folder. Choose a file name in it.")
        real = os.path.realpath(path)
        if real in seen:
            raise RasterOutputError(
                f"The {seen[real]} and {name} outputs are the same file '{path}'. Choose "
                "a different file name for each output.")
        seen[real] = name
        folder = os.path.dirname(real)
        if not os.path.isdir(folder):
            raise RasterOutputError(
                f"The folder of the {name} output, '{folder}', does not exist. Choose an "
                "existing folder or create it first.")
        if not _writable(folder):
            raise RasterOutputError(
                f"The folder of the {name} output, '{folder}', is not writable. Choose a "
                "folder where you can write.")
    refuse_inputs_as_outputs(outputs, inputs)


_COMPLEX_TYPES = (gdal.GDT_CInt16, gdal.GDT_CInt32, gdal.GDT_CFloat32, gdal.GDT_CFloat64)


def magnitude_vrt(path: str) -> Optional[str]:
    """A new in-memory (``/vsimem/``) VRT of the magnitude |z| of ``path``'s complex bands
    (GDAL's ``mod`` pixel function; other bands as they are, same grid and CRS), or
    None when no band is complex. The caller removes it with ``gdal.Unlink``."""
    ds = _open(path) if path else None
    if ds is None:
        return None
    bands = [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]
    if not any(b.DataType in _COMPLEX_TYPES for b in bands):
        return None
    parts = [f'<VRTDataset rasterXSize="{ds.RasterXSize}" rasterYSize="{ds.RasterYSize}">']
    if ds.GetProjection():
        parts.append(f"<SRS>{escape(ds.GetProjection())}</SRS>")
    gt = ds.GetGeoTransform(can_return_null=True)
    if gt:
        parts.append("<GeoTransform>" + ", ".join(repr(float(v)) for v in gt) + "</GeoTransform>")
    parts += [_vrt_band(path, i, band) for i, band in enumerate(bands, start=1)]
    parts.append("</VRTDataset>")
    ds = None
    vrt = f"/vsimem/anomaly_detector/magnitude-{uuid.uuid4().hex}.vrt"
    gdal.FileFromMemBuffer(vrt, "".join(parts).encode("utf-8"))
    return vrt


def _vrt_band(path: str, number: int, band) -> str:
    """The VRT band ``number`` reading ``band`` of ``path``: its magnitude when complex."""
    source = (f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(path)}'
              f"</SourceFilename><SourceBand>{number}</SourceBand></SimpleSource>")
    nodata = band.GetNoDataValue()
    nd = "" if nodata is None else f"<NoDataValue>{abs(nodata)!r}</NoDataValue>"
    if band.DataType in _COMPLEX_TYPES:
        return (f'<VRTRasterBand dataType="Float64" band="{number}" '
                f'subClass="VRTDerivedRasterBand">{nd}'
                "<PixelFunctionType>mod</PixelFunctionType>"
                f"<SourceTransferType>CFloat64</SourceTransferType>{source}</VRTRasterBand>")
    dtype = gdal.GetDataTypeName(band.DataType)
    return f'<VRTRasterBand dataType="{dtype}" band="{number}">{nd}{source}</VRTRasterBand>'
