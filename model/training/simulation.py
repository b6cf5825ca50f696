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

Then: smooth illumination trends, random band subsets, single-band conversion, SAR-like
speckle and dynamic range (amplitude, intensity, decibels, 8-bit quantisation),
Gaussian noise, and optionally JPEG compression (off by default). Every crop is mapped
to the detector's input channels by the same per-raster reduction as at inference
(:mod:`..nn.features`), fitted on the crop itself.

:meth:`AnomalySimulator.sample` is the recipe; the steps are the functions of
:mod:`.anomalies` and :mod:`.radiometry`, every probability and range is a field of
:class:`.simulation_config.SimulationConfig`. A seed gives the same samples
(``tools/simulation_digest.py`` fingerprints them).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy import ndimage

from ..nn.features import fit_from_array
from .anomalies import (hard_negatives, low_light, panel_arrays, pasted_objects, point_targets,
                        repeated_objects, ships, spectral_regions)
from .radiometry import illumination_trend, jpeg_artefacts, sar_like, sensor_noise
from .shapes import log_uniform, random_crop
from .simulation_config import BRIGHT_TARGET_MODALITIES, HardNegativeConfig, SimulationConfig


@dataclass
class BackgroundImage:
    modality: str
    name: str
    pixels: np.ndarray  # (B, H, W) float32, finite
    step: float = 0.0   # the sensor's quantisation step: 1 for integer data, else unknown (0)


def background_arrays(root: Path) -> Iterator[tuple[str, str, np.ndarray]]:
    """(modality, name, pixels as stored) of every ``<root>/<modality>/*.tif``, or of
    every array of a bank file ``root`` (``.npz``, written by :func:`save_bank`)."""
    root = Path(root)
    if root.suffix == ".npz":
        with np.load(root, allow_pickle=False) as bank:
            for key in bank.files:
                modality, name = key.split("/", 1)
                yield modality, name, bank[key]
        return
    from osgeo import gdal
    gdal.UseExceptions()
    for path in sorted(root.glob("*/*.tif")):
        dataset = gdal.Open(str(path))
        yield path.parent.name, path.stem, dataset.ReadAsArray()
        dataset = None


def save_bank(roots: list[Path], path: Path) -> None:
    """Write the background images of ``roots`` as stored into one compressed ``.npz``:
    the same bank for :func:`load_backgrounds` on a machine without GDAL."""
    np.savez_compressed(path, **{f"{modality}/{name}": array for root in roots
                                 for modality, name, array in background_arrays(root)})


def load_backgrounds(roots: list[Path], one_band_copies: bool = False
                     ) -> list[BackgroundImage]:
    """Read every ``<root>/<modality>/*.tif`` (or bank file) into memory (the background
    bank): float32, non-finite values replaced by the band's median; with
    ``one_band_copies``, a grey image stored in several integer bands (reduced to one
    component by the detector) as its band mean."""
    images = []
    for root in roots:
        for modality, name, array in background_arrays(root):
            step = 1.0 if np.issubdtype(array.dtype, np.integer) else 0.0
            if array.ndim == 2:
                array = array[None]
            if one_band_copies and step and array.shape[0] > 1 and \
                    fit_from_array(array).full.shape[1] == 1:
                array = array.mean(axis=0, keepdims=True)
            array = array.astype(np.float32)
            for band in array:
                bad = ~np.isfinite(band)
                if bad.any():
                    band[bad] = np.median(band[~bad]) if (~bad).any() else 0.0
            images.append(BackgroundImage(modality, name, array, step))
    if not images:
        raise FileNotFoundError(f"no background images under {roots}")
    return images


class AnomalySimulator:
    """Draws (image (B, S, S) float32, labels (S, S) uint8) training samples."""

    def __init__(self, backgrounds: list[BackgroundImage], crop: int = 96,
                 config: SimulationConfig = SimulationConfig()) -> None:
        self.crop, self.config = crop, config
        self.by_modality: dict[str, list[BackgroundImage]] = {}
        for image in backgrounds:
            self.by_modality.setdefault(image.modality, []).append(image)
        names = sorted(self.by_modality)
        weights = np.array([config.modality_weights.get(n, config.other_modality_weight)
                            for n in names])
        self.modalities, self.modality_p = names, weights / weights.sum()

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.draw(rng)[:2]

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        """A sample and its quantisation step (1 for a crop of integer pixels as the sensor
        stored them, 0 where unknown: float sources, SAR-like dynamic range, night scenes)."""
        config = self.config
        background = self._pick_image(rng)
        image = random_crop(background.pixels, self._background_window(rng), rng)
        step = background.step
        image, pixels = self._band_subset(image, background.pixels, rng)
        if image.shape[1] != self.crop:
            image = resampled(image, self.crop)
        labels = np.zeros((self.crop, self.crop), dtype=np.uint8)
        if rng.random() < config.illumination_p:
            illumination_trend(image, rng, config.radiometry)
        if rng.random() < config.hard_negatives_p:
            hard_negatives(image, labels, rng, self._negatives_for(background))
        if image.shape[0] >= 2 and rng.random() < config.spectral_p:
            spectral_regions(image, labels, rng, config)
        else:
            image, source = self._single_band(image, pixels, rng)
            if rng.random() < config.low_light_p:
                return self._compressed(low_light(image, labels, rng, config.low_light), rng), \
                    labels, 0.0
            image, step = self._spatial_anomalies(image, source, background, labels, rng)
        if rng.random() < config.noise_p:
            image = sensor_noise(image, rng, config.radiometry)
        if config.rounded_crops and step:
            image = np.round(image / step) * step
        return self._compressed(image.astype(np.float32), rng), labels, step

    def _background_window(self, rng: np.random.Generator) -> int:
        """Side of the background window that becomes the crop: the crop's, or with
        probability ``rescaled_backgrounds_p`` the crop's over a drawn scale."""
        config = self.config
        if not config.rescaled_backgrounds_p or rng.random() >= config.rescaled_backgrounds_p:
            return self.crop
        return max(2, round(self.crop / log_uniform(rng, *config.background_scale)))

    def _negatives_for(self, background: BackgroundImage) -> HardNegativeConfig:
        """The hard negatives' settings, without faint bumps for a sensor of more bands than
        ``faint_max_bands``."""
        negatives = self.config.hard_negatives
        if negatives.faint_max_bands and background.pixels.shape[0] > negatives.faint_max_bands:
            return replace(negatives, faint_p=0.0)
        return negatives

    def _compressed(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Crops of 1-3 bands, with probability ``jpeg_p``, as a JPEG file gives them back."""
        if self.config.jpeg_p > 0 and image.shape[0] <= 3 and rng.random() < self.config.jpeg_p:
            return jpeg_artefacts(image, rng, self.config.radiometry)
        return image

    def _pick_image(self, rng: np.random.Generator) -> BackgroundImage:
        modality = self.modalities[rng.choice(len(self.modalities), p=self.modality_p)]
        images = self.by_modality[modality]
        return images[rng.integers(len(images))]

    def _band_subset(self, image: np.ndarray, pixels: np.ndarray, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Crop and whole image reduced to a random subset of 2 or more of their bands
        (sometimes, for more than 3 bands)."""
        bands = image.shape[0]
        if bands > 3 and rng.random() < self.config.band_subset_p:
            keep = int(np.clip(round(log_uniform(rng, 2, bands)), 2, bands))
            chosen = np.sort(rng.choice(bands, keep, replace=False))
            return image[chosen], pixels[chosen]
        return image, pixels

    def _single_band(self, image: np.ndarray, pixels: np.ndarray, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Sometimes the crop as one band (the band mean or a random band), with the image
        that cut-outs come from as its band mean; else both as they are."""
        if rng.random() >= self.config.single_band_p:
            return image, pixels
        image = image.mean(axis=0, keepdims=True) if rng.random() < self.config.band_mean_p \
            else image[rng.integers(image.shape[0])][None].copy()
        return image, pixels.mean(axis=0, keepdims=True)

    def _spatial_anomalies(self, image: np.ndarray, source: np.ndarray,
                           background: BackgroundImage, labels: np.ndarray,
                           rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """Pasted objects, and depending on the sensor ships, panel arrays, point targets;
        single-band crops of other sensors sometimes become SAR-like first. Pasted objects
        and point targets stand at least ``quantum_floor`` quantisation steps of the
        background's sensor per local standard deviation of strength. Returns the image
        and its quantisation step (0: unknown)."""
        config, modality = self.config, background.modality
        step = background.step
        speckled = modality == "sar"
        if not speckled and image.shape[0] == 1 and rng.random() < config.sar_like_p:
            image = sar_like(image, rng, config.radiometry)
            source = sar_like(random_crop(source, self.crop, rng), rng, config.radiometry)
            speckled, step = True, 0.0  # another dynamic range: the step is unknown
        spread_floor = config.quantum_floor * step
        if config.bright_targets_p and (speckled or modality in BRIGHT_TARGET_MODALITIES):
            bright = config.bright_targets_p
            config = replace(config, paste=replace(config.paste, brighter_p=bright),
                             points=replace(config.points, brighter_p=bright))
        if config.repeated_objects_p and rng.random() < config.repeated_objects_p:
            repeated_objects(image, labels, rng, config.repeated)
        pasted_objects(image, source, labels, rng, config, spread_floor)
        if speckled and rng.random() < config.ships_p:
            ships(image, labels, rng, config.ships)
        if modality in config.panels.modalities and rng.random() < config.panels_p:
            panel_arrays(image, labels, rng, config.panels)
        if rng.random() < config.point_targets_p:
            point_targets(image, labels, rng, config.points, spread_floor)
        return image, step


def resampled(image: np.ndarray, size: int) -> np.ndarray:
    """A (B, h, h) image resampled bilinearly to (B, size, size), pixel centres aligned;
    smoothed first when it shrinks, so that fine texture is averaged, not aliased."""
    factor = size / image.shape[1]
    if factor < 1:
        image = ndimage.gaussian_filter(image, (0, 0.5 / factor, 0.5 / factor), mode="reflect")
    centres = (np.arange(size) + 0.5) / factor - 0.5
    rows, cols = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([ndimage.map_coordinates(band, [rows, cols], order=1, mode="nearest")
                     for band in image]).astype(np.float32)


def make_batch(simulator: AnomalySimulator, rng: np.random.Generator, batch_size: int,
               grey_floors: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (N, C, S, S) float32, labels (N, S, S) uint8, grey steps (N,) float32) for
    one training step. With ``grey_floors`` each crop is reduced with its quantisation
    step as the grey level, as ``anomaly:detect`` reduces an integer raster, and its grey
    step (one grey level along component 1, the evidence's floor) is given; else the crops
    are reduced as in-memory arrays (float: grey level unknown, steps 0)."""
    features, labels, grey_steps = [], [], []
    for _ in range(batch_size):
        image, label, step = simulator.draw(rng)
        reduction = fit_from_array(image, grey_level=step ** 2 if grey_floors else None)
        features.append(reduction.apply(image))
        labels.append(label)
        grey_steps.append(reduction.grey_step)
    return np.stack(features), np.stack(labels), np.array(grey_steps, dtype=np.float32)

