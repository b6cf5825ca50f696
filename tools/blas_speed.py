"""How fast numpy's matrix products are in this process, and through model.linalg.

    python tools/blas_speed.py
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libgslcblas.so.0 python tools/blas_speed.py

The second line puts GSL's reference CBLAS first in the symbol scope, as the QGIS
executables do (see model/linalg.py): numpy's product slows down, linalg.matmul does not.
Times a (200 x 200) by (200 x 65536) float64 product, the shape of RX and the spectral
reduction on 200 bands, and the Gram matrix of that (200 x 65536) block, the band
statistics' product (as a general product and by linalg.gram's symmetric update), and
16 384 solves of 10 x 10 systems in one call, local RX's batch, with OpenBLAS's threads and
on one thread (``linalg.single_threaded_blas``); best of 3.
"""
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "build" / "pythonpath"))
from anomaly_detector.model.linalg import (  # noqa: E402
    gram, matmul, reference_blas_first, single_threaded_blas)


def best_of(function, repeat: int = 3) -> float:
    function()  # warm-up (and torch's import for matmul)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((200, 200)), rng.random((200, 65536))
    print(f"GSL's reference CBLAS first: {reference_blas_first()}")
    print(f"numpy a @ b:          {best_of(lambda: a @ b):.3f} s")
    print(f"model.linalg.matmul:  {best_of(lambda: matmul(a, b)):.3f} s")
    print(f"Gram b @ b.T: linalg.matmul {best_of(lambda: matmul(b, b.T)):.3f} s, "
          f"linalg.gram {best_of(lambda: gram(b)):.3f} s")
    factors = rng.normal(size=(16384, 10, 10))
    systems = factors @ factors.transpose(0, 2, 1) + np.eye(10)
    sides = rng.normal(size=(16384, 10, 1))
    threaded = best_of(lambda: np.linalg.solve(systems, sides))
    with single_threaded_blas():
        single = best_of(lambda: np.linalg.solve(systems, sides))
    print(f"16 384 solves of 10 x 10: {threaded:.3f} s, on one OpenBLAS thread {single:.3f} s")


if __name__ == "__main__":
    main()
