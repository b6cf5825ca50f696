"""How large are the labelled targets, against the largest region the simulation calls an anomaly?

    python tools/target_sizes.py DATA [--crop 96]

For every ``DATA/<modality>/<scene>/mask.tif``, the targets are the 8-connected groups of
its mask (as ``../shared/tools/objects.py`` counts them). Prints per modality the number of
targets, their median and largest area in pixels, and the share of target pixels that lie in
targets larger than the largest simulated anomaly: a small cut-out of ``small_max_share``
of the training crop (``PasteConfig``; ``--crop`` pixels square, ``make train``'s default),
and the method's band-shuffled anomaly of at most 2.3 % of its 224-pixel reference crop,
above which a spectrally foreign region is taught as normal.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "build" / "pythonpath"))
from anomaly_detector.model.training.evaluate import find_scenes, read_array  # noqa: E402
from anomaly_detector.model.training.objects import target_objects  # noqa: E402
from anomaly_detector.model.training.simulation_config import PasteConfig, SpectralConfig  # noqa: E402

REFERENCE_CROP = 224  # the method's training crop (../shared/docs/METHOD.md)


def target_areas(mask_path: Path) -> np.ndarray:
    """Area in pixels of each 8-connected target of a mask."""
    targets, count = target_objects(read_array(mask_path)[0] > 0)
    return np.bincount(targets.ravel(), minlength=count + 1)[1:].astype(float)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--crop", type=int, default=96, help="training crop side, pixels")
    args = parser.parse_args(argv)

    cut_out_limit = PasteConfig().small_max_share * args.crop ** 2
    method_limit = SpectralConfig().small_share[1] * REFERENCE_CROP ** 2
    areas: dict[str, list[float]] = defaultdict(list)
    for scene in find_scenes(args.data):
        areas[scene.modality].extend(target_areas(scene.mask_path))

    print(f"modality\ttargets\tmedian px\tlargest px\tshare of target pixels in targets above "
          f"{cut_out_limit:.0f} px\tabove {method_limit:.0f} px")
    for modality, values in areas.items():
        sizes = np.array(values)
        total = sizes.sum()
        print(f"{modality}\t{sizes.size}\t{np.median(sizes):.0f}\t{sizes.max():.0f}\t"
              f"{sizes[sizes > cut_out_limit].sum() / total:.2f}\t"
              f"{sizes[sizes > method_limit].sum() / total:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
