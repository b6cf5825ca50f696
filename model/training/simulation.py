"""Anomaly simulation: labelled training crops from unlabelled background imagery.

Labels per pixel: 0 background, 1 anomaly, 2 ignore, 3 large normal object. Two kinds
of sample, drawn with equal probability:

* spectral (multi-band crops): regions whose spectra are band-shuffled. Small regions
  (0.6-2.3 % of the crop) are anomalies, large ones (2.3-50 %) are normal. Often
  also 1-12 pixel sub-pixel targets: a foreign spectrum mixed into the background.
* spatial (any crop): object cut-outs pasted from elsewhere in the imagery, with a
  random gain, under irregular masks. Small ones are anomalies, large ones normal.
  Small, dim, blurred point targets (infrared) are added to half of them.

Hard negatives (straight edges, thin lines, clouds) are added to half the crops as
background; speckled crops get ships (compact bright clusters), visible ones
solar-panel-like arrays, and 12 % of spatial crops become night-time scenes (dim,
noisy, with point lights as anomalies).

Then: smooth illumination trends, random band subsets, single-band conversion, SAR-like speckle and dynamic range
(amplitude, intensity, decibels, 8-bit quantisation), and Gaussian noise. Every crop
is mapped to the detector's input channels by the same per-raster reduction as at
inference (:mod:`..nn.features`), fitted on the crop itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..nn.features import fit_from_array

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


def _gaussian_spot(size: int, centre: np.ndarray, sigma: tuple[float, float],
                   angle: float = 0.0) -> np.ndarray:
    """(size, size) elongated Gaussian of peak 1 (sigma along and across ``angle``)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return np.exp(-0.5 * ((u / sigma[0]) ** 2 + (v / sigma[1]) ** 2)).astype(np.float32)


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
                    if rng.random() < 0.5:  # seen through the sensor's point-spread function
                        alpha = gaussian_blur(mask.astype(np.float32), rng.uniform(0.5, 1.2))
                        image[:] = image * (1 - alpha) + patch * alpha
                        labels[alpha > 0.5] = label
                        continue
                image[:, mask] = patch[:, mask]
                labels[mask] = label

    def _point_targets(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
        """Small, dim, blurred targets (infrared), 1.5-10 local standard deviations."""
        for _ in range(rng.integers(1, 5)):
            centre = rng.uniform(0, self.crop - 1, 2)
            sigma_y, sigma_x = _log_uniform(rng, 0.5, 3.0), _log_uniform(rng, 0.5, 3.0)
            blob = _gaussian_spot(self.crop, centre, (sigma_x, sigma_y))
            core = blob > 0.35
            if not core.any():
                continue
            sign = 1.0 if rng.random() < 0.85 else -1.0
            amplitude = sign * _log_uniform(rng, 1.5, 10.0) * _local_spread(image, core)
            image += amplitude[:, None] * blob[None]
            labels[core] = ANOMALY

    def _hard_negatives(self, image: np.ndarray, labels: np.ndarray,
                        rng: np.random.Generator) -> None:
        """What fools a detector, taught as background: straight (sharp or soft) edges,
        long thin lines (roads, wires, field borders) and large smooth bright or dark
        areas (clouds, haze, glint), 1-5 standard deviations strong."""
        size = self.crop
        spread = image.std(axis=(1, 2)) + 1e-6
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        for _ in range(rng.integers(1, 3)):
            angle = rng.uniform(0, np.pi)
            distance = (xx - rng.uniform(0, size)) * np.cos(angle) + \
                (yy - rng.uniform(0, size)) * np.sin(angle)
            kind, normal = rng.integers(3), None
            if kind == 0:  # step edge
                field = (distance > 0).astype(np.float32)
                if rng.random() < 0.5:
                    field = gaussian_blur(field, rng.uniform(0.5, 2.0))
            elif kind == 1:  # line
                field = np.exp(-0.5 * (distance / rng.uniform(0.6, 2.5)) ** 2)
                normal = field > 0.3
            else:  # cloud
                noise = gaussian_blur(rng.normal(0, 1, (size, size)), rng.uniform(6, 16))
                field = np.clip((noise - noise.mean()) / (noise.std() + 1e-9)
                                - rng.uniform(-0.5, 1.0), 0, None)
                field /= field.max() + 1e-9
                normal = field > 0.2
            tint = 1 + 0.3 * rng.normal(0, 1, image.shape[0])
            amplitude = rng.choice([-1.0, 1.0]) * _log_uniform(rng, 1.0, 5.0) * spread * tint
            image += amplitude[:, None, None].astype(np.float32) * field[None]
            if normal is not None:
                labels[normal & (labels == BACKGROUND)] = LARGE_NORMAL

    def _ships(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
        """Ships in speckle: 1-4 compact, bright, elongated clusters (about 2-30 px long)
        with their own speckle, 2-12 standard deviations above the scene."""
        size = self.crop
        spread = image.std(axis=(1, 2)) + 1e-6
        for _ in range(rng.integers(1, 5)):
            length = _log_uniform(rng, 0.7, 8.0)
            spot = _gaussian_spot(size, rng.uniform(0, size - 1, 2),
                                  (length, max(length / _log_uniform(rng, 1.5, 5.0), 0.5)),
                                  rng.uniform(0, np.pi))
            looks = int(rng.integers(1, 4))
            speckle = rng.gamma(looks, 1.0 / looks, spot.shape).astype(np.float32)
            gain = _log_uniform(rng, 2.0, 12.0) * spread
            image += gain[:, None, None] * (spot * speckle)[None]
            labels[spot > 0.3] = ANOMALY

    def _low_light(self, image: np.ndarray, labels: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
        """Night-time imagery: the scene dimmed to 1-15 % of its range, sometimes a large
        glow (a town: normal), 1-8 point lights (boats, vehicles, people: 0.5-2.5 px spots
        well above the noise: anomalies), shot and read noise, often 8-bit quantised."""
        size = self.crop
        low, high = np.percentile(image, [1, 99])
        image = np.clip((image - low) / (high - low + 1e-9), 0, None) * _log_uniform(rng, 0.01, 0.15)
        if rng.random() < 0.4:
            glow = _gaussian_spot(size, rng.uniform(0, size - 1, 2),
                                  (rng.uniform(8, 25), rng.uniform(8, 25)), rng.uniform(0, np.pi))
            image = image + rng.uniform(0.05, 0.4) * glow[None]
            labels[(glow > 0.3) & (labels == BACKGROUND)] = LARGE_NORMAL
        tint = 1 + 0.2 * rng.normal(0, 1, (image.shape[0], 1, 1))
        for _ in range(rng.integers(1, 9)):
            sigma = _log_uniform(rng, 0.5, 2.5)
            spot = _gaussian_spot(size, rng.uniform(0, size - 1, 2),
                                  (sigma, sigma * rng.uniform(0.7, 1.4)), rng.uniform(0, np.pi))
            image = image + _log_uniform(rng, 0.1, 1.0) * tint * spot[None]
            labels[spot > 0.3] = ANOMALY
        read = _log_uniform(rng, 0.002, 0.03)
        shot = np.sqrt(np.clip(image, 0, None) * _log_uniform(rng, 1e-4, 1e-2))
        image = image + rng.normal(0, 1, image.shape) * (read + shot)
        if rng.random() < 0.6:
            image = np.round(np.clip(image, 0, 1) * 255)
        return image.astype(np.float32)

    def _panel_arrays(self, image: np.ndarray, labels: np.ndarray,
                      rng: np.random.Generator) -> None:
        """Solar-panel-like arrays: a regular grid of dark (often bluish) rectangles with
        narrow gaps, at a random angle; panels are anomalies, the gaps ignored."""
        size = self.crop
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, size - 1, 2)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        panel_u, panel_v = rng.uniform(2, 8), rng.uniform(2, 5)
        gap = rng.uniform(0.8, 2.5)
        rows, columns = rng.integers(1, 5), rng.integers(2, 8)
        inside = (u >= 0) & (u < columns * (panel_u + gap)) & (v >= 0) & (v < rows * (panel_v + gap))
        panels = inside & (np.mod(u, panel_u + gap) < panel_u) & (np.mod(v, panel_v + gap) < panel_v)
        if not panels.any():
            return
        local = _local_spread(image, panels)
        around = image[:, _ring(inside)].mean(axis=1, keepdims=True)
        tint = 1 + 0.4 * rng.normal(0, 1, (image.shape[0], 1))
        level = around - _log_uniform(rng, 1.0, 4.0) * local * tint
        image[:, panels] = level + 0.2 * local * rng.normal(0, 1, (image.shape[0], int(panels.sum())))
        labels[inside] = IGNORE
        labels[panels] = ANOMALY

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
        if rng.random() < 0.5:
            self._hard_negatives(image, labels, rng)
        if image.shape[0] >= 2 and rng.random() < 0.5:
            self._spectral(image, labels, rng)
        else:
            if rng.random() < 0.5:
                image = image.mean(axis=0, keepdims=True) if rng.random() < 0.5 else \
                    image[rng.integers(image.shape[0])][None].copy()
                source = background.pixels.mean(axis=0, keepdims=True)
            else:
                source = background.pixels
            if rng.random() < 0.12:
                return self._low_light(image, labels, rng), labels
            speckled = background.modality == "sar"
            if not speckled and image.shape[0] == 1 and rng.random() < 0.25:
                image = self._sar_like(image, rng)
                source = self._sar_like(self._crop_from(source, rng), rng)
                speckled = True
            self._paste_objects(image, source, labels, rng)
            if speckled and rng.random() < 0.6:
                self._ships(image, labels, rng)
            if background.modality in ("visible_aerial", "multispectral") and rng.random() < 0.25:
                self._panel_arrays(image, labels, rng)
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

