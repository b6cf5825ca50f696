"""What the detector sees at a few pixels of a raster (the diagnoses of the v27 and v29
rules and the model card).

    python tools/pixel_channels.py IMAGE ROW,COL [ROW,COL ...] [--all-components]

Scores IMAGE whole with the shipped weights in float32 and, for each ROW,COL, prints the
highest score within 15 px of it (row, column, score), the 5 x 5 values of band 1 around
that pixel and its 12 input channels (5 reduced, 7 evidence; compressed as the network
sees them). ``--all-components`` keeps every non-degenerate component, as the reduction
did before v27 (grey copies included).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "build" / "pythonpath"))
from anomaly_detector.model.nn.detector import TileScorer, detection_statistics  # noqa: E402
from anomaly_detector.model.nn.features import SpectralReduction  # noqa: E402
from anomaly_detector.model.nn.weights import load_detector  # noqa: E402
from anomaly_detector.model.training.evaluate import read_array  # noqa: E402

REACH = 15


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("pixels", nargs="+", help="ROW,COL")
    parser.add_argument("--all-components", action="store_true")
    args = parser.parse_args(argv)
    mean, covariance, grey_level = detection_statistics(str(args.image))
    reduction = SpectralReduction.fit(mean, covariance, 0.0 if args.all_components else grey_level)
    model = load_detector()
    scorer = TileScorer(model, reduction, precision="float32")
    image = read_array(args.image).astype(np.float32)
    scores = scorer(image)
    with torch.inference_mode():
        channels = model.with_evidence_channels(torch.from_numpy(reduction.apply(image))[None],
                                                reduction.grey_step)[0]
    print(f"{args.image}: components kept {reduction.full.shape[1]} of {image.shape[0]} bands, "
          f"one grey level {reduction.grey_step:.4f} along component 1")
    for pixel in args.pixels:
        row, col = (int(v) for v in pixel.split(","))
        top, left = max(0, row - REACH), max(0, col - REACH)
        window = scores[top:row + REACH + 1, left:col + REACH + 1]
        peak_row, peak_col = np.unravel_index(window.argmax(), window.shape)
        peak_row, peak_col = peak_row + top, peak_col + left
        values = image[0, max(0, peak_row - 2):peak_row + 3, max(0, peak_col - 2):peak_col + 3]
        print(f"peak {peak_row},{peak_col} score {scores[peak_row, peak_col]:.3f}; band 1 "
              f"{values.astype(int).tolist()}")
        print("  channels " + " ".join(f"{v:+.2f}" for v in channels[:, peak_row, peak_col]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
