"""The user's path in ``make bench``: whole ``qgis_process`` runs on realistic GeoTIFFs.

Each case writes a GeoTIFF in one of :data:`bench_rasters.LAYOUTS` and runs
``qgis_process.bin --json run anomaly:<algorithm>`` on it with default parameters
(``anomaly:detect`` and ``anomaly:polygonize`` write their polygons), in a private QGIS
profile with the plugin of this checkout. The whole command is timed (start-up, plugin,
PyTorch and weights loading included) and the peak resident memory of that child
process comes from the kernel (``os.wait4``). The same command on a 1 x 1 raster of the
same bands, type and layout gives its start-up time; the rate is
``megapixels / (seconds - startup_s)``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

from osgeo import gdal

from bench_rasters import GDAL_TYPES, LAYOUTS, write_noise, write_scene, write_speckle

QGIS_PROCESS = "qgis_process.bin"
PLUGIN = "anomaly_detector"


class Case(NamedTuple):
    name: str
    content: str      # spectra, speckle or noise (see bench_rasters)
    bands: int
    dtype: str
    side: int         # pixels per side; --quick divides it by 4
    layout: str       # a key of LAYOUTS
    algorithms: tuple


CASES = [
    Case("spectra-band", "spectra", 200, "int16", 1024, "band-interleaved, DEFLATE, tiled 256",
         ("detect", "rx")),
    Case("spectra-pixel", "spectra", 200, "int16", 1024, "pixel-interleaved, ZSTD, striped",
         ("detect", "rx")),
    Case("speckle-pixel", "speckle", 4, "uint16", 4096, "pixel-interleaved, ZSTD, tiled 256",
         ("detect", "rx")),
    Case("speckle-band", "speckle", 4, "uint16", 4096, "band-interleaved, DEFLATE, striped",
         ("rx",)),
    Case("noise", "noise", 3, "uint8", 4096, "pixel-interleaved, ZSTD, tiled 256",
         ("detect", "rx")),
    Case("noise-scores", "noise", 1, "float32", 4096, "band-interleaved, DEFLATE, striped",
         ("polygonize",)),
    # a large scene through qgis_process and the batch entry (two workers, one per core)
    Case("speckle-large", "speckle", 4, "uint16", 20000, "pixel-interleaved, ZSTD, tiled 256",
         ("detect", "batch")),
]


def write_case(path: Path, case: Case, side: int) -> Path:
    """The case's raster, ``side`` x ``side`` pixels."""
    options = LAYOUTS[case.layout] + ("BIGTIFF=IF_SAFER",)
    if case.content == "spectra":
        return write_scene(path, case.bands, case.dtype, side, side, options=options, rows=128)
    if case.content == "speckle":
        return write_speckle(path, case.bands, side, side, options=options)
    return write_noise(path, case.bands, case.dtype, side, side, options=options)


def qgis_environment(scratch: Path, plugin_path: Path) -> dict:
    """Headless ``qgis_process`` in a private profile under ``scratch``, with this
    checkout's plugin enabled and this Python's packages (PyTorch) visible."""
    config, runtime = scratch / "qgis-config", scratch / "xdg-runtime"
    config.mkdir(parents=True, exist_ok=True)
    runtime.mkdir(parents=True, exist_ok=True)
    os.chmod(runtime, 0o700)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QGIS_PLUGINPATH": str(plugin_path),
           "QGIS_CUSTOM_CONFIG_PATH": str(config), "XDG_RUNTIME_DIR": str(runtime),
           "PYTHONPATH": os.pathsep.join([str(plugin_path), sysconfig.get_paths()["purelib"]])}
    subprocess.run([QGIS_PROCESS, "plugins", "enable", PLUGIN], env=env, capture_output=True)
    return env


BATCH_WORKERS = 2


def command(algorithm: str, src: Path, out: Path) -> list:
    """``qgis_process`` with default parameters (``batch``: the batch entry with
    :data:`BATCH_WORKERS` workers); outputs named after ``out``."""
    if algorithm == "batch":
        return [sys.executable, "-m", f"{PLUGIN}.model.batch", str(src), "--out", f"{out}_batch",
                "--workers", str(BATCH_WORKERS)]
    outputs = {"detect": [f"--OUTPUT_SCORE={out}_score.tif",
                          f"--OUTPUT_POLYGONS={out}_anomalies.gpkg"],
               "polygonize": [f"--OUTPUT={out}_anomalies.gpkg"]
               }.get(algorithm, [f"--OUTPUT={out}_score.tif"])  # rx, local_rx, local_contrast
    return [QGIS_PROCESS, "--json", "run", f"anomaly:{algorithm}", f"--INPUT={src}", *outputs]


# Runs the command as its own child and prints that child's peak RSS. A child forked
# straight from the benchmark would count the benchmark's own pages in its peak (the
# kernel keeps the largest RSS of a process across exec); this launcher is small.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\nPEAK_RSS_KB {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def launched(args: list) -> list:
    """``args`` run through :data:`LAUNCHER`."""
    return ["/usr/bin/python3", "-c", LAUNCHER, *map(str, args)]


def launcher_peak_rss_mb(stderr: str) -> float:
    """The peak RSS (MiB) that :data:`LAUNCHER` wrote at the end of ``stderr``."""
    return int(stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0]) / 1024


def run_measured(args: list, env: dict, log: Path) -> dict:
    """Run ``args``: wall seconds of the whole process, its peak RSS (MiB) and the
    results and log of ``qgis_process --json`` (of the batch entry: its workers' peak
    RSS and the scene's group and polygon counts)."""
    with open(log, "w") as stdout, open(f"{log}.err", "w") as stderr:
        start = time.perf_counter()
        returncode = subprocess.call(launched(args), stdout=stdout, stderr=stderr, env=env)
        seconds = time.perf_counter() - start
    text, errors = log.read_text(errors="replace"), Path(f"{log}.err").read_text(errors="replace")
    if returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed (exit {returncode}):\n"
                           f"{text[-2000:]}{errors[-2000:]}")
    run = {"seconds": seconds, "peak_rss_mb": launcher_peak_rss_mb(errors)}
    if "Peak memory per worker: " in text:  # the batch entry's summary
        workers = text.split("Peak memory per worker: ")[1].splitlines()[0].split(", ")
        scene = next(line.split() for line in text.splitlines() if " ok " in f" {line} ")
        return {**run, "worker_peak_rss_mb": [float(w.split()[0]) for w in workers],
                "results": {"GROUP_COUNT": int(scene[2]), "POLYGON_COUNT": int(scene[3])},
                "log": []}
    report = json.loads(text[text.index("{"):])
    return {**run, "results": report.get("results", {}),
            "log": report.get("log", {}).get("info", [])}


def qgis_process_rows(scratch: Path, plugin_path: Path, *, quick: bool, repeat: int,
                      keep: bool, report: Callable[[dict], None],
                      names: Optional[Sequence[str]] = None) -> list:
    """Measure every case (those named in ``names``, if given; its files in a folder of
    ``scratch``, removed after it unless ``keep``); ``report(row)`` is called as each
    row is ready."""
    env = qgis_environment(scratch, plugin_path)
    startup, rows = {}, []
    for case in CASES:
        if names and case.name not in names:
            continue
        folder = scratch / case.name
        folder.mkdir()
        side = case.side // 4 if quick else case.side
        src = write_case(folder / "input.tif", case, side)
        one = write_case(folder / "input_1x1.tif", case, 1)
        for algorithm in case.algorithms:
            out = folder / algorithm
            key = (algorithm, case.bands, case.dtype, case.layout)
            if key not in startup:  # the fastest of ``repeat`` runs on the 1 x 1 raster
                startup[key] = min(run_measured(command(algorithm, one, out), env,
                                                Path(f"{out}.log"))["seconds"]
                                   for _ in range(repeat))
            runs = [run_measured(command(algorithm, src, out), env, Path(f"{out}.log"))
                    for _ in range(repeat if side * side <= 50e6 else 1)]
            best = min(runs, key=lambda run: run["seconds"])
            rows.append(_row(case, algorithm, src, side, best, startup[key],
                             max(run["peak_rss_mb"] for run in runs)))
            if "worker_peak_rss_mb" in best:
                rows[-1]["worker_peak_rss_mb"] = max(max(run["worker_peak_rss_mb"])
                                                     for run in runs)
            report(rows[-1])
        if not keep:
            shutil.rmtree(folder)
    return rows


def _row(case: Case, algorithm: str, src: Path, side: int, run: dict, startup_s: float,
         peak_rss_mb: float) -> dict:
    results = run["results"]
    megapixels = side * side / 1e6
    path = "batch" if algorithm == "batch" else "qgis_process"
    algorithm = "detect" if algorithm == "batch" else algorithm
    row = {"case": case.name, "algorithm": f"anomaly:{algorithm}", "path": path,
           "raster": f"{case.bands}x{side}x{side} {gdal.GetDataTypeName(GDAL_TYPES[case.dtype])}",
           "layout": case.layout, "file_mb": src.stat().st_size / 2 ** 20,
           "megapixels": megapixels, "seconds": run["seconds"], "startup_s": startup_s,
           "mp_per_s": megapixels / max(run["seconds"] - startup_s, 1e-9),
           "peak_rss_mb": peak_rss_mb}
    if "GROUP_COUNT" in results:
        row["groups"], row["polygons"] = results["GROUP_COUNT"], results["POLYGON_COUNT"]
        row["log"] = next((line for line in run["log"] if line.startswith("Threshold ")), "")
    return row
