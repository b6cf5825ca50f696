"""The kinds of simulated anomaly and of hard negative, each drawn into a crop in place.

Every function takes the crop ``image`` (B, S, S) float32, its ``labels`` (S, S) uint8,
the random generator and the settings of :mod:`.simulation_config`; the random draws
happen in a fixed order, so a seed gives the same sample.
"""
from __future__ import annotations

import numpy as np

from .shapes import (count, crop_spread, gaussian_blur, gaussian_spot, local_spread, log_uniform,
                     random_crop, random_shape, ring, rotated_axes)
from .simulation_config import (ANOMALY, BACKGROUND, IGNORE, LARGE_NORMAL, HardNegativeConfig,
                                LowLightConfig, PanelConfig, PasteConfig, PointConfig,
                                RepeatedObjectConfig, ShipConfig,
                                SimulationConfig)


def _visible_change(before: np.ndarray, after: np.ndarray, spread: np.ndarray) -> float:
    """Median over a region's pixels of the mean absolute change across bands, in units
    of the crop's mean band spread."""
    return float(np.median(np.abs(after - before).mean(axis=0) / spread.mean()))


def spectral_regions(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     config: SimulationConfig) -> None:
    """Regions whose spectra are band-shuffled: large ones normal, small ones anomalies
    (ignored when correlated bands make the shuffle invisible); often sub-pixel targets."""
    spectral, bands, size = config.spectral, image.shape[0], labels.shape[0]
    total = size * size
    spread = crop_spread(image)
    for regions, share, label in ((count(rng, spectral.large_count), spectral.large_share,
                                   LARGE_NORMAL),
                                  (count(rng, spectral.small_count), spectral.small_share,
                                   ANOMALY)):
        for _ in range(regions):
            if label == LARGE_NORMAL and \
                    (labels == LARGE_NORMAL).mean() > spectral.large_cover_limit:
                break
            mask = random_shape(size, log_uniform(rng, *share) * total, rng, config.shape)
            permutation = rng.permutation(bands)
            while bands > 1 and np.all(permutation == np.arange(bands)):
                permutation = rng.permutation(bands)
            before = image[:, mask]
            after = image[permutation][:, mask]
            image[:, mask] = after
            visible = _visible_change(before, after, spread) > spectral.visible_change
            labels[mask] = label if label != ANOMALY or visible else IGNORE
    if rng.random() < spectral.subpixel_p:
        subpixel_targets(image, labels, rng, config)


def subpixel_targets(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     config: SimulationConfig) -> None:
    """Few-pixel targets whose spectrum is a foreign material (a band-shuffled spectrum
    from the crop) mixed into the background (sub-pixel targets of hyperspectral scenes).
    Mixtures that stay within the noise are ignored."""
    spectral, bands, size = config.spectral, image.shape[0], labels.shape[0]
    spread = crop_spread(image)
    for _ in range(count(rng, spectral.subpixel_count)):
        mask = random_shape(size, log_uniform(rng, *spectral.subpixel_pixels), rng, config.shape)
        y, x = rng.integers(0, size, 2)
        material = image[rng.permutation(bands), y, x][:, None]
        fraction = rng.uniform(*spectral.subpixel_fraction)
        before = image[:, mask]
        after = (1 - fraction) * before + fraction * material
        image[:, mask] = after
        visible = _visible_change(before, after, spread) > spectral.visible_change
        labels[mask] = ANOMALY if visible else IGNORE


def pasted_objects(image: np.ndarray, source: np.ndarray, labels: np.ndarray,
                   rng: np.random.Generator, config: SimulationConfig,
                   spread_floor: float = 0.0) -> None:
    """Cut-outs of ``source`` under random masks: large ones pasted as they are, with a
    random gain and offset (normal); small ones made into distinct objects (anomalies),
    their offset in local standard deviations of at least ``spread_floor``."""
    paste, size = config.paste, labels.shape[0]
    total = size * size
    for objects, share, label in (
            (count(rng, paste.large_count), paste.large_share, LARGE_NORMAL),
            (count(rng, paste.small_count), (paste.small_min_pixels / total,
                                             paste.small_max_share), ANOMALY)):
        for _ in range(objects):
            mask = random_shape(size, log_uniform(rng, *share) * total, rng, config.shape)
            patch = random_crop(source, size, rng)
            if label == LARGE_NORMAL:
                spread = image.std(axis=(1, 2), keepdims=True) + 1e-6
                patch = patch * log_uniform(rng, *paste.large_gain) + \
                    rng.normal(0, paste.large_offset_sd) * spread
            else:
                patch = _distinct_object(image, patch, mask, rng, paste, spread_floor)
                if rng.random() < paste.blur_p:  # seen through the sensor's point-spread function
                    alpha = gaussian_blur(mask.astype(np.float32), rng.uniform(*paste.blur_sigma))
                    image[:] = image * (1 - alpha) + patch * alpha
                    labels[alpha > paste.blur_level] = label
                    continue
            image[:, mask] = patch[:, mask]
            labels[mask] = label


def _distinct_object(image: np.ndarray, patch: np.ndarray, mask: np.ndarray,
                     rng: np.random.Generator, paste: PasteConfig,
                     spread_floor: float = 0.0) -> np.ndarray:
    """A copy of ``patch`` whose part under ``mask`` is a distinct object: its texture
    damped, its level moved a few local standard deviations away from the surroundings."""
    local = local_spread(image, mask, floor=spread_floor)
    inside = patch[:, mask]
    level = inside.mean(axis=1, keepdims=True)
    texture = rng.uniform(*paste.texture) * (inside - level)
    around = image[:, ring(mask)].mean(axis=1, keepdims=True)
    sign = 1.0 if rng.random() < paste.brighter_p else -1.0
    offset = log_uniform(rng, *paste.offset) * local * \
        (sign + paste.offset_jitter * rng.normal(0, 1, (image.shape[0], 1)))
    patch = patch.copy()
    patch[:, mask] = around + offset + texture
    return patch


def repeated_objects(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     repeated: RepeatedObjectConfig) -> None:
    """A hard negative of another kind: one small object stamped at several places, each
    copy a few local standard deviations from its own surroundings; labelled large normal,
    since what is common in a scene is not an anomaly however much it stands out."""
    size = labels.shape[0]
    shape = random_shape(size, log_uniform(rng, *repeated.pixels), rng)
    rows, cols = np.nonzero(shape)
    stamp = shape[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    height, width = stamp.shape
    sign = 1.0 if rng.random() < repeated.brighter_p else -1.0
    strength = sign * log_uniform(rng, *repeated.offset)
    texture = rng.uniform(*repeated.texture)
    for _ in range(count(rng, repeated.copies)):
        top, left = rng.integers(0, size - height + 1), rng.integers(0, size - width + 1)
        mask = np.zeros_like(shape)
        mask[top:top + height, left:left + width] = stamp
        inside = image[:, mask]
        around = image[:, ring(mask)].mean(axis=1, keepdims=True)
        amplitude = strength * (1 + repeated.jitter * rng.normal())
        image[:, mask] = around + amplitude * local_spread(image, mask) + \
            texture * (inside - inside.mean(axis=1, keepdims=True))
        labels[mask] = LARGE_NORMAL


def point_targets(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                  points: PointConfig, spread_floor: float = 0.0) -> None:
    """Small, dim, blurred targets (infrared), a few local standard deviations (of at least
    ``spread_floor``) strong."""
    size = labels.shape[0]
    for _ in range(count(rng, points.count)):
        centre = rng.uniform(0, size - 1, 2)
        sigma_y, sigma_x = log_uniform(rng, *points.sigma), log_uniform(rng, *points.sigma)
        blob = gaussian_spot(size, centre, (sigma_x, sigma_y))
        core = blob > points.level
        if not core.any():
            continue
        sign = 1.0 if rng.random() < points.brighter_p else -1.0
        amplitude = sign * log_uniform(rng, *points.strength) * \
            local_spread(image, core, floor=spread_floor)
        image += amplitude[:, None] * blob[None]
        labels[core] = ANOMALY


def hard_negatives(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                   negatives: HardNegativeConfig) -> None:
    """What fools a detector, taught as background: straight (sharp or soft) edges,
    corners of buildings and fields, long thin lines (roads, wires, field borders),
    large smooth bright or dark areas (clouds, haze, glint), if ``blob_p``, compact
    smooth blobs several times a point target's size (cloud fragments, sunlit roofs) and,
    if ``smooth_p``, patches smoother than their surroundings at the same level (sky
    between clouds, calm water; background) and, if ``faint_p``, faint bumps (background);
    lines, clouds and blobs are labelled large normal."""
    size = labels.shape[0]
    spread = crop_spread(image)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(count(rng, negatives.count)):
        if negatives.faint_p and rng.random() < negatives.faint_p:
            faint_bumps(image, rng, negatives)
            continue
        if negatives.smooth_p and rng.random() < negatives.smooth_p:
            smooth_patch(image, rng, negatives)
            continue
        if negatives.blob_p and rng.random() < negatives.blob_p:
            sigma = [log_uniform(rng, *negatives.blob_sigma) for _ in range(2)]
            field = gaussian_spot(size, rng.uniform(0, size - 1, 2), (sigma[0], sigma[1]),
                                  rng.uniform(0, np.pi))
            normal = field > negatives.blob_level
        elif negatives.corner_p and rng.random() < negatives.corner_p:
            field, normal = _corner_field(yy, xx, rng, negatives), None
        else:
            angle = rng.uniform(0, np.pi)
            distance = (xx - rng.uniform(0, size)) * np.cos(angle) + \
                (yy - rng.uniform(0, size)) * np.sin(angle)
            field, normal = _negative_field(distance, rng, negatives)
        tint = 1 + negatives.tint * rng.normal(0, 1, image.shape[0])
        amplitude = rng.choice([-1.0, 1.0]) * log_uniform(rng, *negatives.strength) * spread * tint
        image += amplitude[:, None, None].astype(np.float32) * field[None]
        if normal is not None:
            labels[normal & (labels == BACKGROUND)] = LARGE_NORMAL


def faint_bumps(image: np.ndarray, rng: np.random.Generator,
                negatives: HardNegativeConfig) -> None:
    """Small patches (irregular blobs or rotated rectangles) moved up or down by less than
    the local standard deviation, sharp or blurred: what a sensor's grey levels, banding
    and texture make everywhere, not objects."""
    size = image.shape[-1]
    for _ in range(count(rng, negatives.faint_count)):
        mask = random_shape(size, log_uniform(rng, *negatives.faint_pixels), rng)
        if not mask.any():
            continue
        field = mask.astype(np.float32)
        if rng.random() < negatives.edge_blur_p:
            field = gaussian_blur(field, rng.uniform(*negatives.edge_blur_sigma))
        amplitude = rng.choice([-1.0, 1.0]) * log_uniform(rng, *negatives.faint_strength) * \
            local_spread(image, mask)
        image += amplitude[:, :, None].astype(np.float32) * field[None]


def smooth_patch(image: np.ndarray, rng: np.random.Generator,
                 negatives: HardNegativeConfig) -> None:
    """Part of the crop (an irregular blob or rotated rectangle) replaced by a blurred copy
    of itself: smoother than around it, at the same level."""
    size = image.shape[-1]
    mask = random_shape(size, log_uniform(rng, *negatives.smooth_pixels), rng)
    sigma = rng.uniform(*negatives.smooth_sigma)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return
    reach = int(3 * sigma) + 1  # blur only the window that the patch's pixels need
    y0, y1 = max(0, rows.min() - reach), min(size, rows.max() + 1 + reach)
    x0, x1 = max(0, cols.min() - reach), min(size, cols.max() + 1 + reach)
    window = mask[y0:y1, x0:x1]
    blurred = gaussian_blur(image[:, y0:y1, x0:x1], sigma)
    image[:, y0:y1, x0:x1][:, window] = blurred[:, window]


def _corner_field(yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator,
                  negatives: HardNegativeConfig) -> np.ndarray:
    """A unit wedge: the area between two edges that meet at a point in the crop's middle
    part at an angle of ``negatives.corner_angle``, sharp or blurred like an edge."""
    size = yy.shape[0]
    apex_y, apex_x = rng.uniform(0.2 * size, 0.8 * size, 2)
    first = rng.uniform(0, 2 * np.pi)
    second = first + np.deg2rad(rng.uniform(*negatives.corner_angle))
    dy, dx = yy - apex_y, xx - apex_x
    # left of the first edge's direction and right of the second's
    inside = (np.cos(first) * dy - np.sin(first) * dx > 0) & \
        (np.cos(second) * dy - np.sin(second) * dx < 0)
    field = inside.astype(np.float32)
    if rng.random() < negatives.edge_blur_p:
        field = gaussian_blur(field, rng.uniform(*negatives.edge_blur_sigma))
    return field


def _negative_field(distance: np.ndarray, rng: np.random.Generator,
                    negatives: HardNegativeConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """(unit field, where it is labelled large normal or None): a step edge, a line or a
    cloud, drawn with equal probability; ``distance`` is the signed distance to a line."""
    kind = rng.integers(3)
    if kind == 0:  # step edge
        field = (distance > 0).astype(np.float32)
        if rng.random() < negatives.edge_blur_p:
            field = gaussian_blur(field, rng.uniform(*negatives.edge_blur_sigma))
        return field, None
    if kind == 1:  # line
        field = np.exp(-0.5 * (distance / rng.uniform(*negatives.line_width)) ** 2)
        return field, field > negatives.line_level
    noise = gaussian_blur(rng.normal(0, 1, distance.shape), rng.uniform(*negatives.cloud_smoothness))
    field = np.clip((noise - noise.mean()) / (noise.std() + 1e-9)
                    - rng.uniform(*negatives.cloud_cut), 0, None)
    field /= field.max() + 1e-9
    return field, field > negatives.cloud_level


def ships(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
          config: ShipConfig) -> None:
    """Ships in speckle: compact, bright, elongated clusters with their own speckle."""
    size = labels.shape[0]
    spread = crop_spread(image)
    for _ in range(count(rng, config.count)):
        length = log_uniform(rng, *config.length)
        spot = gaussian_spot(size, rng.uniform(0, size - 1, 2),
                             (length, max(length / log_uniform(rng, *config.elongation),
                                          config.min_width)),
                             rng.uniform(0, np.pi))
        looks = int(count(rng, config.looks))
        speckle = rng.gamma(looks, 1.0 / looks, spot.shape).astype(np.float32)
        gain = log_uniform(rng, *config.strength) * spread
        image += gain[:, None, None] * (spot * speckle)[None]
        labels[spot > config.level] = ANOMALY


def panel_arrays(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                 panels: PanelConfig) -> None:
    """Solar-panel-like arrays: a regular grid of dark (often bluish) rectangles with
    narrow gaps, at a random angle; panels are anomalies, the gaps ignored. With
    probability ``panels.field_p`` a field: many long rows apart, reaching beyond the crop."""
    size = labels.shape[0]
    field = panels.field_p > 0 and rng.random() < panels.field_p
    reach = panels.field_reach * size if field else 0.0
    angle = rng.uniform(0, np.pi)
    u, v = rotated_axes(size, rng.uniform(-reach, size - 1, 2), angle)
    length, width = rng.uniform(*panels.length), rng.uniform(*panels.width)
    gap = rng.uniform(*(panels.field_gap if field else panels.gap))
    if field:
        rows, columns = count(rng, panels.field_rows), count(rng, panels.field_columns)
        row_pitch = width + rng.uniform(*panels.field_row_gap)
    else:
        rows, columns = count(rng, panels.rows), count(rng, panels.columns)
        row_pitch = width + gap
    inside = (u >= 0) & (u < columns * (length + gap)) & (v >= 0) & (v < rows * row_pitch)
    cells = inside & (np.mod(u, length + gap) < length) & (np.mod(v, row_pitch) < width)
    if not cells.any():
        return
    local = local_spread(image, cells)
    outside = ring(inside)
    around = image[:, outside if outside.any() else ~cells].mean(axis=1, keepdims=True)
    tint = 1 + panels.tint * rng.normal(0, 1, (image.shape[0], 1))
    level = around - log_uniform(rng, *panels.darkness) * local * tint
    image[:, cells] = level + panels.texture * local * \
        rng.normal(0, 1, (image.shape[0], int(cells.sum())))
    labels[inside] = IGNORE
    labels[cells] = ANOMALY


def low_light(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
              night: LowLightConfig) -> np.ndarray:
    """Night-time imagery: the scene dimmed to a few % of its range, sometimes a large
    glow (a town: normal), point lights (boats, vehicles, people: anomalies), shot and
    read noise, often 8-bit quantised. Returns the new image."""
    size = labels.shape[0]
    low, high = np.percentile(image, [1, 99])
    image = np.clip((image - low) / (high - low + 1e-9), 0, None) * \
        log_uniform(rng, *night.brightness)
    if rng.random() < night.glow_p:
        glow = gaussian_spot(size, rng.uniform(0, size - 1, 2),
                             (rng.uniform(*night.glow_sigma), rng.uniform(*night.glow_sigma)),
                             rng.uniform(0, np.pi))
        image = image + rng.uniform(*night.glow_strength) * glow[None]
        labels[(glow > night.glow_level) & (labels == BACKGROUND)] = LARGE_NORMAL
    tint = 1 + night.tint * rng.normal(0, 1, (image.shape[0], 1, 1))
    for _ in range(count(rng, night.lights)):
        sigma = log_uniform(rng, *night.light_sigma)
        spot = gaussian_spot(size, rng.uniform(0, size - 1, 2),
                             (sigma, sigma * rng.uniform(*night.light_aspect)),
                             rng.uniform(0, np.pi))
        image = image + log_uniform(rng, *night.light_strength) * tint * spot[None]
        labels[spot > night.light_level] = ANOMALY
    read = log_uniform(rng, *night.read_noise)
    shot = np.sqrt(np.clip(image, 0, None) * log_uniform(rng, *night.shot_noise))
    image = image + rng.normal(0, 1, image.shape) * (read + shot)
    if rng.random() < night.quantise_p:
        image = np.round(np.clip(image, 0, 1) * 255)
    return image.astype(np.float32)
