"""Time the algorithms where the QGIS desktop runs them: in a task thread.

The Processing dialog runs an algorithm as a ``QgsProcessingAlgRunnerTask`` on the
application's task manager (a worker thread); scripts and the tests call
``processing.run`` in the main thread. This runs both, alternating, in one offscreen
QGIS application with the plugin of this checkout, on one raster, with default
parameters (``anomaly:detect`` writes its polygons), and prints the seconds and MP/s of
each run. The first round warms up (PyTorch, the weights, oneDNN kernels, as a desktop
session that has run the detector once) and is not printed.

    QT_QPA_PLATFORM=offscreen PYTHONPATH=build/pythonpath python tools/bench_task.py RASTER
        [--algorithms detect rx] [--rounds 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

QGIS_PLUGINS = "/usr/share/qgis/python/plugins"  # Processing itself


def parameters(algorithm: str, src: Path, out: Path) -> dict:
    if algorithm == "detect":
        return {"INPUT": str(src), "OUTPUT_SCORE": f"{out}_score.tif",
                "OUTPUT_POLYGONS": f"{out}_anomalies.gpkg"}
    return {"INPUT": str(src), "OUTPUT": f"{out}_score.tif"}


def run_in_task(app, algorithm: str, params: dict) -> float:
    """Seconds of one run as the Processing dialog starts it (a task on the task manager)."""
    from qgis.core import (QgsApplication, QgsProcessingAlgRunnerTask, QgsProcessingContext,
                           QgsProcessingFeedback)
    alg = QgsApplication.processingRegistry().createAlgorithmById(f"anomaly:{algorithm}")
    context, feedback = QgsProcessingContext(), QgsProcessingFeedback()
    task = QgsProcessingAlgRunnerTask(alg, params, context, feedback)
    outcome: list[bool] = []
    task.executed.connect(lambda ok, _results: outcome.append(ok))
    start = time.perf_counter()
    QgsApplication.taskManager().addTask(task)
    while not outcome:
        app.processEvents()
        time.sleep(0.05)  # the desktop's event loop mostly waits too
    seconds = time.perf_counter() - start
    if not outcome[0]:
        raise RuntimeError(f"anomaly:{algorithm} failed in its task")
    return seconds


def run_in_main_thread(algorithm: str, params: dict) -> float:
    """Seconds of one ``processing.run`` in the main thread."""
    import processing
    start = time.perf_counter()
    processing.run(f"anomaly:{algorithm}", params)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raster", type=Path)
    parser.add_argument("--algorithms", nargs="+", default=["detect", "rx"],
                        choices=["detect", "rx"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    from osgeo import gdal
    from qgis.core import QgsApplication
    app = QgsApplication([], False)
    app.initQgis()
    if QGIS_PLUGINS not in sys.path:
        sys.path.append(QGIS_PLUGINS)
    from processing.core.Processing import Processing
    Processing.initialize()
    import anomaly_detector
    plugin = anomaly_detector.classFactory(None)
    plugin.initProcessing()

    dataset = gdal.Open(str(args.raster))
    megapixels = dataset.RasterXSize * dataset.RasterYSize / 1e6
    print(f"{args.raster.name}: {dataset.RasterCount} x {dataset.RasterYSize} x "
          f"{dataset.RasterXSize}")
    dataset = None
    with tempfile.TemporaryDirectory() as scratch:
        for algorithm in args.algorithms:
            for round_ in range(args.rounds + 1):
                for where in ("task thread", "main thread"):
                    out = Path(scratch) / f"{algorithm}_{round_}_{where.split()[0]}"
                    params = parameters(algorithm, args.raster, out)
                    seconds = run_in_task(app, algorithm, params) if where == "task thread" \
                        else run_in_main_thread(algorithm, params)
                    if round_:
                        print(f"anomaly:{algorithm:6s} {where}: {seconds:6.2f} s "
                              f"{megapixels / seconds:6.2f} MP/s")
    plugin.unload()
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
