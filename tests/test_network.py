"""The network, its band-agnostic input reduction, the evidence channels and the simulation."""

import numpy as np
import pytest
import torch

from anomaly_detector.model.nn.features import INPUT_CHANNELS, SpectralReduction, fit_from_array
from anomaly_detector.model.nn.evidence import (CONTRAST_SCALES, EVIDENCE_CHANNELS, EVIDENCE_RADIUS,
                                            GUARD_RADIUS, OUTER_RADIUS, RIDGE, evidence_channels,
                                            local_contrast, local_rx)
from anomaly_detector.model.nn.network import CONV_RECEPTIVE_RADIUS, DeviationNet, parameter_count
from anomaly_detector.model.training.shapes import random_shape
from anomaly_detector.model.training.simulation import AnomalySimulator, BackgroundImage
from anomaly_detector.model.training.simulation_config import ANOMALY, BACKGROUND, LARGE_NORMAL


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


def test_network_scores_are_probabilities_and_compact():
    model = DeviationNet().eval()
    with torch.inference_mode():
        scores = model.score(torch.randn(2, INPUT_CHANNELS, 64, 48))
    assert scores.shape == (2, 64, 48)
    assert float(scores.min()) >= 0 and float(scores.max()) <= 1
    assert parameter_count(model) < 5_000_000 // 4  # far below the 20 MB budget in float32


@pytest.mark.parametrize("evidence", [False, True])
def test_receptive_radius_is_what_the_network_declares(evidence):
    torch.manual_seed(0)
    model = DeviationNet(evidence=evidence)
    for parameter in model.parameters():  # all-positive weights: no accidental zero gradients
        parameter.data.abs_()
    inputs = torch.randn(1, INPUT_CHANNELS, 160, 160, requires_grad=True)
    model(inputs)[0][0, 80, 80].backward()
    reached = torch.nonzero(inputs.grad.abs().sum(dim=1)[0] > 0)
    radius = int(max(80 - reached.min(), reached.max() - 80))
    assert radius == model.receptive_radius == CONV_RECEPTIVE_RADIUS + evidence * EVIDENCE_RADIUS


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
        small = (labels == ANOMALY).mean()
        assert small < 0.3
    assert {BACKGROUND, ANOMALY, LARGE_NORMAL} <= seen


def test_spectral_reduction_round_trip_from_statistics():
    image = _scene(5)
    pixels = image.reshape(5, -1)
    reduction = SpectralReduction.fit(pixels.mean(axis=1), np.cov(pixels))
    np.testing.assert_allclose(reduction.apply(image), fit_from_array(image).apply(image), atol=1e-5)


def _window(values: np.ndarray, row: int, col: int, radius: int, guard: int = -1) -> np.ndarray:
    """(C, n) pixels of the clipped (2r+1)^2 window around (row, col), minus the guard window."""
    height, width = values.shape[-2:]
    rows, cols = np.mgrid[0:height, 0:width]
    inside = (abs(rows - row) <= radius) & (abs(cols - col) <= radius) & \
        ~((abs(rows - row) <= guard) & (abs(cols - col) <= guard))
    return values[:, inside]


POSITIONS = [(0, 0), (3, 25), (15, 12), (29, 7)]


def test_local_contrast_matches_its_definition_at_borders_and_inside():
    rng = np.random.default_rng(2)
    values = rng.normal(0, 1, (1, 2, 30, 26)).astype(np.float32)
    result = local_contrast(torch.from_numpy(values)).numpy()
    assert result.shape == (1, 2 * len(CONTRAST_SCALES), 30, 26)
    for row, col in POSITIONS:
        for index, side in enumerate(CONTRAST_SCALES):
            centre = _window(values[0], row, col, (side - 1) // 2).mean(axis=1)
            ring = _window(values[0], row, col, 2 * side + 1, side)
            expected = (centre - ring.mean(axis=1)) / np.sqrt(ring.var(axis=1) + 0.02 ** 2)
            got = result[0, [index, len(CONTRAST_SCALES) + index], row, col]
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_local_rx_matches_its_definition_at_borders_and_inside():
    rng = np.random.default_rng(3)
    values = rng.normal(0, 1, (1, 4, 30, 26)).astype(np.float32)
    values[0, :, 15, 12] += 6  # an outlier: its distance must be large
    result = local_rx(torch.from_numpy(values)).numpy()[0, 0]
    for row, col in POSITIONS:
        ring = _window(values[0], row, col, OUTER_RADIUS, GUARD_RADIUS).astype(np.float64)
        deviation = values[0, :, row, col] - ring.mean(axis=1)
        covariance = np.cov(ring, bias=True) + RIDGE * np.eye(4)
        expected = np.sqrt(deviation @ np.linalg.solve(covariance, deviation))
        np.testing.assert_allclose(result[row, col], expected, rtol=1e-4)
    assert result[15, 12] > np.percentile(result, 99)


def test_evidence_channels_are_finite_on_flat_and_single_band_inputs():
    flat = torch.zeros(1, INPUT_CHANNELS, 24, 24)
    single = torch.zeros(1, INPUT_CHANNELS, 24, 24)
    single[:, 0] = torch.randn(24, 24)
    for inputs in (flat, single):
        channels = evidence_channels(inputs)
        assert channels.shape == (1, EVIDENCE_CHANNELS, 24, 24)
        assert torch.isfinite(channels).all()
    assert not evidence_channels(flat).any()


@pytest.mark.parametrize("size", [1, 3, 10, 25])
def test_evidence_is_zero_where_a_ring_is_empty_and_finite_everywhere(size):
    # windows larger than the raster leave some rings empty: no evidence there, no NaN
    inputs = torch.randn(1, INPUT_CHANNELS, size, size)
    channels = evidence_channels(inputs)
    assert torch.isfinite(channels).all()
    if size == 1:
        assert not channels.any()
