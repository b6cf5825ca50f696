"""Score many rasters on a Dask distributed cluster (headless batch entry).

    python -m anomaly_detector.model.batch INPUT [INPUT ...] --out DIR
        [--workers N] [--scheduler tcp://host:8786] [--method METHOD]
        [--threshold VALUE] [--min-area PIXELS] [--top-n N] [--tile-size PIXELS]
        [--overlap PIXELS] [--scale 1|2|4] [--precision auto|float32|bfloat16]
        [--memory-mb MB] [--split-mp MP]
        [--mask POLYGONS] [--extent xmin,ymin,xmax,ymax[,EPSG]]

(defaults: those of ``anomaly:detect``, from :mod:`.defaults`; ``--help`` prints them)

Each input (a path or a glob pattern) gives ``<out>/<stem>_score.tif`` (the
deviation score of ``anomaly:detect``) and ``<out>/<stem>_anomalies.gpkg`` (its
ranked polygons, same threshold parameters and defaults as the algorithm: the
``--top-n`` most anomalous groups are written, all are counted). An area of interest
(``--extent``, ``--mask``: the algorithm's EXTENT and MASK) is written per scene as a VRT
of the scene's window whose mask is the rasterised polygons; the tasks read it instead
of the scene.

Work is split per scene; a scene larger than a worker's share of all pixels
(or than ``--split-mp`` megapixels) is also split into groups of tile rows: its
band statistics are computed once, each group scores its rows into a strip
GeoTIFF with the scene's single tile plan, and the strips are assembled. The
score map is the one ``detect_raster`` writes in one process.

A ``LocalCluster`` is started unless ``--scheduler`` names a running one (then
inputs and ``--out`` must be paths that every worker can reach). A scene that
fails is reported in the summary and does not stop the others; the exit code
is 1 when any failed.
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from . import defaults
from .defaults import PRECISIONS
from .batch_tasks import (SceneJob, SceneResult, Settings, gather_parts, scene_plan, task_finish,
                          task_statistics, task_strip, task_whole)
from .nn.detector import SCALES
from .raster.area import prepare_area, write_area_vrt
from .raster.files import refuse_inputs_as_outputs, same_file
from .raster.io import open_raster_checked
from .raster.memory import MEMORY_ENV, peak_rss_mb
from .raster.output import gdal_quiet
from .vector.threshold import METHODS


# --------------------------------------------------------------------------
# driver

def expand_inputs(patterns: Sequence[str]) -> List[str]:
    """Paths and glob patterns -> sorted unique paths (a pattern matching nothing is kept,
    so that it is reported as a missing input)."""
    out: List[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for path in matches or [pattern]:
            if path not in out:
                out.append(path)
    return out


def name_scenes(sources: Sequence[str], out_dir: Path) -> Dict[str, SceneJob]:
    """A :class:`SceneJob` per source whose outputs never collide: ``<stem>_score.tif`` and
    ``<stem>_anomalies.gpkg``, with ``_2``, ``_3``... after a stem already used (compared
    case-insensitively, as some file systems do), e.g. for ``d1/scene.tif`` and ``d2/scene.tif``."""
    taken, scenes = set(), {}
    for source in sources:
        stem = name = Path(source).stem
        count = 1
        while name.lower() in taken:
            count += 1
            name = f"{stem}_{count}"
        taken.add(name.lower())
        scenes[source] = SceneJob(source, str(out_dir / f"{name}_score.tif"),
                                  str(out_dir / f"{name}_anomalies.gpkg"),
                                  str(out_dir / f".{name}.strips"), raster=source)
    return scenes


def scene_area(scene: SceneJob, settings: Settings) -> str:
    """The raster a scene's tasks read: its source, or a VRT of its area of interest
    (``settings.extent``, ``settings.mask``) written into its temporary folder."""
    if settings.extent is None and not settings.mask:
        return scene.source
    if settings.mask and any(same_file(path, settings.mask)
                             for path in (scene.score, scene.polygons)):
        raise ValueError(f"The output of this scene would replace the --mask file "
                         f"'{settings.mask}': choose another --out folder.")
    os.makedirs(scene.strip_dir, exist_ok=True)
    area = prepare_area(scene.source, os.path.join(scene.strip_dir, "mask.tif"),
                        extent=settings.extent, extent_crs=settings.extent_crs,
                        mask=settings.mask)
    return write_area_vrt(scene.source, os.path.join(scene.strip_dir, "area.vrt"),
                          window=area.window, mask_path=area.mask_path)


def submit_scenes(client, sources: Sequence[str], out_dir: Path, settings: Settings,
                  workers: int, split_mp: Optional[float] = None):
    """Submit every scene; returns ``(futures by source, results of scenes that failed early)``."""
    scenes, failed = [], []
    named = name_scenes(sources, out_dir)
    files: dict = {}
    for source in sources:
        scene = named[source]
        try:
            refuse_inputs_as_outputs(
                [("score", scene.score), ("polygons", scene.polygons)], sources, files)
            scene.raster = scene_area(scene, settings)
            plan = scene_plan(scene.raster, settings)
            info = open_raster_checked(scene.raster)
        except Exception as error:  # noqa: BLE001 - reported in the summary
            shutil.rmtree(scene.strip_dir, ignore_errors=True)
            failed.append(SceneResult(source, False, error=str(error)))
            continue
        scene.pixels = info.width * info.height
        scenes.append((scene, plan))
    total = sum(s.pixels for s, _ in scenes)
    share = total / max(1, workers)
    limit = split_mp * 1e6 if split_mp else share
    futures = {}
    for scene, plan in scenes:
        started = time.time()
        stats = client.submit(task_statistics, scene.raster, settings, scene.source, pure=False)
        parts = max(1, math.ceil(scene.pixels / max(1.0, limit))) if scene.pixels > limit else 1
        parts = min(parts, len(plan.rows))
        if parts > 1:
            scene.groups = plan.row_groups(parts)
            strips = [client.submit(task_strip, scene.raster, stats, rows,
                                    os.path.join(scene.strip_dir, f"rows_{rows[0]:05d}.tif"),
                                    settings, pure=False) for rows in scene.groups]
            scored = client.submit(gather_parts, *strips, pure=False)
        else:
            scored = client.submit(task_whole, scene.raster, stats, scene.score, settings,
                                   pure=False)
        futures[scene.source] = client.submit(task_finish, scene.source, scored, scene, settings,
                                              started, pure=False)
    return futures, failed


def run_batch(inputs: Sequence[str], out_dir: str, *, settings: Optional[Settings] = None,
              workers: int = 2, scheduler: Optional[str] = None, split_mp: Optional[float] = None,
              show_progress: bool = True, stream=None) -> List[SceneResult]:
    """Score ``inputs`` on a Dask cluster; returns one :class:`SceneResult` per input."""
    from distributed import Client, LocalCluster, wait
    stream = stream or sys.stdout
    settings = settings or Settings()
    problem = settings.problem(workers if not scheduler else 1, split_mp)
    if problem:
        raise ValueError(problem)
    settings = settings.rounded()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = expand_inputs(inputs)
    cluster = None
    if scheduler:
        client = Client(scheduler)
        workers = max(1, len(client.scheduler_info().get("workers", {})))
    else:
        cores = os.cpu_count() or 1
        workers = max(1, int(workers))
        if settings.torch_threads is None:
            settings.torch_threads = max(1, cores // workers)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", memory_limit=0)
        client = Client(cluster)
    try:
        print(f"Dask dashboard: {client.dashboard_link}", file=stream, flush=True)
        futures, results = submit_scenes(client, sources, out, settings, workers, split_mp)
        pending = list(futures.values())
        if show_progress and pending:
            _text_progress(pending, stream)
        wait(pending)
        peaks = client.run(peak_rss_mb)
        if peaks:
            print("Peak memory per worker: " + ", ".join(
                f"{mb:.0f} MiB" for mb in peaks.values()), file=stream, flush=True)
        for source, future in futures.items():
            if future.status == "finished":
                results.append(future.result())
            else:
                error = future.exception()
                results.append(SceneResult(source, False, error=str(error) or repr(error)))
                shutil.rmtree(name_scenes(sources, out)[source].strip_dir, ignore_errors=True)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    order = {s: i for i, s in enumerate(sources)}
    results.sort(key=lambda r: order.get(r.source, len(order)))
    return results


def _text_progress(futures, stream, width: int = 30) -> None:
    """A plain text progress bar over the scenes (one line, updated in place)."""
    from distributed import as_completed
    total = len(futures)
    for done, _ in enumerate(as_completed(futures), start=1):
        filled = int(width * done / total)
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} scenes",
              end="", file=stream, flush=True)
    print(file=stream, flush=True)


def summary_table(results: Sequence[SceneResult]) -> str:
    rows = [("scene", "status", "groups", "polygons", "strips", "seconds", "output / error")]
    for r in results:
        rows.append((Path(r.source).name, "ok" if r.ok else "FAILED",
                     str(r.groups) if r.ok else "-", str(r.count) if r.ok else "-",
                     str(r.strips) if r.ok else "-",
                     f"{r.seconds:.1f}" if r.ok else "-",
                     r.score if r.ok else r.error.splitlines()[0][:200] if r.error else "error"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1]
             for row in rows]
    failed = sum(not r.ok for r in results)
    lines.append(f"{len(results) - failed} scene(s) scored, {failed} failed.")
    return "\n".join(lines)


def parse_extent(text: str) -> Tuple[Tuple[float, float, float, float], str]:
    """``xmin,ymin,xmax,ymax[,EPSG]`` -> ``((xmin, ymin, xmax, ymax), "EPSG:n" or "")``
    (no EPSG: the extent is in each raster's CRS)."""
    parts = [part.strip() for part in str(text).split(",")]
    try:
        numbers = tuple(float(part) for part in parts[:4])
        code = int(parts[4].upper().replace("EPSG:", "")) if len(parts) == 5 else None
    except ValueError:
        numbers, code = (), None
    if (len(parts) not in (4, 5) or len(numbers) != 4 or not all(map(math.isfinite, numbers))
            or numbers[0] > numbers[2] or numbers[1] > numbers[3]):
        raise argparse.ArgumentTypeError(
            f"give xmin,ymin,xmax,ymax[,EPSG] with xmin <= xmax and ymin <= ymax, e.g. "
            f"500000,4099000,501000,4100000,32633 (got '{text}')")
    if code is not None:
        from osgeo import osr
        with gdal_quiet():
            known = osr.SpatialReference().ImportFromEPSG(code) == 0
        if not known:
            raise argparse.ArgumentTypeError(f"EPSG:{code} is not a known CRS (got '{text}')")
    return numbers, f"EPSG:{code}" if code is not None else ""


def _parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog="python -m anomaly_detector.model.batch",
        description="Score rasters with the bundled anomaly detector on a Dask cluster.")
    parser.add_argument("inputs", nargs="+", help="raster paths or glob patterns")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--workers", type=int, default=2,
                        help="LocalCluster worker processes (default 2); torch threads are "
                             "split between them")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler, "
                                            "e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--method", default=defaults.THRESHOLD_METHOD, choices=METHODS,
                        help="threshold method (default %(default)s)")
    parser.add_argument("--threshold", type=float, default=defaults.THRESHOLD,
                        help="fraction of valid pixels or score (default %(default)s)")
    parser.add_argument("--min-area", type=int, default=defaults.MIN_AREA,
                        help="smallest polygon kept, in pixels (default %(default)s)")
    parser.add_argument("--top-n", type=int, default=defaults.TOP_N,
                        help="write the N most anomalous polygons of each scene (default "
                             "%(default)s; 0 = all); every group is counted")
    parser.add_argument("--tile-size", type=int, default=defaults.TILE_SIZE,
                        help="largest tile, in analysed pixels (default %(default)s)")
    parser.add_argument("--overlap", type=int, default=defaults.OVERLAP,
                        help="tile margin, in analysed pixels (default %(default)s)")
    parser.add_argument("--scale", type=int, default=1, choices=SCALES,
                        help="analysis resolution: 1 (full), 2 or 4 (1/2 or 1/4; faster)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="convolution arithmetic: auto (bfloat16 where the CPU computes it "
                             "natively), float32 or bfloat16 (default %(default)s)")
    parser.add_argument("--memory-mb", type=float, default=None,
                        help="memory setting per task (default $%s or %d)"
                             % (MEMORY_ENV, defaults.MEMORY_MB))
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--split-mp", type=float, default=None,
                        help="split scenes above this many megapixels into tile-row groups "
                             "(default: a worker's share of all pixels)")
    parser.add_argument("--weights", default=None, help="detector weights (default: bundled)")
    parser.add_argument("--mask", default=None,
                        help="area of interest: polygon layer (any CRS); pixels outside its "
                             "polygons are nodata and take no part in the statistics")
    parser.add_argument("--extent", type=parse_extent, default=(None, ""),
                        metavar="xmin,ymin,xmax,ymax[,EPSG]",
                        help="area of interest: score only each raster's window covering "
                             "this extent (in the raster's CRS, or in the EPSG code given)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.inputs or not args.out:
        parser.error("give at least one input and an --out folder.")
    settings = Settings(tile_size=args.tile_size, overlap=args.overlap, scale=args.scale,
                        precision=args.precision, memory_mb=args.memory_mb,
                        method=args.method, threshold=args.threshold, min_area=args.min_area,
                        top_n=args.top_n, torch_threads=args.torch_threads,
                        weights_path=args.weights, mask=args.mask, extent=args.extent[0],
                        extent_crs=args.extent[1])
    problem = settings.problem(args.workers, args.split_mp)
    if problem:
        parser.error(problem)
    try:
        results = run_batch(args.inputs, args.out, settings=settings, workers=args.workers,
                            scheduler=args.scheduler, split_mp=args.split_mp)
    except Exception as error:  # noqa: BLE001 - a sentence, not a traceback
        parser.exit(1, f"The batch stopped before scoring every scene ({type(error).__name__}: "
                       f"{error}). Check the --out folder and the --scheduler address.\n")
    print(summary_table(results))
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    # run the package's module, so that workers unpickle tasks by reference
    from anomaly_detector.model import batch as _batch
    sys.exit(_batch.main())
