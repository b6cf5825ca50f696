"""Whole ``qgis_process`` runs of one algorithm on one raster, checkouts interleaved.

    python tools/qgis_ab.py RASTER CHECKOUT [CHECKOUT ...] [--algorithm local_rx]
        [--rounds 3] [--param NAME=VALUE ...]

Runs ``qgis_process.bin --json run anomaly:<algorithm> --INPUT=RASTER`` with the outputs
of ``make bench`` (``bench_qgis.command``: a score raster, and polygons for ``detect``) and
each checkout's plugin in turn (a private QGIS profile each, as ``make bench`` does), round
after round, so that other load on the machine affects them alike; prints each run's wall
seconds of the whole process, its peak RSS and the algorithm's own "Scored ... in" line
(``anomaly:detect``), and whether the checkouts' outputs of the last round are equal: score
rasters bit for bit, polygons attribute for attribute and vertex for vertex.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from bench_qgis import command, qgis_environment, run_measured
from osgeo import gdal, ogr


def plugin_path(checkout: Path, scratch: Path, index: int) -> Path:
    """A plugin folder whose ``anomaly_detector`` is ``checkout``."""
    folder = scratch / f"plugins-{index}"
    folder.mkdir()
    (folder / "anomaly_detector").symlink_to(checkout.resolve())
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raster", type=Path)
    parser.add_argument("checkouts", type=Path, nargs="+")
    parser.add_argument("--algorithm", default="local_rx")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--param", action="append", default=[],
                        help="another parameter, NAME=VALUE (repeatable)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        runs = []
        for index, checkout in enumerate(args.checkouts):
            env = qgis_environment(scratch / f"profile-{index}",
                                   plugin_path(checkout, scratch, index))
            runs.append((checkout, env, scratch / f"run-{index}"))
        for round_ in range(1, args.rounds + 1):
            for checkout, env, out in runs:
                run = run_measured([*command(args.algorithm, args.raster, out),
                                    *(f"--{param}" for param in args.param)],
                                   env, scratch / "log.json")
                timed = [line for line in run["log"] if line.startswith("Scored ")]
                print(f"round {round_}: {checkout}: {run['seconds']:.2f} s, peak RSS "
                      f"{run['peak_rss_mb']:.0f} MB{''.join(f'; {line}' for line in timed)}",
                      flush=True)
        outs = [out for _, _, out in runs]
        if Path(f"{outs[0]}_score.tif").exists():
            maps = [gdal.Open(f"{out}_score.tif").ReadAsArray() for out in outs]
            same = all(np.array_equal(maps[0], other, equal_nan=True) for other in maps[1:])
            print(f"score rasters of the last round equal bit for bit: {same}")
        if Path(f"{outs[0]}_anomalies.gpkg").exists():
            polygons = [features(f"{out}_anomalies.gpkg") for out in outs]
            same = all(other == polygons[0] for other in polygons[1:])
            print(f"polygons of the last round equal (attributes and geometries): {same}")
    return 0


def features(path: str) -> list:
    """``(attributes, WKT geometry)`` of each feature of a vector file, in order."""
    dataset = ogr.Open(path)
    rows = [(f.items(), f.GetGeometryRef().ExportToWkt()) for f in dataset.GetLayer(0)]
    dataset = None
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
