"""Channel ablation of the bundled detector on labelled scenes (figures of weights/MODEL.md).

    PYTHONPATH=build/pythonpath .venv/bin/python tools/ablation.py ../shared/data/dev

Scores every ``<data>/<modality>/<scene>/image.tif`` whole (no tiling) with the
shipped weights in float32, once with all input channels and once with each group of the
spectral reduction's channels set to zero, and prints the mean AUC per modality.
"""
import sys

import numpy as np

from anomaly_detector.model.nn.detector import TileScorer
from anomaly_detector.model.training.evaluate import find_scenes, read_array, roc_auc, summarise
from anomaly_detector.model.nn.features import fit_from_array
from anomaly_detector.model.nn.weights import load_detector

VARIANTS = {"all channels": [], "without the RX distance channel": [4],
            "without components 2-4": [1, 2, 3], "without component 1": [0]}
MODALITIES = ["hyperspectral", "infrared", "sar", "visible_aerial", "mean_of_modalities"]


def main(data: str) -> None:
    model = load_detector()
    rows = {name: [] for name in VARIANTS}
    for scene in find_scenes(data):
        stored = read_array(scene.image_path)
        image = stored.astype(np.float32)
        mask = read_array(scene.mask_path)[0] > 0
        reduction = fit_from_array(stored)  # an integer raster keeps its grey level
        scorer = TileScorer(model, reduction, precision="float32")  # the card's arithmetic
        tile = scorer.prepare(image)
        for name, zeroed in VARIANTS.items():
            masked = tile.channels.copy()
            masked[zeroed] = 0
            scores = scorer.score_prepared([tile._replace(channels=masked)])[0]
            rows[name].append({"modality": scene.modality, "auc": roc_auc(scores, mask)})
    print("| channels fed | " + " | ".join(MODALITIES) + " |")
    for name in VARIANTS:
        means = summarise(rows[name], "auc")
        print(f"| {name} | " + " | ".join(f"{means.get(m, float('nan')):.3f}" for m in MODALITIES) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/dev")
