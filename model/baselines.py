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
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def fill_nonfinite(image: np.ndarray) -> np.ndarray:
    """Float64 copy of ``image``, non-finite values replaced by their band's mean (0 if none)."""
    image = np.array(image, dtype=np.float64)
    for band in image:
        bad = ~np.isfinite(band)
        if bad.any():
            band[bad] = band[~bad].mean() if (~bad).any() else 0.0
    return image


def box_sum(array: np.ndarray, radius: int) -> np.ndarray:
    """Sum over the ``(2 radius + 1)``-square window around each pixel, clipped at the border."""
    height, width = array.shape
    integral = np.zeros((height + 1, width + 1))
    np.cumsum(np.cumsum(array, axis=0, dtype=np.float64), axis=1, out=integral[1:, 1:])
    rows, cols = np.arange(height), np.arange(width)
    top = integral[np.clip(rows - radius, 0, height)]
    bottom = integral[np.clip(rows + radius + 1, 0, height)]
    left, right = np.clip(cols - radius, 0, width), np.clip(cols + radius + 1, 0, width)
    return bottom[:, right] - top[:, right] - bottom[:, left] + top[:, left]


def box_count(height: int, width: int, radius: int) -> np.ndarray:
    """Number of in-image pixels in the ``(2 radius + 1)``-square window around each pixel."""
    def extent(size: int) -> np.ndarray:
        index = np.arange(size)
        return np.clip(index + radius + 1, 0, size) - np.clip(index - radius, 0, size)
    return np.outer(extent(height), extent(width)).astype(np.float64)


def ring_sum(array: np.ndarray, inner: int, outer: int) -> np.ndarray:
    """Sum over the box of radius ``outer`` minus the box of radius ``inner`` (none if < 0)."""
    total = box_sum(array, outer)
    return total - box_sum(array, inner) if inner >= 0 else total


def ring_count(height: int, width: int, inner: int, outer: int) -> np.ndarray:
    """Pixels in the ring of :func:`ring_sum` (at least 1)."""
    count = box_count(height, width, outer)
    if inner >= 0:
        count = count - box_count(height, width, inner)
    return np.maximum(count, 1.0)


def ring_stats(array: np.ndarray, inner: int, outer: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (non-negative) variance of ``array`` over the ring of :func:`ring_sum`."""
    count = ring_count(*array.shape, inner, outer)
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


def whiten(image: np.ndarray, components: int) -> np.ndarray:
    """``(H, W, K)`` whitened principal components: all of them with <= 3 bands, else the
    top ``components``."""
    bands, height, width = image.shape
    centred = _centred_pixels(image)
    eigenvalues, eigenvectors = np.linalg.eigh(_covariance(centred))
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    keep = eigenvalues > max(eigenvalues[0], 0.0) * 1e-10
    if not keep.any():  # constant image
        return np.zeros((height, width, 1))
    eigenvalues, eigenvectors = eigenvalues[keep], eigenvectors[:, keep]
    count = eigenvalues.size if bands <= 3 else min(components, eigenvalues.size)
    projected = (centred @ eigenvectors[:, :count]) / np.sqrt(eigenvalues[:count])
    return projected.reshape(height, width, count)


def local_rx(image: np.ndarray, inner: int = 7, outer: int = 21, components: int = 10,
             ridge: float = 1e-3, chunk: int = 100_000) -> np.ndarray:
    """Dual-window local RX score of a ``(B, H, W)`` image (window sides ``inner`` < ``outer``)."""
    if outer <= inner:
        raise ValueError("local RX: the outer window must be larger than the inner (guard) window")
    whitened = whiten(image, components)
    height, width, count = whitened.shape
    r_in, r_out = inner // 2, outer // 2
    if count == 1:
        mean, variance = ring_stats(whitened[:, :, 0], r_in, r_out)
        return (whitened[:, :, 0] - mean) ** 2 / (variance + ridge)
    pixels = ring_count(height, width, r_in, r_out)
    pairs = np.array([(i, j) for i in range(count) for j in range(i, count)])
    moments = np.empty((height, width, count + len(pairs)))
    for c in range(count):
        moments[:, :, c] = ring_sum(whitened[:, :, c], r_in, r_out) / pixels
    for p, (i, j) in enumerate(pairs):
        product = whitened[:, :, i] * whitened[:, :, j]
        moments[:, :, count + p] = ring_sum(product, r_in, r_out) / pixels
    moments = moments.reshape(height * width, -1)
    flat = whitened.reshape(height * width, count)
    out = np.empty(height * width)
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


def local_contrast(image: np.ndarray, scales: tuple[int, ...] = (1, 3, 5, 9, 15),
                   eps: float = 0.01) -> np.ndarray:
    """Multi-scale local contrast score of a ``(B, H, W)`` image."""
    grey = image.mean(axis=0)
    deviation = grey.std()
    grey = (grey - grey.mean()) / (deviation if deviation > 0 else 1.0)
    best = np.zeros(grey.shape)
    for side in scales:
        radius = (side - 1) // 2
        centre = box_sum(grey, radius) / box_count(*grey.shape, radius)
        mean, variance = ring_stats(grey, side, 2 * side + 1)
        np.maximum(best, np.abs(centre - mean) / (np.sqrt(variance) + eps), out=best)
    return best


BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rx": global_rx, "lrx": local_rx, "lcm": local_contrast}
BASELINE_NAMES = {"rx": "RX", "lrx": "local RX", "lcm": "local contrast"}
