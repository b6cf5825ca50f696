"""The classic evidence channels: local contrast and dual-window local RX by definition."""

import numpy as np
import pytest
import torch

from anomaly_detector.model.nn.evidence import (CONTRAST_SCALES, EVIDENCE_CHANNELS, GUARD_RADIUS,
                                                OUTER_RADIUS, RIDGE, evidence_channels,
                                                local_contrast, local_rx)
from anomaly_detector.model.nn.features import INPUT_CHANNELS


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
