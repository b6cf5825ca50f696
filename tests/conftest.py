"""Shared fixtures and helpers for the test suite (reusable by every test file).

* ``provider`` (session): the plugin loaded through ``classFactory`` and
  ``initProcessing`` once per session, Processing initialised; returns the
  registered ``anomaly`` provider.
* ``run_qgis_process(args)``: runs ``qgis_process.bin`` with the plugin from
  this checkout enabled, in a private profile; returns ``CompletedProcess``.
* ``write_raster(path, array, ...)``: writes a georeferenced GeoTIFF (any numpy dtype or
  GDAL type name, Int8 and complex included; other drivers and creation options).
* ``make_bad_input(path, case)``: a missing, text, empty or all-nodata input.
* ``read_raster(path)``: ``(array, geotransform, wkt, nodata)`` of band 1..n.
* ``vector_rows(path)``: ``{fid: attributes}`` of a vector file's first layer (OGR).
* ``targets_scene(bands, height, width)``: a textured image with three small bright
  targets, and their (row, col).
* ``tampered_weights`` (fixture): a copy of the bundled weights with one byte flipped.
"""

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"
PYPATH = BUILD / "pythonpath"
QGIS_PYTHON_PLUGINS = "/usr/share/qgis/python/plugins"
DATA = Path(__file__).resolve().parent / "data"
DEFAULT_GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)
DEFAULT_EPSG = 32633


def _ensure_plugin_link():
    PYPATH.mkdir(parents=True, exist_ok=True)
    link = PYPATH / "anomaly_detector"
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)


_ensure_plugin_link()
for _p in (str(PYPATH), QGIS_PYTHON_PLUGINS):
    if _p not in sys.path:
        sys.path.insert(0, _p)


# --------------------------------------------------------------------------
# raster helpers

# numpy dtype name -> GDAL type name ("int8" is a Byte band with PIXELTYPE=SIGNEDBYTE, GDAL 3.6)
_GDAL_TYPE_OF = {"float32": "Float32", "float64": "Float64", "uint8": "Byte", "int8": "Int8",
                 "uint16": "UInt16", "int16": "Int16", "int32": "Int32", "uint32": "UInt32",
                 "complex64": "CFloat32", "complex128": "CFloat64"}


def _block_size(options, key):
    for option in options:
        name, _, value = option.partition("=")
        if name.upper() == key:
            return int(value)
    return 0


def write_raster(path, array, *, geotransform=DEFAULT_GT, epsg=DEFAULT_EPSG, nodata=None,
                 dtype=None, options=("TILED=YES",), driver="GTiff"):
    """Write ``array`` (H, W) or (B, H, W) to a raster with CRS and nodata; return str path.

    ``dtype``: a numpy dtype (the array is cast to it; default: the array's own) or a GDAL
    type name such as ``"CInt16"`` or ``"Int8"`` (the array is written as it is and GDAL
    converts it; ``"Int8"`` is a Byte band with ``PIXELTYPE=SIGNEDBYTE``). ``options``
    (creation options) apply only when the raster is at least as large as the
    ``BLOCKXSIZE`` x ``BLOCKYSIZE`` they name. ``geotransform=None`` or ``epsg=None``
    leaves the raster without one.
    """
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    b, h, w = arr.shape
    if isinstance(dtype, str) and (dtype == "Int8" or
                                   gdal.GetDataTypeByName(dtype) != gdal.GDT_Unknown):
        type_name, cast = dtype, None
    else:
        cast = np.dtype(dtype or arr.dtype)
        type_name = _GDAL_TYPE_OF[cast.name]
    fits = w >= _block_size(options, "BLOCKXSIZE") and h >= _block_size(options, "BLOCKYSIZE")
    opts = list(options) if fits else []
    if type_name == "Int8":
        type_name, opts = "Byte", opts + ["PIXELTYPE=SIGNEDBYTE"]
        if cast is not None:
            arr, cast = arr.astype(cast).view(np.uint8), None
    ds = gdal.GetDriverByName(driver).Create(str(path), w, h, b,
                                             gdal.GetDataTypeByName(type_name), opts)
    if geotransform is not None:
        ds.SetGeoTransform(geotransform)
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    for i in range(b):
        band = ds.GetRasterBand(i + 1)
        if nodata is not None:
            band.SetNoDataValue(float(nodata))
        band.WriteArray(arr[i] if cast is None else arr[i].astype(cast))
    ds.FlushCache()
    ds = None
    return str(path)


def make_bad_input(path, case, *, bands=1, size=6, nodata=0):
    """Write the unusable input ``case`` at ``path``; return str path.

    ``"missing"``: nothing is written; ``"text"``: a text file; ``"empty"``: an empty file;
    ``"nodata"``: a ``bands`` x ``size`` x ``size`` Float32 raster that is all ``nodata``.
    """
    if case == "text":
        Path(path).write_text("not a raster")
    elif case == "empty":
        Path(path).write_bytes(b"")
    elif case == "nodata":
        write_raster(path, np.full((bands, size, size), nodata, np.float32), nodata=nodata)
    elif case != "missing":
        raise ValueError(f"unknown bad input case {case!r}")
    return str(path)


def targets_scene(bands=3, height=90, width=110, seed=0):
    """Textured background with three small bright targets (rows, cols listed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 100 + 10 * np.sin(xx / 9.0) + 8 * np.cos(yy / 13.0)
    image = base[None] * rng.uniform(0.8, 1.2, (bands, 1, 1)) + rng.normal(0, 2, (bands, height, width))
    targets = [(20, 30), (60, 80), (45, 15)]
    for row, col in targets:
        image[:, row - 1:row + 2, col - 1:col + 2] += 60
    return image, targets


def vector_rows(path):
    """``{fid: attributes}`` of the first layer of the vector file ``path``, read with OGR."""
    dataset = ogr.Open(str(path))
    rows = {feature.GetFID(): feature.items() for feature in dataset.GetLayer(0)}
    dataset = None
    return rows


def read_raster(path):
    ds = gdal.Open(str(path))
    arr = ds.ReadAsArray()
    out = (arr, ds.GetGeoTransform(), ds.GetProjection(), ds.GetRasterBand(1).GetNoDataValue(),
           (ds.RasterXSize, ds.RasterYSize))
    ds = None
    return out


# --------------------------------------------------------------------------
# qgis_process

QGIS_PROCESS = "qgis_process.bin"
_QP_ENABLED = {}


def qgis_process_env(plugin_path=PYPATH, config_dir=BUILD / "qgis-process-config",
                     extra_pythonpath=(str(PYPATH),)):
    env = dict(os.environ)
    runtime = BUILD / "xdg-runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    os.chmod(runtime, 0o700)
    Path(config_dir).mkdir(parents=True, exist_ok=True)
    site = sysconfig.get_paths()["purelib"]
    env.update({
        "QT_QPA_PLATFORM": "offscreen",
        "QGIS_PLUGINPATH": str(plugin_path),
        "QGIS_CUSTOM_CONFIG_PATH": str(config_dir),
        "XDG_RUNTIME_DIR": str(runtime),
        "PYTHONPATH": os.pathsep.join(list(extra_pythonpath) + [site]),
    })
    return env


def run_qgis_process(args, *, env=None, timeout=180, check_enabled=True):
    """Run ``qgis_process.bin <args>`` with this checkout's plugin enabled."""
    env = env or qgis_process_env()
    key = (env["QGIS_PLUGINPATH"], env["QGIS_CUSTOM_CONFIG_PATH"])
    if check_enabled and key not in _QP_ENABLED:
        r = subprocess.run([QGIS_PROCESS, "plugins", "enable", "anomaly_detector"], env=env,
                           capture_output=True, text=True, timeout=timeout)
        # exit code 1 means "already enabled"
        assert r.returncode in (0, 1), r.stdout + r.stderr
        _QP_ENABLED[key] = True
    return subprocess.run([QGIS_PROCESS] + [str(a) for a in args], env=env,
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------
# QGIS fixtures

@pytest.fixture(scope="session", autouse=True)
def collect_before_qgis_exits(qgis_app):
    """Collect what tests left in reference cycles (kept tracebacks hold contexts, layers,
    datasets) while QGIS and GDAL are still up, not after QGIS has exited."""
    yield
    import gc
    gc.collect()


@pytest.fixture(scope="session")
def processing_ready(qgis_app):
    from processing.core.Processing import Processing
    Processing.initialize()
    return True


@pytest.fixture(scope="session")
def plugin(qgis_app, processing_ready):
    import anomaly_detector
    plug = anomaly_detector.classFactory(None)
    plug.initProcessing()
    yield plug
    plug.unload()


@pytest.fixture(scope="session")
def provider(plugin):
    from qgis.core import QgsApplication
    prov = QgsApplication.processingRegistry().providerById("anomaly")
    assert prov is not None
    return prov


@pytest.fixture
def run_alg(provider):
    """``run_alg(alg_id, params) -> results`` through ``processing.run``."""
    import processing
    from qgis.core import QgsProcessingFeedback

    def _run(alg_id, params, feedback=None):
        return processing.run(alg_id, params, feedback=feedback or QgsProcessingFeedback())
    return _run


@pytest.fixture
def tampered_weights(tmp_path):
    """A copy of the bundled weights (and card) with one byte flipped."""
    from anomaly_detector.model.nn import weights as weights_module
    target = tmp_path / "detector.pt"
    shutil.copy(weights_module.DEFAULT_WEIGHTS, target)
    shutil.copy(weights_module.card_path(weights_module.DEFAULT_WEIGHTS), tmp_path / "detector.json")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


# --------------------------------------------------------------------------
# QGIS desktop under Xvfb

DESKTOP_SCRIPT_HEAD = r'''
import json, os, sys, traceback
from qgis.PyQt.QtCore import QEventLoop, QTimer

OUT = os.environ["ANOMALY_DESKTOP_OUT"]
result = {"stage": "start"}

def finish():
    with open(os.path.join(OUT, "result.json"), "w") as handle:
        json.dump(result, handle, indent=1)
    sys.stdout.flush()
    os._exit(0)

def watchdog():
    result["error"] = (f"stopped at stage {result['stage']!r}: a dialog that stayed open "
                       "or an event loop that did not return")
    finish()

QTimer.singleShot(int(os.environ["ANOMALY_DESKTOP_WATCHDOG"]) * 1000, watchdog)

def settle(ms=300):
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec_()
'''
"""Start of a script for :func:`run_qgis_desktop`: ``OUT`` (the folder for files),
``result`` (a dict that ``finish()`` saves as ``OUT/result.json`` before it exits
QGIS; a timer does so with an error 20 s before the test's timeout, even while a modal
dialog is open) and ``settle(ms)`` (runs the event loop for ``ms`` milliseconds)."""


def _desktop_env(tmp_path, out_dir, extra, timeout):
    config = tmp_path / "qgis-config"
    ini = config / "profiles" / "default" / "QGIS"
    ini.mkdir(parents=True)
    (ini / "QGIS3.ini").write_text(
        "[PythonPlugins]\nanomaly_detector=true\n\n"
        "[qgis]\nshowTips322=false\ncheckVersion=false\n"
        "allowCrashReporting=false\n\n"
        "[core]\nLayers\\\\AutoUpdateRecentProjects=false\n")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)  # the desktop needs a (virtual) display
    env.update({
        "QGIS_PLUGINPATH": str(PYPATH),
        "QGIS_CUSTOM_CONFIG_PATH": str(config),
        "XDG_RUNTIME_DIR": str(runtime),
        "PYTHONPATH": os.pathsep.join([str(PYPATH), sysconfig.get_paths()["purelib"]]),
        "ANOMALY_DESKTOP_OUT": str(out_dir),
        "ANOMALY_DESKTOP_WATCHDOG": str(max(int(timeout) - 20, 10)),
    })
    env.update(extra or {})
    return env


def run_qgis_desktop(tmp_path, script, env=None, timeout=150):
    """Run ``script`` (:data:`DESKTOP_SCRIPT_HEAD`, then code that calls ``finish()``)
    with ``qgis --code`` in a 1280 x 800 Xvfb screen, the plugin enabled in a private
    profile and ``env`` added to the environment; return ``(result, out_dir)``.
    Fails (never skips) when Xvfb or QGIS desktop is not installed."""
    import json
    import shutil
    missing = [tool for tool in ("xvfb-run", "qgis") if shutil.which(tool) is None]
    assert not missing, (f"{' and '.join(missing)} not found: install the Debian packages "
                         "xvfb, xauth and qgis (make setup does) to test the desktop")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    path = tmp_path / "desktop_script.py"
    path.write_text(script)
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "qgis", "--nologo",
           "--noversioncheck", "--code", str(path)]
    run = subprocess.Popen(cmd, env=_desktop_env(tmp_path, out_dir, env, timeout), text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        log = run.communicate(timeout=timeout)[0][-6000:]
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)  # xvfb-run, Xvfb and QGIS: none is left behind
        log = f"QGIS desktop was stopped after {timeout} s: {run.communicate()[0][-6000:]}"
    result_file = out_dir / "result.json"
    assert result_file.exists(), log
    result = json.loads(result_file.read_text())
    assert "error" not in result, result["error"]
    assert result["stage"] == "done", result
    return result, out_dir


def rgb_array(path):
    """The pixels of an image file as an (H, W, 3) uint8 array."""
    from qgis.PyQt.QtGui import QImage
    image = QImage(str(path)).convertToFormat(QImage.Format_RGB888)
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    arr = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())
    return arr[:, :image.width() * 3].reshape(image.height(), image.width(), 3).copy()
