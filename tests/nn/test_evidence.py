"""The classic evidence channels: local contrast and dual-window local RX by definition."""

import numpy as np
import pytest
import torch

from anomaly_detector.model.nn.evidence import (CONTRAST_SCALES, EVIDENCE_CHANNELS, GUARD_RADIUS,
                                                OUTER_RADIUS, RIDGE, SPREAD_FLOOR, box_sum,
                                                doubling_box_sums, evidence_channels,
                                                local_contrast, local_rx, spread_floors,
                                                windowed_evidence)
from anomaly_detector.model.nn.features import INPUT_CHANNELS, LEADING_COMPONENTS


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


def test_doubling_box_sums_equal_the_separable_box_sums_at_borders_and_inside():
    values = torch.from_numpy(np.random.default_rng(4).normal(3, 2, (1, 4, 41, 37))
                              .astype(np.float32))
    padded = torch.nn.functional.pad(values, (15, 15, 15, 15))
    sums = doubling_box_sums(padded, 15)
    assert sorted(sums) == [1, 3, 7, 15]
    for radius, got in sums.items():
        np.testing.assert_allclose(got.numpy(), box_sum(values, radius).numpy(),
                                   rtol=1e-5, atol=1e-4)


WINDOWS = [(0, 60, 0, 52), (20, 44, 16, 40), (0, 12, 40, 52), (48, 60, 0, 8), (30, 31, 25, 26)]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("components", [1, 3])
def test_windowed_evidence_equals_the_evidence_of_the_whole_map_on_its_window(window,
                                                                               components):
    values = torch.from_numpy(np.random.default_rng(5).normal(0, 1.5, (1, INPUT_CHANNELS, 60, 52))
                              .astype(np.float32))
    y0, y1, x0, x1 = window
    expected = evidence_channels(values, components)[..., y0:y1, x0:x1]
    got = windowed_evidence(values, window, components)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)


def test_windowed_evidence_depends_only_on_the_pixels_around_each_pixel():
    # the tiles of a raster agree exactly where they overlap, whatever the tile
    values = torch.randn(1, INPUT_CHANNELS, 90, 80)
    whole = windowed_evidence(values, (0, 90, 0, 80))
    tile = windowed_evidence(values[:, :, 10:70, 5:80], (17, 43, 20, 75))
    assert torch.equal(tile, whole[..., 27:53, 25:80])
    assert windowed_evidence(torch.randn(1, INPUT_CHANNELS, 6, 5), (0, 6, 0, 5)).isfinite().all()


def _ridge(step: float) -> torch.Tensor:
    """Reduced channels of a flat plateau with a 3-pixel ridge ``step`` above it (rows
    18-20): an 8-bit sensor's smooth gradient, stored one grey level at a time."""
    values = torch.zeros(1, INPUT_CHANNELS, 40, 40)
    values[:, 0, 18:21] = step
    values[:, LEADING_COMPONENTS] = values[:, 0].abs()
    return values


def test_a_one_grey_level_ridge_on_a_flat_plateau_is_not_many_standard_deviations():
    step = 0.1  # one grey level along component 1, in whitened units
    fixed, floored = evidence_channels(_ridge(step)), evidence_channels(_ridge(step),
                                                                       grey_step=step)
    # on the ridge the ring barely varies: with the fixed floor the ridge reads as more
    # than two of its standard deviations (scale 3), with the grey level's as less than one
    assert torch.expm1(fixed[0, 1, 19, 20]) > 2
    assert 0.5 < torch.expm1(floored[0, 1, 19, 20]) < 1
    assert (floored.abs() <= fixed.abs() + 1e-6).all()
    # a raster without a grey level (float, or finer than the floor) keeps the fixed floors
    assert spread_floors(0.0) == (SPREAD_FLOOR, RIDGE) == spread_floors(SPREAD_FLOOR / 2)
    assert spread_floors(0.2) == (0.2, pytest.approx(0.04))


def test_windowed_evidence_uses_the_same_grey_level_floors():
    values = _ridge(0.1) + 0.05 * torch.randn(1, INPUT_CHANNELS, 40, 40)
    window = (8, 36, 4, 40)
    expected = evidence_channels(values, grey_step=0.3)[..., 8:36, 4:40]
    torch.testing.assert_close(windowed_evidence(values, window, grey_step=0.3), expected,
                               rtol=1e-4, atol=1e-4)


def test_floors_per_sample_equal_each_sample_floored_alone():
    values = torch.cat([_ridge(0.1), _ridge(0.3)]) + 0.01 * torch.randn(2, INPUT_CHANNELS, 40, 40)
    steps = torch.tensor([0.0, 0.3])
    together = evidence_channels(values, grey_step=steps)
    for i, step in enumerate(steps.tolist()):
        torch.testing.assert_close(together[i:i + 1],
                                   evidence_channels(values[i:i + 1], grey_step=step))
