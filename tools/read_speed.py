"""Time a streaming pass over a raster's windows with and without reusing their memory.

    PYTHONPATH=build/pythonpath python tools/read_speed.py RASTER [--rounds 3]

Each round reads every window of RASTER (whole blocks, as the statistics pass does)
with two reader threads (:func:`read_ahead`) in two fresh processes, as a
``qgis_process`` run starts: once into new arrays, once into arrays handed back to a
:class:`BufferPool`; it prints each pass's wall, user and system seconds (the
engine's allocator settings and GDAL cache cap in force).
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

from anomaly_detector.model.nn.detector import keep_freed_memory
from anomaly_detector.model.raster import memory
from anomaly_detector.model.raster.io import (READERS, BufferPool, DatasetPerThread,
                                              aligned_windows, open_dataset, read_ahead,
                                              read_window)
from anomaly_detector.model.raster.stats import statistics_pixels


def one_pass(path: str, reuse: bool) -> tuple[float, float, float]:
    """(wall, user, system) seconds of reading every window of ``path`` once."""
    ds, info = open_dataset(path)
    windows = aligned_windows(ds, statistics_pixels(len(info.bands)))
    ds = None
    datasets = DatasetPerThread(path)
    buffers = BufferPool() if reuse else None
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for data, _ in read_ahead(windows, lambda w: read_window(datasets(), info, *w, buffers),
                              READERS):
        if buffers is not None:
            buffers.give(data)
        del data
    after = resource.getrusage(resource.RUSAGE_SELF)
    datasets.close()
    return (time.perf_counter() - start, after.ru_utime - before.ru_utime,
            after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raster")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=("new", "reused"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        keep_freed_memory()
        memory.limit_gdal_cache()
        wall, user, system = one_pass(args.raster, args.child == "reused")
        print(f"{args.child:<6} arrays: wall {wall:.2f} s, user {user:.2f} s, "
              f"system {system:.2f} s", flush=True)
        return 0
    for round_ in range(1, args.rounds + 1):
        for mode in ("new", "reused"):
            result = subprocess.run([sys.executable, __file__, args.raster, "--child", mode],
                                    capture_output=True, text=True, check=True)
            print(f"round {round_}: {result.stdout.strip()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
