"""Pixel-level ROC AUC of the bundled detector and of global RX on labelled scenes.

Layout read: ``<data>/<modality>/<scene>/{image.tif, mask.tif}`` (mask > 0 = anomaly).

    python -m anomaly_detector.model.evaluate DATA [--out DIR] [--weights FILE] [--scale 1]

runs the detector exactly as ``anomaly:detect`` does (:func:`.detector.detect_raster`,
tiles and all) and global RX (:mod:`.rx`), writes ``DIR/evaluation.tsv`` (per-scene
AUC and seconds), ``DIR/evaluation.png`` (score maps of a few scenes beside their
masks) and the detector's maps as ``DIR/maps/<modality>/<scene>.tif``, and prints the mean AUC per modality and the mean of the modality means.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREVIEWS_PER_MODALITY = 2


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


def summarise(rows: list[dict], column: str) -> dict[str, float]:
    """Mean of ``column`` per modality, plus 'mean_of_modalities'."""
    by_modality: dict[str, list[float]] = {}
    for row in rows:
        by_modality.setdefault(row["modality"], []).append(row[column])
    means = {m: float(np.mean(v)) for m, v in sorted(by_modality.items())}
    means["mean_of_modalities"] = float(np.mean(list(means.values())))
    return means


def validate_in_memory(model, scenes: list[Scene]) -> dict[str, float]:
    """Quick whole-image validation (used while training): modality means of AUC."""
    from .detector import score_array
    rows = []
    for scene in scenes:
        image = read_array(scene.image_path).astype(np.float32)
        mask = read_array(scene.mask_path)[0] > 0
        valid = np.isfinite(image).all(axis=0)
        rows.append({"modality": scene.modality, "auc": roc_auc(score_array(model, image, valid), mask)})
    return summarise(rows, "auc")


def evaluate(data: Path, out_dir: Path, weights: str | None = None, device: str = "cpu",
             scale: int = 1) -> list[dict]:
    """Score every scene with the detector and with RX; write the TSV and the figure."""
    from .detector import detect_raster
    from .rx import rx_score_raster

    out_dir.mkdir(parents=True, exist_ok=True)
    rows, previews = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for scene in find_scenes(data):
            mask = read_array(scene.mask_path)[0] > 0
            row = {"modality": scene.modality, "scene": scene.name}
            for method, run in (("detector", lambda s, d: detect_raster(
                    s, d, device=device, weights_path=weights, scale=scale)),
                                ("rx", rx_score_raster)):
                # detector maps are kept in the layout ../shared/tools/evaluate.py --scores reads
                folder = out_dir / "maps" / scene.modality if method == "detector" else Path(scratch)
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / f"{scene.name}.tif"
                start = time.perf_counter()
                run(str(scene.image_path), str(target))
                row[f"{method}_seconds"] = time.perf_counter() - start
                scores = read_array(target)[0].astype(np.float64)
                row[f"{method}_auc"] = roc_auc(scores, mask)
                if method == "detector" and \
                        sum(p[0] == scene.modality for p in previews) < PREVIEWS_PER_MODALITY:
                    previews.append((scene.modality, scene.name, scores, mask))
            rows.append(row)
            print(f"{scene.modality:15s} {scene.name:40s} detector {row['detector_auc']:.4f}  "
                  f"rx {row['rx_auc']:.4f}", flush=True)
    _write_tsv(rows, out_dir / "evaluation.tsv")
    _write_figure(previews, out_dir / "evaluation.png")
    return rows


def _write_tsv(rows: list[dict], path: Path) -> None:
    columns = ["modality", "scene", "detector_auc", "rx_auc", "detector_seconds", "rx_seconds"]
    lines = ["\t".join(columns)]
    for row in rows:
        lines.append("\t".join(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c])
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, default=Path("evaluation"))
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=int, default=1, help="analysis scale (1, 2 or 4)")
    args = parser.parse_args(argv)
    rows = evaluate(args.data, args.out, args.weights, args.device, args.scale)
    detector, rx = summarise(rows, "detector_auc"), summarise(rows, "rx_auc")
    print(f"\n{'modality':20s} {'detector':>9s} {'RX':>9s}")
    for key in detector:
        print(f"{key:20s} {detector[key]:9.4f} {rx[key]:9.4f}")
    print(f"\nwrote {args.out / 'evaluation.tsv'} and {args.out / 'evaluation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
