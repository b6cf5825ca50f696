"""The anomaly simulation: seeded samples pinned on a tiny synthetic background bank."""

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from anomaly_detector.model.nn.features import INPUT_CHANNELS, fit_from_array
from anomaly_detector.model.training.anomalies import (hard_negatives, panel_arrays, point_targets,
                                                       repeated_objects)
from anomaly_detector.model.training.radiometry import jpeg_artefacts, jpeg_quantisation
from anomaly_detector.model.training.shapes import random_shape
from anomaly_detector.model.training.simulation import (AnomalySimulator, BackgroundImage,
                                                        load_backgrounds, make_batch, resampled,
                                                        save_bank)
from anomaly_detector.model.training.simulation_config import (ANOMALY, BACKGROUND, IGNORE,
                                                               LARGE_NORMAL, HardNegativeConfig,
                                                               PanelConfig, PointConfig,
                                                               RadiometryConfig,
                                                               RepeatedObjectConfig,
                                                               SimulationConfig)
from conftest import write_raster

CROP = 32
SAMPLES = 40
# What the seeded draw of _draw gives; a change here means `make train` no longer
# reproduces the bundled weights (tools/simulation_digest.py checks the real bank).
PINNED_LABELS_SHA256 = "23ffd687a61cb2aa4b1fa62eceb395a4dccfe078aac015d0c830bd1fdaa57897"
PINNED_BAND_COUNTS = [1, 9, 1, 1, 1, 1, 12, 12, 12, 1, 1, 1, 1, 1, 1, 5, 1, 1, 1, 1,
                      1, 1, 1, 1, 1, 1, 2, 1, 1, 12, 1, 3, 1, 1, 3, 1, 1, 3, 1, 1]
PINNED_LABEL_COUNTS = [27349, 2264, 274, 11073]  # background, anomaly, ignore, large normal
PINNED_MEAN_SUM, PINNED_STD_SUM = 2316.4040118660596, 1830.5985926903759


def _backgrounds() -> dict[str, np.ndarray]:
    """Four tiny scenes: many bands, speckle, colour (with a NaN) and a small infrared one."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:40, 0:40]
    field = np.sin(xx / 5.0) + np.cos(yy / 7.0)
    spectra = np.linspace(1.0, 2.0, 12)[:, None, None]
    colour = rng.normal(80, 6, (3, 36, 44))
    colour[1, 5, 5] = np.nan
    return {
        "hyperspectral/fields": (100 + 10 * spectra * field + rng.normal(0, 1, (12, 40, 40))),
        "sar/sea": 50 * rng.gamma(2.0, 0.5, (1, 40, 40)),
        "visible_aerial/roofs": colour,
        "infrared/sky": 20 + 2 * field[:24, :30][None] + rng.normal(0, 0.5, (1, 24, 30)),
    }


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("backgrounds")
    for name, pixels in _backgrounds().items():
        (root / name).parent.mkdir(exist_ok=True)
        write_raster(root / f"{name}.tif", pixels.astype(np.float32))
    return load_backgrounds([root])


def _draw(bank, count=SAMPLES, seed=20241):
    simulator = AnomalySimulator(bank, crop=CROP)
    rng = np.random.default_rng(seed)
    samples = [simulator.sample(rng) for _ in range(count)]
    return [image for image, _ in samples], [labels for _, labels in samples]


def test_background_bank_is_read_with_non_finite_pixels_filled(bank, tmp_path):
    assert sorted((b.modality, b.name, b.pixels.shape) for b in bank) == [
        ("hyperspectral", "fields", (12, 40, 40)), ("infrared", "sky", (1, 24, 30)),
        ("sar", "sea", (1, 40, 40)), ("visible_aerial", "roofs", (3, 36, 44))]
    assert all(np.isfinite(b.pixels).all() and b.pixels.dtype == np.float32 for b in bank)
    with pytest.raises(FileNotFoundError, match="no background images"):
        load_backgrounds([tmp_path])


def test_bank_file_holds_the_same_images_as_the_folders(tmp_path):
    root = tmp_path / "backgrounds"
    for name, pixels in _backgrounds().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_raster(root / f"{name}.tif", pixels.astype(np.float32))
    save_bank([root], tmp_path / "bank.npz")
    from_folders, from_file = load_backgrounds([root]), load_backgrounds([tmp_path / "bank.npz"])
    assert [(b.modality, b.name) for b in from_file] == [(b.modality, b.name) for b in from_folders]
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(from_file, from_folders))
    assert all(np.isfinite(b.pixels).all() for b in from_file)  # the NaN filled as from GDAL


def test_seeded_samples_are_pinned(bank):
    images, labels = _draw(bank)
    assert all(i.dtype == np.float32 and i.shape[1:] == (CROP, CROP) and np.isfinite(i).all()
               for i in images)
    assert all(l.dtype == np.uint8 and l.shape == (CROP, CROP) for l in labels)
    assert [i.shape[0] for i in images] == PINNED_BAND_COUNTS
    counts = np.bincount(np.concatenate([l.ravel() for l in labels]), minlength=4).tolist()
    assert counts == PINNED_LABEL_COUNTS
    assert hashlib.sha256(b"".join(l.tobytes() for l in labels)).hexdigest() == \
        PINNED_LABELS_SHA256
    assert sum(float(np.float64(i).mean()) for i in images) == pytest.approx(PINNED_MEAN_SUM,
                                                                             rel=1e-6)
    assert sum(float(np.float64(i).std()) for i in images) == pytest.approx(PINNED_STD_SUM,
                                                                            rel=1e-6)


def test_samples_hold_every_label_and_both_kinds_of_crop(bank):
    images, labels = _draw(bank)
    assert {BACKGROUND, ANOMALY, IGNORE, LARGE_NORMAL} <= set(np.unique(labels).tolist())
    assert min(i.shape[0] for i in images) == 1 and max(i.shape[0] for i in images) > 3


def test_batch_is_the_samples_through_the_inference_reduction(bank):
    features, labels, grey_steps = make_batch(AnomalySimulator(bank, crop=CROP),
                                              np.random.default_rng(5), 3)
    images, expected = _draw(bank, 3, seed=5)
    assert features.shape == (3, INPUT_CHANNELS, CROP, CROP) and features.dtype == np.float32
    np.testing.assert_array_equal(labels, np.stack(expected))
    np.testing.assert_array_equal(features[1], fit_from_array(images[1]).apply(images[1]))
    assert not grey_steps.any()  # float crops: their grey level is unknown


def test_grey_floors_reduce_crops_of_integer_sensors_with_one_grey_level():
    rng = np.random.default_rng(3)  # a grey 8-bit image stored in three bands
    grey = np.round(60 + 8 * rng.standard_normal((1, 60, 60)))
    copies = np.concatenate([grey, grey + rng.choice([-1.0, 0.0, 1.0], (2, 60, 60),
                                                     p=[0.1, 0.8, 0.1])]).astype(np.float32)
    config = SimulationConfig(low_light_p=0.0, sar_like_p=0.0, noise_p=0.0, spectral_p=0.0,
                              single_band_p=0.0)
    simulator = AnomalySimulator([BackgroundImage("infrared", "copies", copies, 1.0)], crop=32,
                                 config=config)
    plain = make_batch(simulator, np.random.default_rng(4), 4)
    floored = make_batch(simulator, np.random.default_rng(4), 4, grey_floors=True)
    np.testing.assert_array_equal(plain[1], floored[1])  # the same samples
    assert not plain[2].any() and (floored[2] > 0.02).all()  # above the fixed floor
    image, _, step = simulator.draw(np.random.default_rng(4))
    reduction = fit_from_array(image, grey_level=1.0)  # as anomaly:detect, an integer raster
    assert step == 1.0 and floored[2][0] == pytest.approx(reduction.grey_step)
    np.testing.assert_array_equal(floored[0][0], reduction.apply(image))


def test_random_shape_has_about_the_requested_area():
    rng = np.random.default_rng(1)
    areas = [random_shape(96, 400, rng).sum() for _ in range(50)]
    assert 250 < np.median(areas) < 550


def test_simulator_produces_labelled_anomalies_of_both_sizes():
    rng = np.random.default_rng(3)
    pixels = rng.normal(50, 3, (8, 60, 70)).astype(np.float32)
    simulator = AnomalySimulator([BackgroundImage("multispectral", "noise", pixels)], crop=48)
    seen = set()
    for _ in range(20):
        image, labels = simulator.sample(rng)
        assert image.shape[1:] == labels.shape == (48, 48) and np.isfinite(image).all()
        seen |= set(np.unique(labels).tolist())
        assert (labels == ANOMALY).mean() < 0.3
    assert {BACKGROUND, ANOMALY, LARGE_NORMAL} <= seen


def test_corner_negatives_are_convex_wedges_labelled_background():
    rng = np.random.default_rng(7)
    negatives = HardNegativeConfig(corner_p=1.0, count=(1, 1), edge_blur_p=0.0)
    for _ in range(10):
        image = np.zeros((2, 40, 40), np.float32)
        labels = np.zeros((40, 40), np.uint8)
        hard_negatives(image, labels, rng, negatives)
        wedge = image[0] != 0
        assert (labels == BACKGROUND).all() and 0 < wedge.sum() < wedge.size
        assert np.array_equal(wedge, image[1] != 0)
        ys, xs = np.nonzero(wedge)
        pairs = rng.integers(0, len(ys), (200, 2))
        middle_y = np.round((ys[pairs[:, 0]] + ys[pairs[:, 1]]) / 2).astype(int)
        middle_x = np.round((xs[pairs[:, 0]] + xs[pairs[:, 1]]) / 2).astype(int)
        assert wedge[middle_y, middle_x].mean() > 0.97  # convex, up to rounding


def test_blob_negatives_are_smooth_compact_blobs_labelled_large_normal():
    rng = np.random.default_rng(5)
    negatives = HardNegativeConfig(blob_p=1.0, count=(1, 1), tint=0.0)
    labelled = 0
    for _ in range(10):
        image = np.zeros((2, 64, 64), np.float32)
        labels = np.zeros((64, 64), np.uint8)
        hard_negatives(image, labels, rng, negatives)
        strength = np.abs(image[0])
        assert np.allclose(image[1], image[0])
        assert set(np.unique(labels).tolist()) <= {BACKGROUND, LARGE_NORMAL}
        normal = labels == LARGE_NORMAL
        if normal.any():  # the normal label is a level set of the blob: its strongest part
            assert strength[normal].min() > strength[~normal].max()
            labelled += 1
        # sigma 4-12 px: far larger than a point target's core, compact within the crop
        assert normal.sum() < 0.45 * labels.size
        assert np.abs(np.diff(strength, axis=1)).max() < 0.3 * strength.max()  # smooth
    assert labelled >= 8  # only blobs centred near a corner may leave the crop unlabelled


def test_repeated_objects_are_copies_of_one_shape_labelled_normal():
    rng = np.random.default_rng(11)
    config = RepeatedObjectConfig(copies=(6, 6), pixels=(20.0, 20.0), jitter=0.0,
                                  texture=(0.0, 0.0))
    image = rng.normal(0, 1, (3, 64, 64)).astype(np.float32)
    before = image.copy()
    labels = np.zeros((64, 64), np.uint8)
    repeated_objects(image, labels, rng, config)
    changed = np.any(image != before, axis=0)
    assert set(np.unique(labels).tolist()) == {BACKGROUND, LARGE_NORMAL}
    assert np.array_equal(changed, labels == LARGE_NORMAL)
    # six copies of a ~20 px shape (they may overlap)
    assert 20 <= changed.sum() <= 6 * 40
    # each copy stands out from the crop: one sign, whole local standard deviations
    offsets = image[:, changed].mean() - image[:, ~changed].mean()
    assert abs(offsets) > 0.8


def test_panel_fields_are_many_dark_rows_reaching_beyond_the_crop():
    rng = np.random.default_rng(13)
    panel_pixels, covered, darker = {}, {}, []
    for field_p in (0.0, 1.0):
        panel_pixels[field_p], covered[field_p] = [], []
        for _ in range(100):
            image = rng.normal(0, 1, (3, 96, 96)).astype(np.float32)
            labels = np.zeros((96, 96), np.uint8)
            panel_arrays(image, labels, rng, PanelConfig(field_p=field_p))
            panels = labels == ANOMALY
            assert set(np.unique(labels).tolist()) <= {BACKGROUND, ANOMALY, IGNORE}
            if panels.any():
                darker.append(image[:, labels == BACKGROUND].mean() - image[:, panels].mean())
            panel_pixels[field_p].append(int(panels.sum()))
            covered[field_p].append(float((labels != BACKGROUND).mean()))
    # small arrays: at most 4 rows of 7 panels of 8 x 5 px; fields often a quarter of the crop
    assert max(panel_pixels[0.0]) <= 4 * 7 * 8 * 5 and max(covered[0.0]) < 0.25
    assert np.percentile(panel_pixels[1.0], 75) > 3 * np.percentile(panel_pixels[0.0], 75)
    assert np.mean(np.array(covered[1.0]) > 0.25) > 0.2
    assert np.median(darker) > 1.0  # panels whole local standard deviations darker


def _jpeg_by_scipy(levels: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """8 x 8 blocks of one 0-255 band quantised in the DCT domain, with SciPy's DCT."""
    from scipy.fft import dctn, idctn
    out = np.empty_like(levels)
    for y in range(0, levels.shape[0], 8):
        for x in range(0, levels.shape[1], 8):
            block = dctn(levels[y:y + 8, x:x + 8] - 128, norm="ortho")
            out[y:y + 8, x:x + 8] = idctn(np.round(block / steps) * steps, norm="ortho") + 128
    return np.clip(np.round(out), 0, 255)


def test_jpeg_artefacts_quantise_8x8_blocks_of_the_stretched_band():
    yy, xx = np.mgrid[0:30, 0:44]
    band = 200 + 40 * np.sin(xx / 4.0) * np.cos(yy / 6.0) + \
        np.random.default_rng(2).normal(0, 3, (30, 44))
    image = band[None].astype(np.float32)
    config = RadiometryConfig(jpeg_quality=(35.0, 35.0))
    decoded = jpeg_artefacts(image, np.random.default_rng(9), config)
    phase = np.random.default_rng(9)
    phase.uniform(35.0, 35.0)
    top, left = phase.integers(0, 8, 2)
    low, span = image.min(), np.ptp(image) + 1e-9
    levels = np.pad(np.round((image[0] - low) / span * 255),
                    ((top, (-(30 + top)) % 8), (left, (-(44 + left)) % 8)), mode="edge")
    expected = _jpeg_by_scipy(levels, jpeg_quantisation(35.0))[top:top + 30, left:left + 44]
    assert decoded.shape == image.shape and decoded.dtype == np.float32
    np.testing.assert_allclose(decoded[0], expected / 255 * span + low, atol=span / 255 * 1.01)
    assert np.abs(decoded - image).mean() > 0.5 * span / 255  # artefacts, not a copy
    # at quality 100 every step is 1: the band comes back within a level of its 8 bits
    exact = jpeg_artefacts(image, np.random.default_rng(9), RadiometryConfig(jpeg_quality=(100, 100)))
    assert np.abs(exact - image).max() <= 1.5 * span / 255
    assert jpeg_quantisation(100.0).max() == 1 and jpeg_quantisation(50.0)[0, 0] == 16


def _brighter_share(modality: str, bright_targets_p: float) -> float:
    """Share of simulated crops whose anomaly pixels are brighter than their background."""
    rng = np.random.default_rng(5)
    pixels = rng.normal(50, 3, (1, 80, 80)).astype(np.float32)
    config = SimulationConfig(bright_targets_p=bright_targets_p, low_light_p=0.0,
                              hard_negatives_p=0.0, illumination_p=0.0, sar_like_p=0.0)
    simulator = AnomalySimulator([BackgroundImage(modality, "flat", pixels)], crop=48,
                                 config=config)
    brighter = []
    for _ in range(120):
        image, labels = simulator.sample(rng)
        if (labels == ANOMALY).any():
            band = image[0]
            brighter.append(band[labels == ANOMALY].mean() > band[labels == BACKGROUND].mean())
    return float(np.mean(brighter))


def test_bright_targets_make_infrared_and_sar_targets_brighter_and_nothing_else():
    assert _brighter_share("infrared", 0.95) > 0.9
    assert _brighter_share("sar", 0.95) > 0.9
    assert _brighter_share("infrared", 0.0) < 0.85  # 0.65 and 0.85: some targets are dark
    assert _brighter_share("visible_aerial", 0.95) == _brighter_share("visible_aerial", 0.0)


def test_smooth_negatives_are_smoother_patches_at_the_same_level_labelled_background():
    rng = np.random.default_rng(11)
    image = rng.normal(40, 5, (2, 64, 64)).astype(np.float32)
    labels = np.full((64, 64), BACKGROUND, np.uint8)
    before = image.copy()
    hard_negatives(image, labels, rng, HardNegativeConfig(smooth_p=1.0, count=(3, 3)))
    changed = (image != before).any(axis=0)
    assert 30 <= changed.sum() < 64 * 64 and (labels == BACKGROUND).all()
    assert image[:, changed].std() < 0.5 * before[:, changed].std()  # smoother ...
    assert abs(image[:, changed].mean() - before[:, changed].mean()) < 1.0  # ... same level


def test_faint_negatives_are_bumps_weaker_than_the_local_texture_labelled_background():
    rng = np.random.default_rng(12)
    image = rng.normal(40, 5, (2, 64, 64)).astype(np.float32)
    labels = np.full((64, 64), BACKGROUND, np.uint8)
    before = image.copy()
    hard_negatives(image, labels, rng, HardNegativeConfig(faint_p=1.0, count=(1, 1),
                                                          faint_count=(1, 1), edge_blur_p=0.0))
    change = image - before
    bumps = (np.abs(change) > 0).any(axis=0)
    assert 4 <= bumps.sum() < 64 * 64 // 8 and (labels == BACKGROUND).all()
    assert np.abs(change).max() <= 1.0 * 5 * 1.3  # under one local deviation (about 5)


def _samples(bands: int, faint_p: float, faint_max_bands: int) -> np.ndarray:
    """Ten seeded crops of one sensor of ``bands`` bands, every crop with hard negatives,
    each as its band mean."""
    rng = np.random.default_rng(13)
    pixels = rng.normal(50, 3, (bands, 60, 60)).astype(np.float32)
    defaults = SimulationConfig()
    config = replace(defaults, hard_negatives_p=1.0, hard_negatives=replace(
        defaults.hard_negatives, faint_p=faint_p, faint_max_bands=faint_max_bands))
    simulator = AnomalySimulator([BackgroundImage("sensor", "noise", pixels)], crop=32,
                                 config=config)
    return np.stack([simulator.sample(rng)[0].mean(axis=0) for _ in range(10)])


def test_faint_max_bands_spares_sensors_of_more_bands_and_only_them():
    many, few = 12, 3
    np.testing.assert_array_equal(_samples(many, 1.0, few), _samples(many, 0.0, 0))
    np.testing.assert_array_equal(_samples(few, 1.0, few), _samples(few, 1.0, 0))
    assert not np.array_equal(_samples(few, 1.0, few), _samples(few, 0.0, 0))


def test_resampling_keeps_ramps_and_averages_fine_texture_when_shrinking():
    ramp = np.broadcast_to(np.arange(48, dtype=np.float32), (2, 48, 48))
    enlarged = resampled(ramp, 96)  # each output pixel centre maps back onto the ramp
    assert enlarged.shape == (2, 96, 96) and enlarged.dtype == np.float32
    np.testing.assert_allclose(enlarged[:, :, 2:-2], ((np.arange(96) + 0.5) / 2 - 0.5)[2:-2]
                               * np.ones((2, 96, 1)), atol=1e-4)
    checkerboard = (np.indices((192, 192)).sum(axis=0) % 2 * 100.0)[None]
    shrunk = resampled(checkerboard, 96)
    assert shrunk.shape == (1, 96, 96) and np.abs(shrunk - 50).max() < 5  # averaged, not aliased


def test_rescaled_backgrounds_show_the_background_at_other_scales():
    rng = np.random.default_rng(3)
    pixels = rng.normal(50, 10, (2, 200, 200)).astype(np.float32)  # white noise
    plain = SimulationConfig(low_light_p=0.0, hard_negatives_p=0.0, illumination_p=0.0,
                             noise_p=0.0, spectral_p=0.0, single_band_p=0.0, sar_like_p=0.0,
                             point_targets_p=0.0, panels_p=0.0)
    roughness = {}
    for p in (0.0, 1.0):
        simulator = AnomalySimulator([BackgroundImage("visible_aerial", "noise", pixels)],
                                     crop=48, config=replace(plain, rescaled_backgrounds_p=p))
        draws = [simulator.sample(np.random.default_rng(seed)) for seed in range(30)]
        assert all(image.shape == (2, 48, 48) and np.isfinite(image).all()
                   for image, _ in draws)
        # neighbour differences of the noise: the same at the raster's scale, smaller when
        # enlarged (interpolated) or shrunk (averaged)
        roughness[p] = np.median([np.abs(np.diff(image[0], axis=1)).mean() /
                                  image[0].std() for image, _ in draws])
    assert roughness[1.0] < 0.9 * roughness[0.0]


def test_integer_backgrounds_carry_their_quantisation_step(tmp_path):
    for name, dtype in (("infrared/sky", np.uint8), ("thermal/degrees", np.float32)):
        (tmp_path / name).parent.mkdir()
        write_raster(tmp_path / f"{name}.tif", np.full((1, 8, 8), 20, dtype=dtype))
    steps = {image.modality: image.step for image in load_backgrounds([tmp_path])}
    assert steps == {"infrared": 1.0, "thermal": 0.0}


def test_one_band_copies_loads_a_grey_image_saved_in_colour_as_one_band(tmp_path):
    rng = np.random.default_rng(6)
    grey = rng.integers(60, 200, (1, 30, 30))
    copies = grey + rng.choice([-1, 0, 1], (3, 30, 30), p=[0.1, 0.8, 0.1])
    colour = np.stack([grey[0], 255 - grey[0], rng.integers(0, 255, (30, 30))])
    (tmp_path / "infrared").mkdir()
    for name, array in (("copies", copies), ("colour", colour)):
        write_raster(tmp_path / "infrared" / f"{name}.tif", array.astype(np.uint8))
        write_raster(tmp_path / "infrared" / f"{name}-float.tif", array.astype(np.float32))
    bands = {image.name: image.pixels.shape[0]
             for image in load_backgrounds([tmp_path], one_band_copies=True)}
    assert bands == {"copies": 1, "colour": 3, "copies-float": 3, "colour-float": 3}
    one = next(i for i in load_backgrounds([tmp_path], True) if i.name == "copies")
    np.testing.assert_allclose(one.pixels, copies.mean(axis=0, keepdims=True), atol=1e-4)
    assert all(image.pixels.shape[0] == 3 for image in load_backgrounds([tmp_path]))


def _crops(step: float, rounded: bool) -> list[np.ndarray]:
    """Twenty seeded crops of a smooth ramp whose grey level is ``step`` (0: unknown)."""
    rng = np.random.default_rng(8)
    ramp = np.broadcast_to(np.linspace(20, 40, 60, dtype=np.float32), (1, 60, 60)).copy()
    config = SimulationConfig(rounded_crops=rounded, low_light_p=0.0, sar_like_p=0.0)
    simulator = AnomalySimulator([BackgroundImage("infrared", "ramp", ramp, step)], crop=32,
                                 config=config)
    return [simulator.sample(rng)[0] for _ in range(20)]


def test_rounded_crops_are_stored_on_the_sensor_grey_levels():
    assert all(np.array_equal(crop, np.round(crop)) for crop in _crops(1.0, True))
    assert not any(np.array_equal(crop, np.round(crop)) for crop in _crops(1.0, False))
    assert not any(np.array_equal(crop, np.round(crop)) for crop in _crops(0.0, True))


def _point_target_peaks(spread_floor: float) -> list[float]:
    """Peak change of 60 point targets drawn into a flat sky (20 grey levels, noise of 0.1)."""
    rng = np.random.default_rng(5)
    peaks = []
    for _ in range(60):
        image = 20 + rng.normal(0, 0.1, (1, 48, 48)).astype(np.float32)
        before = image.copy()
        point_targets(image, np.zeros((48, 48), np.uint8), rng, PointConfig(count=(1, 1)),
                      spread_floor)
        peaks.append(float(np.abs(image - before).max()))
    return peaks


def test_quantum_floor_keeps_targets_above_the_sensor_s_grey_levels():
    assert max(_point_target_peaks(0.0)) < 1.2   # 1.5-10 local deviations of 0.1 level
    assert min(_point_target_peaks(2.0)) >= 1.5 * 2 * PointConfig().level  # >= 3 levels at peak
