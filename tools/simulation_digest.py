"""SHA-256 of seeded training batches: the simulation's fingerprint.

    python tools/simulation_digest.py [--batches 50] [--data DIR ...]

Draws ``--batches`` x ``make_batch(simulator, rng, 8)`` with ``np.random.default_rng(20241)``
(the training seed) from the background bank of ``make train`` and prints the SHA-256 of
all features and labels bytes. A change of the simulation that keeps this digest keeps
``make train`` reproducing the bundled weights.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "build" / "pythonpath"))
from anomaly_detector.model.training.simulation import (AnomalySimulator, load_backgrounds,  # noqa: E402
                                                        make_batch)
from anomaly_detector.model.training.train import SHARED_DATA  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--data", type=Path, nargs="+",
                        default=[SHARED_DATA / "train", SHARED_DATA / "train_extra"])
    args = parser.parse_args()
    simulator = AnomalySimulator(load_backgrounds(args.data))
    rng = np.random.default_rng(20241)
    digest = hashlib.sha256()
    for _ in range(args.batches):
        features, labels, _ = make_batch(simulator, rng, 8)
        digest.update(features.tobytes())
        digest.update(labels.tobytes())
    print(f"{args.batches * 8} samples sha256 {digest.hexdigest()}")


if __name__ == "__main__":
    main()
