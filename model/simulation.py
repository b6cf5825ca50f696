"""Anomaly simulation: labelled training crops from unlabelled background imagery.

Labels per pixel: 0 background, 1 anomaly, 2 ignore, 3 large normal object. Two kinds
of sample, drawn with equal probability:

* spectral (multi-band crops): regions whose spectra are band-shuffled. Small regions
  (0.6-2.3 % of the crop) are anomalies, large ones (2.3-50 %) are normal. Often
  also 1-12 pixel sub-pixel targets: a foreign spectrum mixed into the background.
* spatial (any crop): object cut-outs pasted from elsewhere in the imagery, with a
  random gain, under irregular masks. Small ones are anomalies, large ones normal.
  Small, dim, blurred point targets (infrared) are added to half of them.

Then: smooth illumination trends, random band subsets, single-band conversion, SAR-like speckle and dynamic range
(amplitude, intensity, decibels, 8-bit quantisation), and Gaussian noise. Every crop
is mapped to the detector's input channels by the same per-raster reduction as at
inference (:mod:`.features`), fitted on the crop itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .features import fit_from_array

BACKGROUND, ANOMALY, IGNORE, LARGE_NORMAL = 0, 1, 2, 3

# Sampling weight of each modality folder (train/ and train_extra/ share folder names).
MODALITY_WEIGHTS = {
    "hyperspectral": 0.22, "multispectral": 0.14, "visible_aerial": 0.1, "infrared": 0.22,
    "thermal": 0.06, "sar": 0.22, "lowlight": 0.04,
}


@dataclass
class BackgroundImage:
    modality: str
    name: str
    pixels: np.ndarray  # (B, H, W) float32, finite


def load_backgrounds(roots: list[Path]) -> list[BackgroundImage]:
    """Read every ``<root>/<modality>/*.tif`` into memory (the background bank)."""
    from osgeo import gdal
    gdal.UseExceptions()
    images = []
    for root in roots:
        for path in sorted(Path(root).glob("*/*.tif")):
            dataset = gdal.Open(str(path))
            array = dataset.ReadAsArray().astype(np.float32)
            dataset = None
            if array.ndim == 2:
                array = array[None]
            for band in array:
                bad = ~np.isfinite(band)
                if bad.any():
                    band[bad] = np.median(band[~bad]) if (~bad).any() else 0.0
            images.append(BackgroundImage(path.parent.name, path.stem, array))
    if not images:
        raise FileNotFoundError(f"no background images under {roots}")
    return images


def random_shape(size: int, area: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean (size, size) mask of about ``area`` pixels: an irregular blob or a
    rotated rectangle at a random position and angle."""
    area = max(float(area), 2.0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    radius = np.sqrt(area / np.pi)
    cy, cx = rng.uniform(-0.2 * radius, size - 1 + 0.2 * radius, 2)
    dy, dx = yy - cy, xx - cx
    angle = rng.uniform(0, np.pi)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    if rng.random() < 0.35:
        aspect = np.exp(rng.uniform(0, np.log(5)))
        half_w, half_h = np.sqrt(area * aspect) / 2, np.sqrt(area / aspect) / 2
        mask = (np.abs(u) <= half_w) & (np.abs(v) <= half_h)
    else:
        aspect = np.exp(rng.uniform(0, np.log(2.5)))
        u, v = u / np.sqrt(aspect), v * np.sqrt(aspect)
        theta = np.arctan2(v, u)
        wobble = np.ones_like(theta)
        for k in (2, 3, 5):
            wobble += rng.uniform(0, 0.22) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        mask = np.hypot(u, v) <= radius * wobble
    if not mask.any():
        mask[int(np.clip(cy, 0, size - 1)), int(np.clip(cx, 0, size - 1))] = True
    return mask


def _ring(mask: np.ndarray, width: int = 4) -> np.ndarray:
    """Pixels within ``width`` of ``mask`` but outside it (square dilation)."""
    grown = mask.copy()
    for axis in (0, 1):
        for shift in range(1, width + 1):
            grown |= np.roll(mask, shift, axis) | np.roll(mask, -shift, axis)
    grown = grown | np.roll(grown, 1, 0) | np.roll(grown, -1, 0)
    ring = grown & ~mask
    return ring if ring.any() else ~mask


def _local_spread(image: np.ndarray, mask: np.ndarray, margin: int = 8) -> np.ndarray:
    """Per-band standard deviation of the image around ``mask`` (its bounding box
    grown by ``margin``), shape (B, 1); never zero."""
    rows, cols = np.nonzero(mask)
    top, bottom = max(rows.min() - margin, 0), rows.max() + margin + 1
    left, right = max(cols.min() - margin, 0), cols.max() + margin + 1
    window = image[:, top:bottom, left:right].reshape(image.shape[0], -1)
    floor = 0.02 * image.reshape(image.shape[0], -1).std(axis=1) + 1e-6
    return np.maximum(window.std(axis=1), floor)[:, None]


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


class AnomalySimulator:
    """Draws (image (B, S, S) float32, labels (S, S) uint8) training samples."""

    def __init__(self, backgrounds: list[BackgroundImage], crop: int = 96) -> None:
        self.crop = crop
        self.by_modality: dict[str, list[BackgroundImage]] = {}
        for image in backgrounds:
            self.by_modality.setdefault(image.modality, []).append(image)
        names = sorted(self.by_modality)
        weights = np.array([MODALITY_WEIGHTS.get(n, 0.05) for n in names])
        self.modalities, self.modality_p = names, weights / weights.sum()

    # -- sources ---------------------------------------------------------------------
    def _pick_image(self, rng: np.random.Generator) -> BackgroundImage:
        modality = self.modalities[rng.choice(len(self.modalities), p=self.modality_p)]
        images = self.by_modality[modality]
        return images[rng.integers(len(images))]

    def _crop_from(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size = self.crop
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

    # -- anomaly kinds ---------------------------------------------------------------
    def _spectral(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
        bands, size = image.shape[0], self.crop
        total = size * size
        spread = image.std(axis=(1, 2)) + 1e-6
        for count, low, high, label in ((rng.integers(2, 6), 0.023, 0.5, LARGE_NORMAL),
                                        (rng.integers(2, 6), 0.006, 0.023, ANOMALY)):
            for _ in range(count):
                if label == LARGE_NORMAL and (labels == LARGE_NORMAL).mean() > 0.6:
                    break
                mask = random_shape(size, _log_uniform(rng, low, high) * total, rng)
                permutation = rng.permutation(bands)
                while bands > 1 and np.all(permutation == np.arange(bands)):
                    permutation = rng.permutation(bands)
                before = image[:, mask]
                after = image[permutation][:, mask]
                image[:, mask] = after
                # Correlated bands can make a shuffle invisible: such a region is no
                # anomaly, so it must not be taught as one.
                change = float(np.median(np.abs(after - before).mean(axis=0) /
                                         spread.mean()))
                labels[mask] = label if label != ANOMALY or change > 0.5 else IGNORE
        if rng.random() < 0.6:
            self._subpixel_targets(image, labels, rng)

    def _subpixel_targets(self, image: np.ndarray, labels: np.ndarray,
                          rng: np.random.Generator) -> None:
        """1-12 pixel targets whose spectrum is a foreign material (a band-shuffled
        spectrum from the crop) mixed into the background at 30-100 % (sub-pixel
        targets of hyperspectral scenes). Mixtures that stay within the noise are ignored."""
        bands, size = image.shape[0], self.crop
        spread = image.std(axis=(1, 2)) + 1e-6
        for _ in range(rng.integers(1, 6)):
            mask = random_shape(size, _log_uniform(rng, 1, 12), rng)
            y, x = rng.integers(0, size, 2)
            material = image[rng.permutation(bands), y, x][:, None]
            fraction = rng.uniform(0.3, 1.0)
            before = image[:, mask]
            after = (1 - fraction) * before + fraction * material
            image[:, mask] = after
            change = float(np.median(np.abs(after - before).mean(axis=0) / spread.mean()))
            labels[mask] = ANOMALY if change > 0.5 else IGNORE

    def _paste_objects(self, image: np.ndarray, source: np.ndarray, labels: np.ndarray,
                       rng: np.random.Generator) -> None:
        """Large cut-outs pasted as they are (normal); small ones made into distinct
        objects: their texture is damped and their level moved away from the
        surroundings by 1-6 local standard deviations (anomalies)."""
        size = self.crop
        total = size * size
        for count, low, high, label in ((rng.integers(1, 4), 0.06, 0.5, LARGE_NORMAL),
                                        (rng.integers(1, 4), 6.0 / total, 0.04, ANOMALY)):
            for _ in range(count):
                mask = random_shape(size, _log_uniform(rng, low, high) * total, rng)
                patch = self._crop_from(source, rng)
                if label == LARGE_NORMAL:
                    spread = image.std(axis=(1, 2), keepdims=True) + 1e-6
                    patch = patch * _log_uniform(rng, 0.4, 2.5) + rng.normal(0, 1.0) * spread
                else:
                    local = _local_spread(image, mask)
                    inside = patch[:, mask]
                    level = inside.mean(axis=1, keepdims=True)
                    texture = rng.uniform(0.1, 1.0) * (inside - level)
                    around = image[:, _ring(mask)].mean(axis=1, keepdims=True)
                    sign = 1.0 if rng.random() < 0.65 else -1.0
                    offset = _log_uniform(rng, 1.0, 6.0) * local * \
                        (sign + 0.5 * rng.normal(0, 1, (image.shape[0], 1)))
                    patch = patch.copy()
                    patch[:, mask] = around + offset + texture
                image[:, mask] = patch[:, mask]
                labels[mask] = label

    def _point_targets(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
        """Small, dim, blurred targets (infrared), 1.5-10 local standard deviations."""
        size = self.crop
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        for _ in range(rng.integers(1, 5)):
            cy, cx = rng.uniform(0, size - 1, 2)
            sigma_y, sigma_x = _log_uniform(rng, 0.5, 3.0), _log_uniform(rng, 0.5, 3.0)
            blob = np.exp(-0.5 * (((yy - cy) / sigma_y) ** 2 + ((xx - cx) / sigma_x) ** 2))
            core = blob > 0.35
            if not core.any():
                continue
            sign = 1.0 if rng.random() < 0.85 else -1.0
            amplitude = sign * _log_uniform(rng, 1.5, 10.0) * _local_spread(image, core)
            image += amplitude[:, None] * blob[None]
            labels[core] = ANOMALY

    # -- radiometric variety -----------------------------------------------------------
    @staticmethod
    def _illumination_trend(image: np.ndarray, rng: np.random.Generator) -> None:
        """Add a smooth ramp and/or broad bump (vignetting, haze, sun angle) of
        0.5-4 standard deviations: background, not anomaly."""
        size = image.shape[1]
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        angle = rng.uniform(0, 2 * np.pi)
        field = np.cos(angle) * xx + np.sin(angle) * yy
        if rng.random() < 0.5:
            cy, cx = rng.uniform(-0.5, 1.5, 2)
            width = rng.uniform(0.2, 0.8)
            field = field * rng.uniform(0, 1) + rng.choice([-1.0, 1.0]) * \
                np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width ** 2))
        field = (field - field.mean()) / (field.std() + 1e-6)
        spread = image.std(axis=(1, 2)) + 1e-6
        image += (rng.uniform(0.5, 4.0) * spread)[:, None, None] * field[None]

    @staticmethod
    def _sar_like(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        intensity = image - image.min() + 1e-3 * (np.ptp(image) + 1e-6)
        looks = int(rng.integers(1, 5))
        intensity = intensity * rng.gamma(looks, 1.0 / looks, intensity.shape).astype(np.float32)
        return AnomalySimulator._dynamic_range(intensity, rng)

    @staticmethod
    def _dynamic_range(intensity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        intensity = np.maximum(intensity, 1e-6)
        choice = rng.integers(3)
        if choice == 0:
            intensity = np.sqrt(intensity)
        elif choice == 1:
            intensity = 10 * np.log10(intensity)
        if rng.random() < 0.5:
            low, high = np.percentile(intensity, [0.5, rng.uniform(97, 100)])
            intensity = np.round(np.clip((intensity - low) / (high - low + 1e-9), 0, 1) * 255)
        return intensity.astype(np.float32)

    # -- the sample ------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        background = self._pick_image(rng)
        image = self._crop_from(background.pixels, rng)
        bands = image.shape[0]
        if bands > 3 and rng.random() < 0.7:
            keep = int(np.clip(round(_log_uniform(rng, 2, bands)), 2, bands))
            chosen = np.sort(rng.choice(bands, keep, replace=False))
            image = image[chosen]
            background = BackgroundImage(background.modality, background.name,
                                         background.pixels[chosen])
        labels = np.zeros((self.crop, self.crop), dtype=np.uint8)
        if rng.random() < 0.4:
            self._illumination_trend(image, rng)
        if image.shape[0] >= 2 and rng.random() < 0.5:
            self._spectral(image, labels, rng)
        else:
            if rng.random() < 0.5:
                image = image.mean(axis=0, keepdims=True) if rng.random() < 0.5 else \
                    image[rng.integers(image.shape[0])][None].copy()
                source = background.pixels.mean(axis=0, keepdims=True)
            else:
                source = background.pixels
            if background.modality != "sar" and image.shape[0] == 1 and rng.random() < 0.25:
                image = self._sar_like(image, rng)
                source = self._sar_like(self._crop_from(source, rng), rng)
            self._paste_objects(image, source, labels, rng)
            if rng.random() < 0.5:
                self._point_targets(image, labels, rng)
        if rng.random() < 0.7:
            spread = image.std(axis=(1, 2), keepdims=True)
            image = image + rng.normal(0, 1, image.shape).astype(np.float32) * spread * \
                _log_uniform(rng, 0.005, 0.1)
        return image.astype(np.float32), labels


def make_batch(simulator: AnomalySimulator, rng: np.random.Generator, batch_size: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, C, S, S) float32, labels (N, S, S) uint8) for one training step."""
    features, labels = [], []
    for _ in range(batch_size):
        image, label = simulator.sample(rng)
        features.append(fit_from_array(image).apply(image))
        labels.append(label)
    return np.stack(features), np.stack(labels)

