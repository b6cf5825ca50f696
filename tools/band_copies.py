"""Which rasters are one grey image stored in several integer bands, and which have
components that vary by less than one grey level (figures of the v27, v28 and v32 rules
and the model card)?

    python tools/band_copies.py DIR [DIR ...] [--max-bands 20]

For every ``DIR/<modality>/<scene>/image.tif`` (labelled scenes) or ``DIR/<modality>/*.tif``
(training backgrounds) of 2 to ``--max-bands`` bands, prints its band count, data type,
the three largest eigenvalues of its band covariance (the detector's statistics,
:func:`detection_statistics`), for integer bands how many of the components after the first
vary by less than one grey level and by less than four (``below 1/4: n m``), the smallest
eigenvalue, and whether the detector reduces it to one component (``copies``: every
component after the first varies by less than one grey level).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "build" / "pythonpath"))
from anomaly_detector.model.nn.detector import detection_statistics  # noqa: E402
from anomaly_detector.model.nn.features import SpectralReduction  # noqa: E402
from anomaly_detector.model.raster.io import open_raster_checked  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", type=Path, nargs="+")
    parser.add_argument("--max-bands", type=int, default=20)
    args = parser.parse_args(argv)
    for root in args.dirs:
        for path in sorted(list(root.glob("*/*/image.tif")) + list(root.glob("*/*.tif"))):
            info = open_raster_checked(str(path))
            if not 2 <= info.band_count <= args.max_bands:
                continue
            statistics = detection_statistics(str(path))
            eigenvalues = np.sort(np.linalg.eigvalsh(statistics.covariance))[::-1]
            minor, grey = eigenvalues[1:], statistics.grey_level
            below = f"below 1/4: {(minor < grey).sum():3d} {(minor < 4 * grey).sum():3d}" \
                if grey else "float" + " " * 14
            copies = SpectralReduction.fit(*statistics).full.shape[1] == 1
            name = path.parent.name if path.name == "image.tif" else path.stem
            print(f"{path.relative_to(root).parts[0]:14s} {name:40s} {info.band_count:3d} "
                  f"{info.dtypes[0]:8s} {' '.join(f'{v:12.3f}' for v in eigenvalues[:3])}  "
                  f"{below}  smallest {eigenvalues[-1]:10.3g}{'  copies' if copies else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
