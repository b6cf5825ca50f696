"""The work of a batch run: settings, one scene's outputs and the tasks that run on
Dask workers (plain functions of plain arguments; see :mod:`.batch`)."""
from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from . import defaults
from .nn.detector import (TileScorer, _round_up, check_scale, detection_statistics, raster_scorer,
                       tile_align, tile_core, tile_margin)
from .nn.fused import convolution_dtype
from .raster.area import named_as
from .raster.io import open_raster_checked
from .raster.memory import limit_gdal_cache
from .raster.pipeline import assemble_strips, score_raster
from .raster.tiling import TilePlan, plan_tiles

from .nn.detector import THREADS_ENV  # noqa: E402


def _precision_problem(precision: str) -> Optional[str]:
    """Why ``precision`` cannot be used here, or None."""
    try:
        convolution_dtype(precision)
    except ValueError as error:
        return str(error).replace("PRECISION", "--precision")
    return None


@dataclass
class Settings:
    """Scoring and threshold settings shared by every task (defaults = anomaly:detect's)."""

    tile_size: int = defaults.TILE_SIZE
    overlap: int = defaults.OVERLAP
    scale: int = 1
    precision: str = "auto"
    memory_mb: Optional[float] = None
    method: str = defaults.THRESHOLD_METHOD
    threshold: float = defaults.THRESHOLD
    min_area: int = defaults.MIN_AREA
    top_n: int = defaults.TOP_N
    torch_threads: Optional[int] = None
    weights_path: Optional[str] = None
    mask: Optional[str] = None
    extent: Optional[Tuple[float, float, float, float]] = None
    extent_crs: str = ""

    def problem(self, workers: int = 1, split_mp: Optional[float] = None) -> Optional[str]:
        """A sentence saying which option is invalid, or None (checked before any work)."""
        checks = [
            (math.isfinite(self.threshold), f"--threshold must be a finite number (got "
                                            f"{self.threshold})."),
            (self.method != "top_fraction" or 0 < self.threshold <= 1,
             f"With --method top_fraction, --threshold is a fraction of the valid pixels and "
             f"must be greater than 0 and at most 1 (got {self.threshold:g})."),
            (self.min_area >= 1, f"--min-area must be at least 1 pixel (got {self.min_area})."),
            (self.top_n >= 0, f"--top-n must be 0 (keep all) or more (got {self.top_n})."),
            (self.tile_size >= 1, f"--tile-size must be at least 1 (got {self.tile_size})."),
            (self.overlap >= 0, f"--overlap must be 0 or more (got {self.overlap})."),
            (workers >= 1, f"--workers must be at least 1 (got {workers})."),
            (self.memory_mb is None or (math.isfinite(self.memory_mb) and self.memory_mb > 0),
             f"--memory-mb must be a positive number (got {self.memory_mb})."),
            (self.torch_threads is None or self.torch_threads >= 1,
             f"--torch-threads must be at least 1 (got {self.torch_threads})."),
            (split_mp is None or (math.isfinite(split_mp) and split_mp > 0),
             f"--split-mp must be a positive number of megapixels (got {split_mp})."),
            (not self.mask or self.mask.startswith("/vsi") or os.path.isfile(self.mask),
             f"--mask '{self.mask}' is not a file: give a polygon layer such as a GeoPackage."),
            (_precision_problem(self.precision) is None, _precision_problem(self.precision)),
        ]
        return next((message for ok, message in checks if not ok), None)

    def rounded(self) -> "Settings":
        self.scale = check_scale(self.scale)
        self.tile_size = tile_core(self.tile_size, self.scale)
        self.overlap = _round_up(max(self.overlap, 0))
        return self


@dataclass
class SceneResult:
    source: str
    ok: bool
    score: str = ""
    polygons: str = ""
    count: int = 0
    groups: int = 0
    strips: int = 1
    seconds: float = 0.0
    error: str = ""


@dataclass
class SceneJob:
    """One input of a batch run: its outputs, temporary folder and tile-row groups."""

    source: str
    score: str
    polygons: str
    strip_dir: str
    """Temporary folder of the scene: its strips and the files of its area of interest."""
    pixels: int = 0
    groups: List[tuple] = field(default_factory=list)
    raster: str = ""
    """The raster the tasks read: the source, or the VRT of its area of interest."""


# --------------------------------------------------------------------------
# tasks (run on workers; plain functions of plain arguments)

def _set_threads(settings: Settings) -> None:
    import torch
    threads = settings.torch_threads
    if not threads:
        try:
            from distributed import get_worker
            threads = max(1, (os.cpu_count() or 1) // max(1, get_worker().state.nthreads))
        except (ImportError, ValueError, AttributeError):
            threads = os.cpu_count() or 1
    os.environ[THREADS_ENV] = str(threads)
    torch.set_num_threads(int(threads))


_MODELS: dict = {}


def _scorer(settings: Settings, mean, covariance, grey_level: float):
    """The scene's ``score_tile``: the detector, or zeros for a scene without variation."""
    from .nn.weights import load_detector
    _set_threads(settings)
    key = settings.weights_path or ""
    if key not in _MODELS:
        _MODELS[key] = load_detector(settings.weights_path, "cpu")
    return raster_scorer(_MODELS[key], mean, covariance, grey_level, "cpu", settings.scale,
                         settings.precision)


def scene_plan(source: str, settings: Settings) -> TilePlan:
    """The tile plan of ``source`` for the detector: one plan for all of a scene's strips."""
    info = open_raster_checked(source)
    return plan_tiles(info, TileScorer, tile_size=settings.tile_size,
                      overlap=tile_margin(settings.overlap, settings.scale),
                      align=tile_align(settings.scale), memory_mb=settings.memory_mb)


def task_statistics(raster: str, settings: Settings, source: str = ""):
    """Pass 1 of a scene: the detector's band mean and covariance of ``raster`` (the scene
    ``source`` or its area of interest), once per scene."""
    limit_gdal_cache(settings.memory_mb)
    with named_as(raster, source or raster):
        return detection_statistics(raster, scale=settings.scale, memory_mb=settings.memory_mb)


def task_strip(source: str, statistics, rows: tuple, strip_path: str, settings: Settings) -> tuple:
    """Score the tile rows ``rows`` of a scene into a strip GeoTIFF; returns (path, first row)."""
    limit_gdal_cache(settings.memory_mb)
    plan = scene_plan(source, settings)
    scorer = _scorer(settings, *statistics)
    os.makedirs(os.path.dirname(strip_path), exist_ok=True)
    score_raster(source, strip_path, scorer, plan=plan, row_range=tuple(rows))
    return strip_path, plan.write_rows(*rows)[0]


def task_whole(source: str, statistics, score_path: str, settings: Settings) -> str:
    """Score a whole scene in one task (what ``detect_raster`` does after its statistics)."""
    limit_gdal_cache(settings.memory_mb)
    plan = scene_plan(source, settings)
    scorer = _scorer(settings, *statistics)
    score_raster(source, score_path, scorer, plan=plan)
    return score_path


def task_finish(source: str, scored, scene: SceneJob, settings: Settings, started: float):
    """Assemble the strips (if any) and polygonize; returns a :class:`SceneResult`."""
    from .vector.polygons import polygonize_scores
    if isinstance(scored, list):
        assemble_strips(scored, scene.score, scene.raster)
    shutil.rmtree(scene.strip_dir, ignore_errors=True)
    result = polygonize_scores(scene.score, scene.polygons, method=settings.method,
                               threshold=settings.threshold, min_area=settings.min_area,
                               top_n=settings.top_n)
    return SceneResult(source, True, scene.score, scene.polygons, int(result.count),
                       int(result.groups), max(1, len(scene.groups)), time.time() - started)


def gather_parts(*parts):
    """The scored strips of a scene as one list (a task that waits for all of them)."""
    return list(parts)
