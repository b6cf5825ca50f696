"""Radiometric variety of the simulated crops: illumination trends, SAR-like speckle and
dynamic range, sensor noise. Trends and noise are background, never anomalies."""
from __future__ import annotations

import numpy as np

from .shapes import count, crop_spread, log_uniform
from .simulation_config import RadiometryConfig


def illumination_trend(image: np.ndarray, rng: np.random.Generator,
                       radiometry: RadiometryConfig) -> None:
    """Add a smooth ramp and/or broad bump (vignetting, haze, sun angle) of a few
    standard deviations, in place."""
    size = image.shape[1]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    field = np.cos(angle) * xx + np.sin(angle) * yy
    if rng.random() < radiometry.trend_bump_p:
        cy, cx = rng.uniform(*radiometry.trend_bump_centre, 2)
        width = rng.uniform(*radiometry.trend_bump_width)
        field = field * rng.uniform(*radiometry.trend_ramp_weight) + rng.choice([-1.0, 1.0]) * \
            np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width ** 2))
    field = (field - field.mean()) / (field.std() + 1e-6)
    image += (rng.uniform(*radiometry.trend_strength) * crop_spread(image))[:, None, None] * \
        field[None]


def sar_like(image: np.ndarray, rng: np.random.Generator,
             radiometry: RadiometryConfig) -> np.ndarray:
    """The crop as a multi-look SAR intensity (gamma speckle) in a random dynamic range."""
    intensity = image - image.min() + 1e-3 * (np.ptp(image) + 1e-6)
    looks = int(count(rng, radiometry.speckle_looks))
    intensity = intensity * rng.gamma(looks, 1.0 / looks, intensity.shape).astype(np.float32)
    return dynamic_range(intensity, rng, radiometry)


def dynamic_range(intensity: np.ndarray, rng: np.random.Generator,
                  radiometry: RadiometryConfig) -> np.ndarray:
    """Intensity, amplitude or decibels (equally likely), sometimes 8-bit quantised."""
    intensity = np.maximum(intensity, 1e-6)
    choice = rng.integers(3)
    if choice == 0:
        intensity = np.sqrt(intensity)
    elif choice == 1:
        intensity = 10 * np.log10(intensity)
    if rng.random() < radiometry.quantise_p:
        low, high = np.percentile(intensity, [0.5, rng.uniform(*radiometry.quantise_top)])
        intensity = np.round(np.clip((intensity - low) / (high - low + 1e-9), 0, 1) * 255)
    return intensity.astype(np.float32)


def sensor_noise(image: np.ndarray, rng: np.random.Generator,
                 radiometry: RadiometryConfig) -> np.ndarray:
    """Gaussian noise of a small share of each band's standard deviation."""
    spread = image.std(axis=(1, 2), keepdims=True)
    return image + rng.normal(0, 1, image.shape).astype(np.float32) * spread * \
        log_uniform(rng, *radiometry.noise)
