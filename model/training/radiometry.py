"""Radiometric variety of the simulated crops: illumination trends, SAR-like speckle and
dynamic range, sensor noise, JPEG compression. Trends, noise and compression artefacts
are background, never anomalies."""
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


# Luminance quantisation table of the JPEG standard (ITU-T T.81, Annex K), quality 50.
_JPEG_LUMINANCE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], np.float32)


def _dct_matrix(size: int = 8) -> np.ndarray:
    """The orthonormal DCT-II matrix: coefficients = D @ block @ D.T."""
    k, n = np.mgrid[0:size, 0:size].astype(np.float64)
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2.0 / size)
    matrix[0] /= np.sqrt(2.0)
    return matrix.astype(np.float32)


_DCT = _dct_matrix()


def jpeg_quantisation(quality: float) -> np.ndarray:
    """The 8 x 8 luminance quantisation steps at a JPEG quality of 1-100 (IJG scaling)."""
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return np.clip(np.floor((_JPEG_LUMINANCE * scale + 50) / 100), 1, 255)


def jpeg_artefacts(image: np.ndarray, rng: np.random.Generator,
                   radiometry: RadiometryConfig) -> np.ndarray:
    """The crop as an 8-bit JPEG file would give it back: each band stretched to 0-255,
    its 8 x 8 blocks (at a random phase) quantised in the DCT domain at a random quality,
    and mapped back to the band's range."""
    bands, height, width = image.shape
    steps = jpeg_quantisation(rng.uniform(*radiometry.jpeg_quality))
    top, left = rng.integers(0, 8, 2)
    pad = ((0, 0), (top, (-(height + top)) % 8), (left, (-(width + left)) % 8))
    low = image.min(axis=(1, 2), keepdims=True)
    span = np.ptp(image, axis=(1, 2), keepdims=True) + 1e-9
    levels = np.pad(np.round((image - low) / span * 255), pad, mode="edge") - 128
    blocks = levels.reshape(bands, levels.shape[1] // 8, 8, levels.shape[2] // 8, 8)
    coefficients = np.einsum("ij,byjxk,lk->byixl", _DCT, blocks, _DCT)
    coefficients = np.round(coefficients / steps[:, None, :]) * steps[:, None, :]
    decoded = np.einsum("ji,byjxk,kl->byixl", _DCT, coefficients, _DCT).reshape(levels.shape)
    decoded = np.clip(np.round(decoded + 128), 0, 255)[:, top:top + height, left:left + width]
    return (decoded / 255 * span + low).astype(np.float32)
