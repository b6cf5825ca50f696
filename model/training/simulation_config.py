"""Every probability and range of the anomaly simulation, in one frozen configuration.

Conventions: ``*_p`` is the probability of a step; a ``(low, high)`` count is drawn
uniformly with both ends included; ``# log`` marks a range drawn log-uniformly, the other
ranges are uniform. Strengths are in local or crop standard deviations (per band) unless
said otherwise; ``*_level`` is the level of a unit-peak shape above which it is labelled.
The defaults are those the bundled weights were trained with.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

BACKGROUND, ANOMALY, IGNORE, LARGE_NORMAL = 0, 1, 2, 3

Range = tuple[float, float]
Count = tuple[int, int]

# Sampling weight of each modality folder (train/ and train_extra/ share folder names).
MODALITY_WEIGHTS = MappingProxyType({
    "hyperspectral": 0.22, "multispectral": 0.14, "visible_aerial": 0.1, "infrared": 0.22,
    "thermal": 0.06, "sar": 0.22, "lowlight": 0.04,
})
# Sensors of emitted heat or backscatter, where the objects sought are bright.
BRIGHT_TARGET_MODALITIES = frozenset({"infrared", "thermal", "sar"})


@dataclass(frozen=True)
class ShapeConfig:
    """Region masks: rotated rectangles or irregular blobs (a circle wobbled by harmonics)."""
    rectangle_p: float = 0.35
    rectangle_aspect: Range = (1.0, 5.0)    # log
    blob_aspect: Range = (1.0, 2.5)         # log
    wobble_harmonics: tuple[int, ...] = (2, 3, 5)
    wobble: float = 0.22                    # largest relative amplitude of each harmonic


@dataclass(frozen=True)
class SpectralConfig:
    """Band-shuffled regions (spectral anomalies) and sub-pixel targets."""
    large_count: Count = (2, 5)
    large_share: Range = (0.023, 0.5)       # log, of the crop's area: normal
    large_cover_limit: float = 0.6          # no more large regions once they cover this share
    small_count: Count = (2, 5)
    small_share: Range = (0.006, 0.023)     # log, of the crop's area: anomalies
    visible_change: float = 0.5             # median change (crop std) below it: ignored
    subpixel_p: float = 0.6
    subpixel_count: Count = (1, 5)
    subpixel_pixels: Range = (1.0, 12.0)    # log
    subpixel_fraction: Range = (0.3, 1.0)   # share of the foreign material in the mixture


@dataclass(frozen=True)
class PasteConfig:
    """Cut-outs of the imagery pasted into the crop: large ones normal, small ones anomalies."""
    large_count: Count = (1, 3)
    large_share: Range = (0.06, 0.5)        # log, of the crop's area
    large_gain: Range = (0.4, 2.5)          # log
    large_offset_sd: float = 1.0            # normal offset, in crop standard deviations
    small_count: Count = (1, 3)
    small_min_pixels: float = 6.0
    small_max_share: float = 0.04           # log range from small_min_pixels
    texture: Range = (0.1, 1.0)             # share of the cut-out's texture kept
    brighter_p: float = 0.65
    offset: Range = (1.0, 6.0)              # log, local standard deviations
    offset_jitter: float = 0.5              # per band, relative
    blur_p: float = 0.5                     # seen through the sensor's point-spread function
    blur_sigma: Range = (0.5, 1.2)
    blur_level: float = 0.5


@dataclass(frozen=True)
class RepeatedObjectConfig:
    """One small object repeated across the crop (cars, houses, trees, buoys): normal,
    however much it stands out, because it is common."""
    copies: Count = (4, 12)
    pixels: Range = (4.0, 80.0)             # log, area of the object
    brighter_p: float = 0.65
    offset: Range = (1.0, 6.0)              # log, local standard deviations
    jitter: float = 0.2                     # per copy, relative
    texture: Range = (0.1, 1.0)             # share of the background's texture kept


@dataclass(frozen=True)
class PointConfig:
    """Small, dim, blurred point targets (infrared)."""
    count: Count = (1, 4)
    sigma: Range = (0.5, 3.0)               # log, pixels, along each axis
    level: float = 0.35
    brighter_p: float = 0.85
    strength: Range = (1.5, 10.0)           # log, local standard deviations


@dataclass(frozen=True)
class HardNegativeConfig:
    """Straight edges, corners, thin lines, clouds, blobs, smooth patches and faint bumps,
    taught as background or large normal."""
    count: Count = (1, 2)
    blob_p: float = 0.0                     # a compact smooth blob instead of the others
    blob_sigma: Range = (4.0, 12.0)         # log, pixels, along each axis
    blob_level: float = 0.3                 # labelled large normal above this share of the peak
    smooth_p: float = 0.0                   # a smooth patch (a blurred copy) before the others
    smooth_pixels: Range = (30.0, 1500.0)   # log, area of the patch
    smooth_sigma: Range = (2.0, 6.0)        # blur sigma, pixels
    faint_p: float = 0.0                    # faint bumps (background) before the others
    faint_count: Count = (2, 6)
    faint_pixels: Range = (4.0, 150.0)      # log, area of a bump
    faint_strength: Range = (0.3, 1.0)      # log, local standard deviations
    # faint bumps only for sensors of at most this many bands (0: every sensor)
    faint_max_bands: int = 0
    corner_p: float = 0.4                   # a corner (two edges meeting) instead of the others
    corner_angle: Range = (60.0, 120.0)     # degrees between the corner's edges
    edge_blur_p: float = 0.5
    edge_blur_sigma: Range = (0.5, 2.0)
    line_width: Range = (0.6, 2.5)          # Gaussian sigma, pixels
    line_level: float = 0.3
    cloud_smoothness: Range = (6.0, 16.0)   # blur sigma of the noise, pixels
    cloud_cut: Range = (-0.5, 1.0)          # threshold of the standardised noise
    cloud_level: float = 0.2
    tint: float = 0.3                       # per-band spread of the strength, relative
    strength: Range = (1.0, 5.0)            # log, crop standard deviations


@dataclass(frozen=True)
class ShipConfig:
    """Ships in speckle: compact, bright, elongated clusters with their own speckle."""
    count: Count = (1, 4)
    length: Range = (0.7, 8.0)              # log, Gaussian sigma along the ship, pixels
    elongation: Range = (1.5, 5.0)          # log
    min_width: float = 0.5
    looks: Count = (1, 3)
    strength: Range = (2.0, 12.0)           # log, crop standard deviations
    level: float = 0.3


@dataclass(frozen=True)
class PanelConfig:
    """Solar-panel-like arrays: a grid of dark rectangles; panels anomalies, gaps ignored."""
    modalities: tuple[str, ...] = ("visible_aerial", "multispectral")
    length: Range = (2.0, 8.0)              # panel side along the rows, pixels
    width: Range = (2.0, 5.0)
    gap: Range = (0.8, 2.5)
    rows: Count = (1, 4)
    columns: Count = (2, 7)
    darkness: Range = (1.0, 4.0)            # log, local standard deviations below the ring
    tint: float = 0.4
    texture: float = 0.2                    # local standard deviations
    field_p: float = 0.0                    # a field of many long rows instead (farms, roofs)
    field_rows: Count = (4, 16)
    field_columns: Count = (8, 30)
    field_gap: Range = (0.3, 1.5)           # between the panels of a row, pixels
    field_row_gap: Range = (1.0, 8.0)       # ground between the rows, pixels
    field_reach: float = 0.5                # the field starts up to this share of the crop outside


@dataclass(frozen=True)
class LowLightConfig:
    """Night-time imagery: dimmed scene, a town's glow, point lights, shot and read noise."""
    brightness: Range = (0.01, 0.15)        # log, of the scene's 1-99 % range
    glow_p: float = 0.4
    glow_sigma: Range = (8.0, 25.0)
    glow_strength: Range = (0.05, 0.4)
    glow_level: float = 0.3
    tint: float = 0.2
    lights: Count = (1, 8)
    light_sigma: Range = (0.5, 2.5)         # log
    light_aspect: Range = (0.7, 1.4)
    light_strength: Range = (0.1, 1.0)      # log
    light_level: float = 0.3
    read_noise: Range = (0.002, 0.03)       # log
    shot_noise: Range = (1e-4, 1e-2)        # log, gain of the Poisson-like noise
    quantise_p: float = 0.6                 # to 8 bits


@dataclass(frozen=True)
class RadiometryConfig:
    """Illumination trends, SAR-like speckle and dynamic range, and sensor noise."""
    trend_bump_p: float = 0.5               # a broad bump besides the ramp
    trend_bump_centre: Range = (-0.5, 1.5)  # of the crop's side
    trend_bump_width: Range = (0.2, 0.8)    # of the crop's side
    trend_ramp_weight: Range = (0.0, 1.0)   # of the ramp beside a bump
    trend_strength: Range = (0.5, 4.0)      # crop standard deviations
    speckle_looks: Count = (1, 4)
    quantise_p: float = 0.5                 # to 8 bits, after amplitude / intensity / dB
    quantise_top: Range = (97.0, 100.0)     # percentile mapped to 255
    noise: Range = (0.005, 0.1)             # log, Gaussian noise in crop standard deviations
    jpeg_quality: Range = (30.0, 95.0)


@dataclass(frozen=True)
class SimulationConfig:
    """The sample's recipe (one probability per step) and each step's own settings."""
    modality_weights: Mapping[str, float] = field(default_factory=lambda: MODALITY_WEIGHTS)
    other_modality_weight: float = 0.05
    band_subset_p: float = 0.7              # crops of more than 3 bands: keep 2..B of them
    illumination_p: float = 0.4
    hard_negatives_p: float = 0.5
    spectral_p: float = 0.5                 # multi-band crops: spectral, else spatial sample
    single_band_p: float = 0.5              # spatial samples made single-band ...
    band_mean_p: float = 0.5                # ... by the band mean, else one band
    low_light_p: float = 0.12
    sar_like_p: float = 0.25                # single-band crops that are not SAR already
    ships_p: float = 0.6                    # speckled crops
    panels_p: float = 0.75                  # crops of PanelConfig.modalities
    point_targets_p: float = 0.5
    # infrared, thermal and SAR crops (and speckled ones): small pasted objects and point
    # targets brighter than their surroundings with this probability (0: their own
    # ``brighter_p``, as in every other crop)
    bright_targets_p: float = 0.0
    repeated_objects_p: float = 0.0         # spatial samples
    noise_p: float = 0.7
    jpeg_p: float = 0.0                     # crops of 1-3 bands, last step
    # background crops drawn at another ground sample distance: a window of crop / s px
    # resampled to the crop, s log-uniform in ``background_scale``
    rescaled_backgrounds_p: float = 0.0
    background_scale: tuple[float, float] = (0.5, 2.0)
    # pasted objects and point targets: the local standard deviation that sets their
    # strength is at least this many quantisation steps of the background's sensor (1 for
    # integer data; no floor for floating-point data or SAR-like crops)
    quantum_floor: float = 0.0
    # crops of integer backgrounds rounded to the sensor's grey levels last, as it stores
    # them (not SAR-like crops, whose dynamic range is another, nor low-light ones)
    rounded_crops: bool = False
    shape: ShapeConfig = ShapeConfig()
    spectral: SpectralConfig = SpectralConfig()
    paste: PasteConfig = PasteConfig()
    repeated: RepeatedObjectConfig = RepeatedObjectConfig()
    points: PointConfig = PointConfig()
    hard_negatives: HardNegativeConfig = HardNegativeConfig()
    ships: ShipConfig = ShipConfig()
    panels: PanelConfig = PanelConfig()
    low_light: LowLightConfig = LowLightConfig()
    radiometry: RadiometryConfig = RadiometryConfig()
