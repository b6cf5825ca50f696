"""The per-raster spectral reduction: any bands in any order -> fixed input channels."""

import numpy as np
import pytest

from anomaly_detector.model.nn.features import (INPUT_CHANNELS, LEADING_COMPONENTS,
                                                SpectralReduction, fit_from_array,
                                                grey_level_variance)


def _scene(bands, size=40, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(100, 5, (bands, size, size))
    base[:, 20:23, 10:13] += 60  # a small bright target
    return base


@pytest.mark.parametrize("bands", [1, 3, 4, 13, 200, 500])
def test_reduction_gives_fixed_channels_for_any_band_count(bands):
    image = _scene(bands)
    channels = fit_from_array(image).apply(image)
    assert channels.shape == (INPUT_CHANNELS, 40, 40)
    assert channels.dtype == np.float32 and np.isfinite(channels).all()
    standout = [channel[21, 11] > np.percentile(channel, 99) for channel in np.abs(channels)]
    assert any(standout)  # the target stands out


def test_reduction_ignores_band_order_gain_and_offset():
    image = _scene(6)
    reference = fit_from_array(image).apply(image)
    shuffled = image[[3, 0, 5, 1, 4, 2]] * 7.5 + 40
    np.testing.assert_allclose(fit_from_array(shuffled).apply(shuffled), reference, atol=1e-4)


def test_reduction_of_a_constant_image_is_zero():
    image = np.full((3, 8, 8), 7.0)
    assert not fit_from_array(image).apply(image).any()


def test_invalid_pixels_map_to_the_mean():
    image = _scene(3)
    valid = np.ones((40, 40), bool)
    valid[0, :5] = False
    image[:, 0, :5] = np.nan
    reduction = fit_from_array(image, valid)
    channels = reduction.apply(image, valid)
    assert np.isfinite(channels).all() and not channels[:, 0, :5].any()
    with pytest.raises(ValueError):
        reduction.apply(image[:2])


def test_spectral_reduction_round_trip_from_statistics():
    image = _scene(5)
    pixels = image.reshape(5, -1)
    reduction = SpectralReduction.fit(pixels.mean(axis=1), np.cov(pixels))
    np.testing.assert_allclose(reduction.apply(image), fit_from_array(image).apply(image), atol=1e-5)


def _reference_apply(reduction, bands, valid=None):
    """The spectral reduction computed plainly in float64 (the original definition)."""
    count, height, width = bands.shape
    pixels = bands.reshape(count, -1).astype(np.float64) - reduction.mean[:, None]
    if valid is not None:
        pixels[:, ~valid.reshape(-1)] = 0.0
    pixels = np.nan_to_num(pixels, nan=0.0, posinf=0.0, neginf=0.0)
    channels = np.zeros((INPUT_CHANNELS, pixels.shape[1]))
    k = reduction.leading.shape[1]
    if reduction.full.shape[1]:
        components = reduction.full.T @ pixels
        channels[:k] = components[:k]
        channels[LEADING_COMPONENTS] = np.sqrt((components ** 2).sum(axis=0) / components.shape[0])
    channels = np.sign(channels) * np.log1p(np.abs(channels))
    return channels.astype(np.float32).reshape(INPUT_CHANNELS, height, width)


@pytest.mark.parametrize("bands, rank, noise", [(1, 1, 1.0), (3, 3, 1.0), (4, 2, 1.0),
                                                (13, 5, 1.0), (60, 6, 0.05)])
def test_chunked_reduction_matches_float64(bands, rank, noise):
    rng = np.random.default_rng(bands)
    mix = rng.normal(size=(bands, rank))
    image = mix @ rng.normal(size=(rank, 150 * 170)) * 300 + 30000
    image = np.round(image + noise * rng.normal(size=image.shape)).astype(np.float32)
    image = image.reshape(bands, 150, 170)
    image[0, 5, 5] = np.nan
    valid = np.isfinite(image).all(axis=0)
    valid[:7, :9] = False
    reduction = fit_from_array(image, valid)
    for mask in (valid, None):
        got = reduction.apply(image, mask)
        assert got.dtype == np.float32 and got.shape == (INPUT_CHANNELS, 150, 170)
        assert np.abs(got - _reference_apply(reduction, image, mask)).max() < 1e-4




def test_global_rx_channel_ignores_any_band_mixing():
    image = _scene(4, seed=4)
    mixing = np.random.default_rng(9).normal(size=(4, 4)) + 3 * np.eye(4)  # per-band gains too
    mixed = np.einsum("ij,jhw->ihw", mixing, image) + np.arange(4)[:, None, None]
    reference = fit_from_array(image).apply(image)[LEADING_COMPONENTS]
    np.testing.assert_allclose(fit_from_array(mixed).apply(mixed)[LEADING_COMPONENTS], reference,
                               atol=1e-4)


def test_degenerate_bands_add_no_component():
    image = _scene(3, seed=5)
    constant = np.full((1, 40, 40), 12.0)
    with_constant = np.concatenate([image, constant])
    reduction = fit_from_array(with_constant)
    assert reduction.full.shape == (4, 3) and reduction.leading.shape == (4, 3)
    np.testing.assert_allclose(reduction.apply(with_constant), fit_from_array(image).apply(image),
                               atol=1e-5)
    duplicated = np.concatenate([image, image[:1]])
    reduction = fit_from_array(duplicated)
    assert reduction.full.shape == (4, 3)
    channels = reduction.apply(duplicated)
    assert np.isfinite(channels).all()
    np.testing.assert_allclose(channels[LEADING_COMPONENTS],
                               fit_from_array(image).apply(image)[LEADING_COMPONENTS], atol=1e-4)


def _grey_copies(seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """A grey 8-bit image and its three copies that differ by one grey level at 15 % of the
    pixels (the rounding and compression of a grey image saved in colour)."""
    rng = np.random.default_rng(seed)
    grey = np.clip(np.round((_scene(1, seed=seed) - 100) * 2 + 120), 0, 255)
    copies = grey + rng.choice([-1.0, 0.0, 1.0], (3,) + grey.shape[1:], p=[0.075, 0.85, 0.075])
    return grey, copies


def test_copies_of_one_grey_image_reduce_to_it_when_their_bands_are_integer():
    grey, copies = _grey_copies()
    reduction = fit_from_array(copies.astype(np.int16))  # integer bands
    assert reduction.full.shape == (3, 1)  # the rounding differences are not components
    np.testing.assert_allclose(reduction.apply(copies), fit_from_array(grey).apply(grey),
                               atol=0.05)
    assert fit_from_array(copies).full.shape == (3, 3)  # float bands: the grey level is unknown
    assert grey_level_variance(False) == 0 and grey_level_variance(True, scale=2) == 0.25


def test_bands_that_differ_by_more_than_a_grey_level_keep_their_components():
    grey, copies = _grey_copies()
    copies[1:] += np.random.default_rng(3).normal(0, 1.5, copies[1:].shape).round()
    assert fit_from_array(copies.astype(np.int16)).full.shape == (3, 3)


def test_grey_step_is_component_1s_change_for_a_one_level_rise_of_every_band():
    grey, copies = _grey_copies()
    single = fit_from_array(grey.astype(np.uint8))
    # one band: one grey level over the band's standard deviation
    assert single.grey_step == pytest.approx(1 / grey.std(ddof=1), rel=1e-6)
    # three integer copies: the same step as the grey image's; float bands: unknown
    assert fit_from_array(copies.astype(np.int16)).grey_step == pytest.approx(single.grey_step,
                                                                             rel=0.01)
    assert fit_from_array(copies).grey_step == 0.0
    brighter = grey + 1.0
    step = single.apply(brighter)[0] - single.apply(grey)[0]  # compressed: at most the step
    assert 0.9 * single.grey_step < step.max() <= single.grey_step


@pytest.mark.parametrize("bands", [1, 2, 3])
def test_fewer_bands_than_components_leave_the_missing_channels_zero(bands):
    image = _scene(bands, seed=bands)
    reduction = fit_from_array(image)
    assert reduction.leading.shape == (bands, bands)
    channels = reduction.apply(image)
    assert not channels[bands:LEADING_COMPONENTS].any() and channels[:bands].any()
    # the RX channel: the whitened distance over the bands, divided by sqrt(bands), compressed
    centred = image.reshape(bands, -1) - image.reshape(bands, -1).mean(axis=1, keepdims=True)
    covariance = np.atleast_2d(np.cov(centred))
    distance = np.sqrt(np.einsum("ip,ij,jp->p", centred, np.linalg.inv(covariance), centred) / bands)
    np.testing.assert_allclose(channels[LEADING_COMPONENTS].ravel(), np.log1p(distance), atol=1e-4)
