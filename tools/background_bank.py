"""Write the training background images into one bank file, for a machine without GDAL.

    python tools/background_bank.py DIR [DIR ...] --out bank.npz

Reads every ``<DIR>/<modality>/*.tif`` as stored (with GDAL) into a compressed ``.npz``
that ``python -m anomaly_detector.model.training.train --data bank.npz`` reads with numpy
alone (no pickled objects): the same images in the same order as the folders give.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anomaly_detector.model.training.simulation import save_bank


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    save_bank(args.roots, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
