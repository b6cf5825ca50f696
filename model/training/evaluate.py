"""Pixel- and object-level quality of the bundled detector and of classic baselines.

Layout read: ``<data>/<modality>/<scene>/{image.tif, mask.tif}`` (mask > 0 = anomaly).

    python -m anomaly_detector.model.training.evaluate DATA [--out DIR] [--weights FILE] [--scale 1]
                 [--methods detector,rx,lrx,lcm] [--limit N] [--fraction 0.005] [--resamples 2000]

runs the detector exactly as ``anomaly:detect`` does (:func:`..nn.detector.detect_raster`,
tiles and all) and the baselines of :mod:`..classic.baselines` (global RX, dual-window local RX,
multi-scale local contrast), keeps every score map as
``DIR/maps/<method>/<modality>/<scene>.tif`` and scores each map as stored: pixel ROC
AUC, and the object metrics of :mod:`.objects` (R-precision, target recall at K and
hit@1 of the groups above the default threshold). Writes ``DIR/evaluation.tsv`` (one row
per scene, every column) and ``DIR/evaluation.png`` (detector maps of a few scenes
beside their masks); prints per-modality means with bootstrap intervals over scenes,
the mean of the modality means and the detector's per-scene wins against each baseline.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Callable

import numpy as np

from ..defaults import PRECISIONS
from ..classic.baselines import BASELINE_NAMES, BASELINES, fill_nonfinite
from .objects import DEFAULT_FRACTION, METRICS as OBJECT_METRICS, bootstrap_intervals, object_scores

PREVIEWS_PER_MODALITY = 2
METHODS = ("detector", *BASELINES)
MACRO = "mean_of_modalities"


@dataclass
class Scene:
    modality: str
    name: str
    image_path: Path
    mask_path: Path


def find_scenes(data: Path) -> list[Scene]:
    scenes = [Scene(p.parent.parent.name, p.parent.name, p, p.parent / "mask.tif")
              for p in sorted(Path(data).glob("*/*/image.tif")) if (p.parent / "mask.tif").is_file()]
    if not scenes:
        raise FileNotFoundError(f"no <modality>/<scene>/image.tif + mask.tif under {data}")
    return scenes


def read_array(path: Path) -> np.ndarray:
    """(B, H, W) array in its stored type."""
    from osgeo import gdal
    gdal.UseExceptions()
    array = gdal.Open(str(path)).ReadAsArray()
    return array[None] if array.ndim == 2 else array


def read_score_map(path: Path) -> np.ndarray:
    """First band of a score raster as float64, its nodata value as NaN."""
    from osgeo import gdal
    gdal.UseExceptions()
    dataset = gdal.Open(str(path))  # the band is only valid while its dataset is referenced
    band = dataset.GetRasterBand(1)
    scores = band.ReadAsArray().astype(np.float64)
    nodata = band.GetNoDataValue()
    if nodata is not None:
        scores[scores == nodata] = np.nan
    return scores


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Rank-based (Mann-Whitney) ROC AUC; ties get their average rank, NaN ranks lowest."""
    values = np.asarray(scores, dtype=np.float64).ravel().copy()
    truth = np.asarray(labels).ravel().astype(bool)
    values[np.isnan(values)] = -np.inf
    positives = int(truth.sum())
    negatives = truth.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = average_rank[inverse.ravel()][truth].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def by_modality(rows: list[dict], column: str) -> dict[str, np.ndarray]:
    """Values of ``column`` per modality (sorted), NaN (undefined scenes) dropped."""
    groups: dict[str, list[float]] = {}
    for row in rows:
        groups.setdefault(row["modality"], []).append(row[column])
    return {m: np.array([v for v in values if not math.isnan(v)])
            for m, values in sorted(groups.items())}


def summarise(rows: list[dict], column: str) -> dict[str, float]:
    """Mean of ``column`` per modality, plus 'mean_of_modalities' (NaN scenes are skipped)."""
    means = {m: float(values.mean()) if len(values) else math.nan
             for m, values in by_modality(rows, column).items()}
    means[MACRO] = float(np.nanmean(list(means.values())))
    return means


def object_row(scores: np.ndarray, mask: np.ndarray, fraction: float) -> dict[str, float]:
    """The object metrics of one map (NaN when the mask holds no target)."""
    result = object_scores(scores, mask, fraction)
    values = result.as_tuple() if result is not None else (math.nan,) * len(OBJECT_METRICS)
    return dict(zip(OBJECT_METRICS, map(float, values)))


def method_row(method: str, scores: np.ndarray, mask: np.ndarray, fraction: float
               ) -> dict[str, float]:
    """``<method>_auc`` and ``<method>_<object metric>`` of one map."""
    return {f"{method}_auc": roc_auc(scores, mask),
            **{f"{method}_{k}": v for k, v in object_row(scores, mask, fraction).items()}}


def kept_map(evaluation: Path, scene: Scene, method: str = "detector") -> Path:
    """The map of ``scene`` that :func:`evaluate` kept under ``evaluation``."""
    return evaluation / "maps" / method / scene.modality / f"{scene.name}.tif"


def evaluate_maps(data: Path, scores_of: Callable[[Scene], np.ndarray], path: Path,
                  method: str = "detector", fraction: float = DEFAULT_FRACTION) -> None:
    """Write ``path``, an evaluation table of one method like :func:`evaluate`'s (without
    timings), from the map that ``scores_of`` gives for each scene of ``data``."""
    rows = []
    for scene in find_scenes(data):
        mask = read_array(scene.mask_path)[0] > 0
        rows.append({"modality": scene.modality, "scene": scene.name,
                     **method_row(method, scores_of(scene), mask, fraction)})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tsv(rows, ["modality", "scene"] + [f"{method}_{k}" for k in ("auc",) + OBJECT_METRICS],
              path)


def validate_in_memory(model, scenes: list[Scene]) -> dict[str, float]:
    """Quick whole-image validation (used while training): modality means of pixel AUC,
    plus object R-precision per modality under ``rprec_<modality>``."""
    from ..nn.detector import score_array
    rows = []
    for scene in scenes:
        image = read_array(scene.image_path)
        mask = read_array(scene.mask_path)[0] > 0
        valid = np.isfinite(image).all(axis=0)
        scores = np.where(valid, score_array(model, image, valid), np.nan)
        rows.append({"modality": scene.modality, "auc": roc_auc(scores, mask),
                     **object_row(scores, mask, DEFAULT_FRACTION)})
    means = summarise(rows, "auc")
    means.update({f"rprec_{key}": value for key, value in summarise(rows, "rprec").items()})
    return means


def _write_baseline_map(method: str, image: np.ndarray, reference: Path, target: Path) -> None:
    """Score ``image`` with a baseline into a float32 GeoTIFF on the grid of ``reference``."""
    from ..raster.io import open_raster_checked
    from ..raster.output import create_score_raster
    scores = BASELINES[method](image).astype(np.float32)
    dataset = create_score_raster(str(target), open_raster_checked(str(reference)))
    dataset.GetRasterBand(1).WriteArray(scores)
    dataset.FlushCache()


def evaluate(data: Path, out_dir: Path, weights: str | None = None, device: str = "cpu",
             scale: int = 1, methods: tuple[str, ...] = METHODS, limit: int | None = None,
             fraction: float = DEFAULT_FRACTION, precision: str = "auto") -> list[dict]:
    """Score every scene with each method; write the maps, the TSV and the figure.

    ``limit`` keeps the first scenes of each modality; ``fraction`` is the share of valid
    pixels flagged for the object metrics (default: the product's default threshold).
    """
    from ..nn.detector import detect_raster

    scenes = [scene for _, group in groupby(find_scenes(data), key=lambda s: s.modality)
              for scene in list(group)[:limit]]
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, previews = [], []
    for scene in scenes:
        mask = read_array(scene.mask_path)[0] > 0
        image = (fill_nonfinite(read_array(scene.image_path))
                 if set(methods) & set(BASELINES) else None)
        row = {"modality": scene.modality, "scene": scene.name}
        for method in methods:
            target = kept_map(out_dir, scene, method)
            target.parent.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            if method == "detector":
                detect_raster(str(scene.image_path), str(target), device=device,
                              weights_path=weights, scale=scale, precision=precision)
            else:
                _write_baseline_map(method, image, scene.image_path, target)
            row[f"{method}_seconds"] = time.perf_counter() - start
            scores = read_score_map(target)
            row.update(method_row(method, scores, mask, fraction))
            if method == "detector" and \
                    sum(p[0] == scene.modality for p in previews) < PREVIEWS_PER_MODALITY:
                previews.append((scene.modality, scene.name, scores, mask))
        rows.append(row)
        print(f"{scene.modality:15s} {scene.name:38s} " + "  ".join(
            f"{m} {row[f'{m}_auc']:.4f}/{row[f'{m}_rprec']:.2f}" for m in methods), flush=True)
    columns = ["modality", "scene"] + [f"{m}_{k}" for m in methods
                                       for k in ("auc",) + OBJECT_METRICS + ("seconds",)]
    write_tsv(rows, columns, out_dir / "evaluation.tsv")
    _write_figure(previews, out_dir / "evaluation.png")
    return rows


def write_tsv(rows: list[dict], columns: list[str], path: Path) -> None:
    lines = ["\t".join(columns)]
    for row in rows:
        lines.append("\t".join(f"{row[c]:.6f}" if isinstance(row[c], float) else str(row[c])
                               for c in columns))
    path.write_text("\n".join(lines) + "\n")


def _write_figure(previews: list, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure written", file=sys.stderr)
        return
    if not previews:
        return
    figure, axes = plt.subplots(2, len(previews), figsize=(3 * len(previews), 6), squeeze=False)
    for column, (modality, name, scores, mask) in enumerate(previews):
        axes[0, column].imshow(scores, cmap="inferno")
        axes[0, column].set_title(f"{modality}\n{name[:24]}", fontsize=8)
        axes[1, column].imshow(mask, cmap="gray")
        for axis in axes[:, column]:
            axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _layout(table: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in table)


def interval_table(rows: list[dict], methods: tuple[str, ...], metrics: tuple[str, ...],
                   resamples: int = 2000, seed: int = 0) -> str:
    """Mean [90 % bootstrap interval] per modality and metric, and of the modality means."""
    table = [["modality", "metric", "n", *methods]]
    cells: dict[tuple[str, str], list[str]] = {}
    for metric in metrics:
        for method in methods:
            groups = by_modality(rows, f"{method}_{metric}")
            intervals, macro = bootstrap_intervals(groups, resamples, seed=seed)
            means = summarise(rows, f"{method}_{metric}")
            for modality, (low, high) in [*intervals.items(), (MACRO, macro)]:
                cells.setdefault((modality, metric), []).append(
                    f"{means[modality]:.3f} [{low:.3f}, {high:.3f}]")
    counts = {m: str(len(v)) for m, v in by_modality(rows, f"{methods[0]}_{metrics[0]}").items()}
    for modality in [*counts, MACRO]:
        for metric in metrics:
            n = counts.get(modality, "-")
            table.append([modality if metric == metrics[0] else "", metric, n,
                          *cells[(modality, metric)]])
    return _layout(table)


def wins_table(rows: list[dict], baselines: tuple[str, ...], metrics: tuple[str, ...]) -> str:
    """Scenes where the detector is above / equal to / below each baseline, per modality."""
    table = [["modality", *(f"vs {b} {metric}" for metric in metrics for b in baselines)]]
    for modality in sorted({r["modality"] for r in rows}) + ["all"]:
        selected = [r for r in rows if modality in ("all", r["modality"])]
        line = [modality]
        for metric in metrics:
            for baseline in baselines:
                pairs = [(r[f"detector_{metric}"], r[f"{baseline}_{metric}"]) for r in selected]
                pairs = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
                line.append("/".join(str(sum(1 for a, b in pairs if test(a, b)))
                                     for test in (float.__gt__, float.__eq__, float.__lt__)))
        table.append(line)
    return _layout(table)


def report(rows: list[dict], methods: tuple[str, ...], fraction: float, resamples: int,
           seed: int) -> str:
    """The printed summary: pixel table, object table and win counts."""
    names = ", ".join(f"{m} = {BASELINE_NAMES[m]}" for m in methods if m in BASELINE_NAMES)
    parts = [f"Pixel ROC AUC: mean per modality [90 % bootstrap interval over scenes, "
             f"{resamples} resamples]; {names}",
             interval_table(rows, methods, ("auc",), resamples, seed),
             f"\nObjects: top {100 * fraction:g} % of valid pixels, 8-connected groups ranked by "
             "peak, first K = number of targets; R-precision, target recall at K, hit@1",
             interval_table(rows, methods, OBJECT_METRICS, resamples, seed)]
    baselines = tuple(m for m in methods if m != "detector")
    if "detector" in methods and baselines:
        parts += ["\nDetector per scene against each baseline: better/equal/worse",
                  wins_table(rows, baselines, ("auc", "rprec"))]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, default=Path("evaluation"))
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=int, default=1, help="detector analysis scale (1, 2 or 4)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="the detector's convolution arithmetic, as anomaly:detect's "
                             "PRECISION (default %(default)s)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--limit", type=int, default=None, help="first N scenes of each modality")
    parser.add_argument("--fraction", type=float, default=DEFAULT_FRACTION,
                        help="share of valid pixels flagged for the object metrics")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        parser.error(f"unknown methods {unknown}: choose from {','.join(METHODS)}")
    rows = evaluate(args.data, args.out, args.weights, args.device, args.scale, methods,
                    args.limit, args.fraction, args.precision)
    print("\n" + report(rows, methods, args.fraction, args.resamples, args.seed))
    print(f"\nwrote {args.out / 'evaluation.tsv'}, {args.out / 'evaluation.png'} and the maps "
          f"under {args.out / 'maps'}/<method>/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
