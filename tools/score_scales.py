"""What the classic scores look like on real scenes: the figures quoted in the help texts.

Scores every ``<data>/<modality>/<scene>/image.tif`` with the functions that
``anomaly:rx``, ``anomaly:local_rx`` and ``anomaly:local_contrast`` call (default
parameters) and prints, per scene, per modality and over all scenes, the minimum, the
median, the 99.5th percentile (the default polygon threshold flags the scores above it)
and the maximum of the valid scores; RX also divided by the square root of the number
of bands, local RX also divided by the number of whitened components it used.

    python tools/score_scales.py [DATA]   (default ../shared/data/dev)
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PYPATH = REPO / "build" / "pythonpath"
if str(PYPATH) not in sys.path:
    sys.path.insert(0, str(PYPATH))

from anomaly_detector.model.training.evaluate import find_scenes, read_score_map  # noqa: E402
from anomaly_detector.model.classic.local_baselines import (local_contrast_score_raster,  # noqa: E402
                                                    local_rx_score_raster)
from anomaly_detector.model.classic.rx import rx_score_raster  # noqa: E402

QUANTILES = (0.0, 50.0, 99.5, 100.0)


def score_quantiles(method: str, image: Path, target: Path) -> tuple[list[float], float]:
    """The :data:`QUANTILES` of ``method``'s scores of ``image``, and the
    divisor that puts them on a common scale (sqrt(bands) for RX, components for local RX)."""
    if method == "rx":
        mean, _, _ = rx_score_raster(str(image), str(target))
        divisor = math.sqrt(len(mean))
    elif method == "local_rx":
        divisor = float(local_rx_score_raster(str(image), str(target)).components or 1)
    else:
        local_contrast_score_raster(str(image), str(target))
        divisor = 1.0
    scores = read_score_map(target)
    return list(np.percentile(scores[np.isfinite(scores)], QUANTILES)), divisor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=REPO.parent / "shared/data/dev")
    args = parser.parse_args(argv)
    per_modality = defaultdict(list)
    print("scene\tmethod\tdivisor d\tmin\tmedian\tp99.5\tmax\tmin/d\tmedian/d\tp99.5/d\tmax/d")
    with tempfile.TemporaryDirectory() as folder:
        for scene in find_scenes(args.data):
            for method in ("rx", "local_rx", "local_contrast"):
                values, divisor = score_quantiles(method, scene.image_path,
                                                  Path(folder) / f"{method}.tif")
                row = values + [v / divisor for v in values]
                per_modality[scene.modality, method].append(row)
                per_modality["all", method].append(row)
                print(f"{scene.modality}/{scene.name}\t{method}\t{divisor:.3g}\t" +
                      "\t".join(f"{v:.3g}" for v in row))
    print("\nmodality\tmethod\tscenes\trange over scenes of: min | median | p99.5 | max "
          "(after '/': divided by d)")
    for (modality, method), rows in sorted(per_modality.items()):
        table = np.array(rows)
        spans = [f"{low:.3g}-{high:.3g}" for low, high in zip(table.min(axis=0), table.max(axis=0))]
        half = len(QUANTILES)
        print(f"{modality}\t{method}\t{len(rows)}\t{' | '.join(spans[:half])}\t/ "
              f"{' | '.join(spans[half:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
