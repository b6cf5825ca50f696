"""Geometry of the simulation: random crops, region masks, rings, spots and blurs."""
from __future__ import annotations

import numpy as np

from .simulation_config import Count, ShapeConfig


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def count(rng: np.random.Generator, counts: Count) -> int:
    """A count drawn uniformly from ``counts`` (both ends included)."""
    return rng.integers(counts[0], counts[1] + 1)


def random_crop(pixels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (B, size, size) float32 crop of ``pixels`` (symmetrically padded when smaller) at a
    random position, rotated by a multiple of 90 degrees and flipped half of the time."""
    _, height, width = pixels.shape
    if height < size or width < size:
        pad_h, pad_w = max(0, size - height), max(0, size - width)
        pixels = np.pad(pixels, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                                 (pad_w // 2, pad_w - pad_w // 2)), mode="symmetric")
        height, width = pixels.shape[1:]
    top = rng.integers(0, height - size + 1)
    left = rng.integers(0, width - size + 1)
    crop = pixels[:, top:top + size, left:left + size]
    crop = np.rot90(crop, rng.integers(4), axes=(1, 2))
    if rng.random() < 0.5:
        crop = crop[:, :, ::-1]
    return np.ascontiguousarray(crop, dtype=np.float32)


def random_shape(size: int, area: float, rng: np.random.Generator,
                 shape: ShapeConfig = ShapeConfig()) -> np.ndarray:
    """A boolean (size, size) mask of about ``area`` pixels: an irregular blob or a
    rotated rectangle at a random position and angle."""
    area = max(float(area), 2.0)
    radius = np.sqrt(area / np.pi)
    cy, cx = centre = rng.uniform(-0.2 * radius, size - 1 + 0.2 * radius, 2)
    u, v = rotated_axes(size, centre, rng.uniform(0, np.pi))
    if rng.random() < shape.rectangle_p:
        aspect = log_uniform(rng, *shape.rectangle_aspect)
        half_w, half_h = np.sqrt(area * aspect) / 2, np.sqrt(area / aspect) / 2
        mask = (np.abs(u) <= half_w) & (np.abs(v) <= half_h)
    else:
        aspect = log_uniform(rng, *shape.blob_aspect)
        u, v = u / np.sqrt(aspect), v * np.sqrt(aspect)
        theta = np.arctan2(v, u)
        wobble = np.ones_like(theta)
        for k in shape.wobble_harmonics:
            wobble += rng.uniform(0, shape.wobble) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        mask = np.hypot(u, v) <= radius * wobble
    if not mask.any():
        mask[int(np.clip(cy, 0, size - 1)), int(np.clip(cx, 0, size - 1))] = True
    return mask


def ring(mask: np.ndarray, width: int = 4) -> np.ndarray:
    """Pixels within ``width`` of ``mask`` but outside it (square dilation)."""
    grown = mask.copy()
    for axis in (0, 1):
        for shift in range(1, width + 1):
            grown |= np.roll(mask, shift, axis) | np.roll(mask, -shift, axis)
    grown = grown | np.roll(grown, 1, 0) | np.roll(grown, -1, 0)
    around = grown & ~mask
    return around if around.any() else ~mask


def local_spread(image: np.ndarray, mask: np.ndarray, margin: int = 8,
                 floor: float = 0.0) -> np.ndarray:
    """Per-band standard deviation of the image around ``mask`` (its bounding box
    grown by ``margin``), at least ``floor``, shape (B, 1); never zero."""
    rows, cols = np.nonzero(mask)
    top, bottom = max(rows.min() - margin, 0), rows.max() + margin + 1
    left, right = max(cols.min() - margin, 0), cols.max() + margin + 1
    window = image[:, top:bottom, left:right].reshape(image.shape[0], -1)
    least = np.maximum(0.02 * image.reshape(image.shape[0], -1).std(axis=1) + 1e-6, floor)
    return np.maximum(window.std(axis=1), least)[:, None]


def crop_spread(image: np.ndarray) -> np.ndarray:
    """Per-band standard deviation of the crop, shape (B,); never zero."""
    return image.std(axis=(1, 2)) + 1e-6


def gaussian_blur(array: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the last two axes (edges clipped and renormalised)."""
    radius = max(1, int(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()

    def along(values: np.ndarray, axis: int) -> np.ndarray:
        length = values.shape[axis]
        padded = np.moveaxis(values, axis, -1)
        padded = np.pad(padded, [(0, 0)] * (padded.ndim - 1) + [(radius, radius)])
        weight = np.convolve(np.ones(length), kernel, mode="full")[radius:radius + length]
        total = sum(k * padded[..., i:i + length] for i, k in enumerate(kernel))
        return np.moveaxis(total / weight, -1, axis)

    return along(along(np.asarray(array, dtype=np.float32), -1), -2).astype(np.float32)


def gaussian_spot(size: int, centre: np.ndarray, sigma: tuple[float, float],
                  angle: float = 0.0) -> np.ndarray:
    """(size, size) elongated Gaussian of peak 1 (sigma along and across ``angle``)."""
    u, v = rotated_axes(size, centre, angle)
    return np.exp(-0.5 * ((u / sigma[0]) ** 2 + (v / sigma[1]) ** 2)).astype(np.float32)


def rotated_axes(size: int, centre: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (along, across) of a (size, size) grid in axes rotated by ``angle``
    around ``centre`` (y, x)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    return dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
