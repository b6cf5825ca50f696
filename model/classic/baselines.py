"""Classic anomaly baselines on whole in-memory images (numpy only).

Images are ``(B, H, W)`` arrays; every score is ``(H, W)`` float64, higher = more
anomalous. The definitions are those of ``../shared/tools/evaluate.py``:

* :func:`global_rx` - Mahalanobis distance to the scene mean under the scene
  covariance (pseudo-inverse); one band: ``|x - mean| / std``.
* :func:`local_rx` - dual-window RX: background = outer window minus guard window
  around each pixel (clipped at the border), on the top principal components
  (all of them with 1-3 bands) whitened with the global covariance, with a ridge
  added to every local covariance; local moments from integral images.
* :func:`local_contrast` - multi-scale contrast of the standardised band mean: for
  each centre box side ``s``, ``|centre mean - ring mean| / (ring std + eps)`` with
  the ring between the ``2s+1`` and ``4s+3`` boxes; maximum over the scales.

The window filters (:func:`ring_rx`, :func:`grey_contrast`) also take a ``valid`` mask:
invalid pixels (zero in their input) are left out of every window. Scoring a tile
whose margin covers the windows' radius gives the whole image's scores on its core;
:mod:`.local_baselines` streams them so through the engine.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..linalg import single_threaded_blas

GUARD_WINDOW, OUTER_WINDOW = 7, 21   # local RX window sides
COMPONENTS, RIDGE = 10, 1e-3         # local RX: whitened components kept, ridge (whitened units)
CONTRAST_SCALES = (1, 3, 5, 9, 15)   # local contrast centre box sides
CONTRAST_EPS = 0.01                  # local contrast: added to the ring's standard deviation


def fill_nonfinite(image: np.ndarray) -> np.ndarray:
    """Float64 copy of ``image``, non-finite values replaced by their band's mean (0 if none)."""
    image = np.array(image, dtype=np.float64)
    for band in image:
        bad = ~np.isfinite(band)
        if bad.any():
            band[bad] = band[~bad].mean() if (~bad).any() else 0.0
    return image


def _integral(array: np.ndarray) -> np.ndarray:
    """``(H + 1, W + 1)`` float64 sums of ``array`` above and left of each corner."""
    height, width = array.shape
    integral = np.zeros((height + 1, width + 1))
    np.cumsum(np.cumsum(array, axis=0, dtype=np.float64), axis=1, out=integral[1:, 1:])
    return integral


def _box(integral: np.ndarray, radius: int) -> np.ndarray:
    """The window sums of :func:`box_sum` from the array's :func:`_integral`."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    rows, cols = np.arange(height), np.arange(width)
    top = integral[np.clip(rows - radius, 0, height)]
    bottom = integral[np.clip(rows + radius + 1, 0, height)]
    left, right = np.clip(cols - radius, 0, width), np.clip(cols + radius + 1, 0, width)
    return bottom[:, right] - top[:, right] - bottom[:, left] + top[:, left]


def box_sum(array: np.ndarray, radius: int) -> np.ndarray:
    """Sum over the ``(2 radius + 1)``-square window around each pixel, clipped at the border."""
    return _box(_integral(array), radius)


def box_count(height: int, width: int, radius: int) -> np.ndarray:
    """Number of in-image pixels in the ``(2 radius + 1)``-square window around each pixel."""
    def extent(size: int) -> np.ndarray:
        index = np.arange(size)
        return np.clip(index + radius + 1, 0, size) - np.clip(index - radius, 0, size)
    return np.outer(extent(height), extent(width)).astype(np.float64)


def _ring(integral: np.ndarray, inner: int, outer: int) -> np.ndarray:
    """The sums of :func:`ring_sum` from the array's :func:`_integral`."""
    total = _box(integral, outer)
    return total - _box(integral, inner) if inner >= 0 else total


def ring_sum(array: np.ndarray, inner: int, outer: int) -> np.ndarray:
    """Sum over the box of radius ``outer`` minus the box of radius ``inner`` (none if < 0)."""
    return _ring(_integral(array), inner, outer)


def ring_count(height: int, width: int, inner: int, outer: int) -> np.ndarray:
    """Pixels in the ring of :func:`ring_sum` (at least 1)."""
    count = box_count(height, width, outer)
    if inner >= 0:
        count = count - box_count(height, width, inner)
    return np.maximum(count, 1.0)


def ring_pixels(shape: tuple[int, int], inner: int, outer: int,
                valid: np.ndarray | None = None) -> np.ndarray:
    """Pixels in each ring of :func:`ring_sum` (valid ones only when ``valid`` is given),
    at least 1."""
    if valid is None:
        return ring_count(*shape, inner, outer)
    return np.maximum(ring_sum(valid.astype(np.float64), inner, outer), 1.0)


def ring_stats(array: np.ndarray, inner: int, outer: int, count: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (non-negative) variance of ``array`` over the ring of :func:`ring_sum`
    (``count``: its pixels, default :func:`ring_count`)."""
    count = ring_count(*array.shape, inner, outer) if count is None else count
    mean = ring_sum(array, inner, outer) / count
    variance = np.maximum(ring_sum(array * array, inner, outer) / count - mean * mean, 0.0)
    return mean, variance


def _centred_pixels(image: np.ndarray) -> np.ndarray:
    """``(H W, B)`` pixels minus the band means."""
    pixels = image.reshape(image.shape[0], -1).T
    return pixels - pixels.mean(axis=0)


def _covariance(centred: np.ndarray) -> np.ndarray:
    return centred.T @ centred / max(centred.shape[0] - 1, 1)


def global_rx(image: np.ndarray) -> np.ndarray:
    """Global RX score of a ``(B, H, W)`` image."""
    bands, height, width = image.shape
    centred = _centred_pixels(image)
    if bands == 1:
        deviation = centred[:, 0].std()
        scores = np.abs(centred[:, 0]) / (deviation if deviation > 0 else 1.0)
        return scores.reshape(height, width)
    inverse = np.linalg.pinv(_covariance(centred))
    return ((centred @ inverse) * centred).sum(axis=1).reshape(height, width)


def whitening_basis(covariance: np.ndarray, components: int
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """``(vectors (B, K), scales (K,))``: the principal axes of ``covariance`` and the
    standard deviations along them, all of them with <= 3 bands, else the top
    ``components``; axes without variance are dropped (None when none is left)."""
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    keep = eigenvalues > max(eigenvalues[0], 0.0) * 1e-10
    if not keep.any():  # constant image
        return None
    eigenvalues, eigenvectors = eigenvalues[keep], eigenvectors[:, keep]
    count = eigenvalues.size if covariance.shape[0] <= 3 else min(components, eigenvalues.size)
    return eigenvectors[:, :count], np.sqrt(eigenvalues[:count])


def whiten(image: np.ndarray, components: int) -> np.ndarray:
    """``(H, W, K)`` whitened principal components (see :func:`whitening_basis`)."""
    _, height, width = image.shape
    centred = _centred_pixels(image)
    basis = whitening_basis(_covariance(centred), components)
    if basis is None:
        return np.zeros((height, width, 1))
    vectors, scales = basis
    projected = (centred @ vectors) / scales
    return projected.reshape(height, width, vectors.shape[1])


def local_rx(image: np.ndarray, inner: int = GUARD_WINDOW, outer: int = OUTER_WINDOW,
             components: int = COMPONENTS, ridge: float = RIDGE, chunk: int = 100_000
             ) -> np.ndarray:
    """Dual-window local RX score of a ``(B, H, W)`` image (window sides ``inner`` < ``outer``)."""
    if outer <= inner:
        raise ValueError("local RX: the outer window must be larger than the inner (guard) window")
    return ring_rx(whiten(image, components), inner // 2, outer // 2, ridge, chunk)


def ring_rx(whitened: np.ndarray, inner: int, outer: int, ridge: float = RIDGE,
            chunk: int = 100_000, valid: np.ndarray | None = None) -> np.ndarray:
    """Squared Mahalanobis distance of each ``(H, W, K)`` pixel to the mean of the ring
    between the windows of radius ``inner`` and ``outer`` around it, under the ring's
    covariance plus ``ridge`` (``whitened`` is 0 where ``valid`` is False)."""
    height, width, count = whitened.shape
    pixels = ring_pixels((height, width), inner, outer, valid)
    if count == 1:
        mean, variance = ring_stats(whitened[:, :, 0], inner, outer, pixels)
        return (whitened[:, :, 0] - mean) ** 2 / (variance + ridge)
    pairs = np.array([(i, j) for i in range(count) for j in range(i, count)])
    moments = np.empty((count + len(pairs), height, width))  # one contiguous map each
    for c in range(count):
        np.divide(ring_sum(whitened[:, :, c], inner, outer), pixels, out=moments[c])
    for p, (i, j) in enumerate(pairs):
        product = whitened[:, :, i] * whitened[:, :, j]
        np.divide(ring_sum(product, inner, outer), pixels, out=moments[count + p])
    moments = moments.reshape(len(moments), -1).T  # (pixels, moments), a view
    flat = whitened.reshape(height * width, count)
    out = np.empty(height * width)
    with single_threaded_blas():  # tiny solves: OpenBLAS threads cost several times the work
        for start in range(0, height * width, chunk):
            stop = min(start + chunk, height * width)
            mean = moments[start:stop, :count]
            covariance = np.empty((stop - start, count, count))
            covariance[:, pairs[:, 0], pairs[:, 1]] = moments[start:stop, count:]
            covariance[:, pairs[:, 1], pairs[:, 0]] = moments[start:stop, count:]
            covariance -= mean[:, :, None] * mean[:, None, :]
            covariance += np.eye(count) * ridge
            deviation = flat[start:stop] - mean
            try:
                solved = np.linalg.solve(covariance, deviation[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                solved = np.einsum("nij,nj->ni", np.linalg.pinv(covariance), deviation)
            out[start:stop] = np.einsum("ni,ni->n", deviation, solved)
    return out.reshape(height, width)


def local_contrast(image: np.ndarray, scales: tuple[int, ...] = CONTRAST_SCALES,
                   eps: float = CONTRAST_EPS) -> np.ndarray:
    """Multi-scale local contrast score of a ``(B, H, W)`` image."""
    grey = image.mean(axis=0)
    deviation = grey.std()
    grey = (grey - grey.mean()) / (deviation if deviation > 0 else 1.0)
    return grey_contrast(grey, scales, eps)


def grey_contrast(grey: np.ndarray, scales: tuple[int, ...], eps: float,
                  valid: np.ndarray | None = None) -> np.ndarray:
    """Maximum over the centre box sides ``scales`` of ``|centre mean - ring mean| /
    (ring std + eps)`` of a standardised ``(H, W)`` image (0 where ``valid`` is False)."""
    sums, squares = _integral(grey), _integral(grey * grey)  # shared by every window
    inside = None if valid is None else _integral(valid.astype(np.float64))

    def pixels(inner: int, outer: int) -> np.ndarray:  # ring_pixels, the mask summed once
        if inside is None:
            return ring_count(*grey.shape, inner, outer)
        return np.maximum(_ring(inside, inner, outer), 1.0)

    best = np.zeros(grey.shape)
    for side in scales:
        centre = _ring(sums, -1, (side - 1) // 2) / pixels(-1, (side - 1) // 2)
        count = pixels(side, 2 * side + 1)
        mean = _ring(sums, side, 2 * side + 1) / count
        variance = np.maximum(_ring(squares, side, 2 * side + 1) / count - mean * mean, 0.0)
        np.maximum(best, np.abs(centre - mean) / (np.sqrt(variance) + eps), out=best)
    return best


BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rx": global_rx, "lrx": local_rx, "lcm": local_contrast}
BASELINE_NAMES = {"rx": "RX", "lrx": "local RX", "lcm": "local contrast"}
