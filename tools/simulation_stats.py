"""What the simulation draws: sizes of the simulated targets, how flat the integer
infrared backgrounds are, and how many crops are integer-valued.

    python tools/simulation_stats.py [--batches 40] [--seed 1] [--crops 400] [--rounded-crops]
        [--data DIR ...]

Draws ``--batches`` x ``make_batch(simulator, rng, 8)`` of ``make train``'s simulation
(``np.random.default_rng(seed)``) and prints the targets per batch (8-connected anomaly
objects) and their sizes: median, 10th and 90th percentiles, and the share of anomaly
pixels in targets above 100 px. Then, over 20 x 20 px windows of the infrared backgrounds
stored as integers (band mean), the share whose standard deviation is below 1 and 2 grey
levels. Then, of ``--crops`` simulated crops (seeded alike; ``--rounded-crops`` as in
training), those whose every value is an integer. Last, over ``--batches`` batches as
``--grey-floors`` reduces them, the crops of a known grey level and their grey steps (one
grey level along component 1, whitened): median, 10th and 90th percentiles, and the share
above the evidence's fixed floor.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "build" / "pythonpath"))
from anomaly_detector.model.training.simulation import (AnomalySimulator, load_backgrounds,  # noqa: E402
                                                        make_batch)
from anomaly_detector.model.training.simulation_config import (ANOMALY,  # noqa: E402
                                                               SimulationConfig)
from anomaly_detector.model.nn.evidence import SPREAD_FLOOR  # noqa: E402
from anomaly_detector.model.training.train import SHARED_DATA  # noqa: E402

WINDOW = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--crops", type=int, default=400)
    parser.add_argument("--rounded-crops", action="store_true")
    parser.add_argument("--data", type=Path, nargs="+",
                        default=[SHARED_DATA / "train", SHARED_DATA / "train_extra"])
    args = parser.parse_args(argv)
    backgrounds = load_backgrounds(args.data)
    simulator, rng = AnomalySimulator(backgrounds), np.random.default_rng(args.seed)
    sizes = []
    for _ in range(args.batches):
        for labels in make_batch(simulator, rng, 8)[1]:
            objects, count = ndimage.label(labels == ANOMALY, structure=np.ones((3, 3)))
            sizes.extend(np.bincount(objects.ravel())[1:count + 1])
    sizes = np.array(sizes)
    low, median, high = np.percentile(sizes, [10, 50, 90])
    print(f"targets per batch {len(sizes) / args.batches:.1f}; size median {median:.0f} px, "
          f"10th / 90th percentile {low:.0f} / {high:.0f} px; targets above 100 px "
          f"{(sizes > 100).mean():.0%} of them, {sizes[sizes > 100].sum() / sizes.sum():.0%} "
          f"of the anomaly pixels")
    spreads = np.array([image.pixels.mean(axis=0)[y:y + WINDOW, x:x + WINDOW].std()
                        for image in backgrounds if image.modality == "infrared" and image.step
                        for y in range(0, image.pixels.shape[1] - WINDOW, WINDOW)
                        for x in range(0, image.pixels.shape[2] - WINDOW, WINDOW)])
    print(f"integer infrared backgrounds: {len(spreads)} windows of {WINDOW} x {WINDOW} px, "
          f"standard deviation below 1 grey level {(spreads < 1).mean():.0%}, below 2 "
          f"{(spreads < 2).mean():.0%}")
    crop_simulator = AnomalySimulator(backgrounds, config=SimulationConfig(
        rounded_crops=args.rounded_crops, quantum_floor=1.0 if args.rounded_crops else 0.0))
    rng = np.random.default_rng(args.seed)
    crops = [crop_simulator.sample(rng)[0] for _ in range(args.crops)]
    print(f"integer-valued crops: {sum(np.array_equal(c, np.round(c)) for c in crops)} of "
          f"{args.crops}" + (" (--rounded-crops, --quantum-floor 1)" if args.rounded_crops else ""))
    rng = np.random.default_rng(args.seed)
    steps = np.concatenate([make_batch(simulator, rng, 8, grey_floors=True)[2]
                            for _ in range(args.batches)])
    known = steps[steps > 0]
    low, median, high = np.percentile(known, [10, 50, 90])
    print(f"--grey-floors: {known.size} of {steps.size} crops of a known grey level; grey step "
          f"median {median:.3f}, 10th / 90th percentile {low:.3f} / {high:.3f}, above the "
          f"fixed floor {SPREAD_FLOOR} {(known > SPREAD_FLOOR).mean():.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
