"""Classic anomaly evidence as extra input channels of the network.

Fixed, parameter-free functions of a pixel's neighbourhood, computed inside each tile
from the reduced channels of :mod:`.features` (windows clipped at the tile edge, which
is the raster's edge or lies beyond the tile margin, so tiling stays exact):

* multi-scale local contrast (the analyst's local-contrast filter): for a centre box of
  side ``s``, ``(centre mean - surround mean) / surround std`` where the surround is
  the ring between the boxes of side ``2s + 1`` and ``4s + 3``; signed, one channel per
  scale, on component 1 (brightness) and on the global RX distance channel;
* dual-window local RX: the Mahalanobis distance of the leading components of a pixel
  to the ring between a guard window and an outer window, under the ring's own
  covariance (plus a ridge).

The network then learns when to trust which evidence, and can at worst copy the best.
All channels are compressed by ``sign(x) * log(1 + |x|)`` like the reduced channels.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .features import INPUT_CHANNELS, LEADING_COMPONENTS

CONTRAST_SCALES = (1, 3, 7)           # centre box sides
CONTRAST_SOURCES = (0, LEADING_COMPONENTS)  # component 1 and the global RX distance
GUARD_RADIUS, OUTER_RADIUS = 3, 10    # local RX: 7 x 7 guard, 21 x 21 outer window
LOCAL_RX_COMPONENTS = 3               # leading components that local RX compares (4 before v4)
RIDGE = 0.01                           # added to the local covariance (reduced units)
_STD_FLOOR = 0.02                      # keeps flat (quantised) areas from exploding

EVIDENCE_CHANNELS = len(CONTRAST_SCALES) * len(CONTRAST_SOURCES) + 1
EVIDENCE_RADIUS = max(max(2 * s + 1 for s in CONTRAST_SCALES), OUTER_RADIUS)


def box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Sum over the (2r+1)^2 window around each pixel, clipped at the edge: two
    depthwise convolutions with zero padding (fastest in channels-last layout)."""
    if radius == 0:
        return x
    channels, size = x.shape[1], 2 * radius + 1
    ones = x.new_ones(channels, 1, size, 1)
    x = x.contiguous(memory_format=torch.channels_last)
    x = F.conv2d(x, ones, padding=(radius, 0), groups=channels)
    return F.conv2d(x, ones.transpose(2, 3), padding=(0, radius), groups=channels)


def window_count(height: int, width: int, radius: int, like: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W): pixels in each clipped (2r+1)^2 window."""
    def count(n: int) -> torch.Tensor:
        index = torch.arange(n, device=like.device, dtype=like.dtype)
        return (index + radius).clamp(max=n - 1) - (index - radius).clamp(min=0) + 1
    return (count(height)[:, None] * count(width)[None, :])[None, None]


def _ring(x: torch.Tensor, sums: dict[int, torch.Tensor], inner: int, outer: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of the channels over the ring between two windows (inner < outer radius),
    and where the ring holds any pixel (it is empty where the raster is smaller than
    the inner window; the evidence there is 0)."""
    height, width = x.shape[-2:]
    count = window_count(height, width, outer, x) - window_count(height, width, inner, x)
    return (sums[outer] - sums[inner]).contiguous() * count.clamp_min(1).reciprocal(), count > 0


def _compress(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def local_contrast(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C * len(CONTRAST_SCALES), H, W): signed multi-scale local
    contrast of each channel (channel-major)."""
    channels, (height, width) = x.shape[1], x.shape[-2:]
    # channels-last once, not in every box sum
    moments = torch.cat([x, x * x], dim=1).contiguous(memory_format=torch.channels_last)
    radii = {r for side in CONTRAST_SCALES for r in ((side - 1) // 2, side, 2 * side + 1)}
    sums = {r: box_sum(moments, r) for r in radii}
    outputs = []
    for side in CONTRAST_SCALES:
        centre_radius = (side - 1) // 2
        centre = sums[centre_radius][:, :channels].contiguous() * \
            window_count(height, width, centre_radius, x).reciprocal()
        ring, present = _ring(x, sums, side, 2 * side + 1)
        mean, variance = ring[:, :channels], (ring[:, channels:] - ring[:, :channels] ** 2)
        contrast = (centre - mean) / torch.sqrt(variance.clamp_min(0) + _STD_FLOOR ** 2)
        outputs.append(torch.where(present, contrast, 0.0))
    return torch.stack(outputs, dim=2).flatten(1, 2)


def local_rx(x: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) -> (N, 1, H, W): dual-window local RX distance (square root) of the
    K channels, by a closed-form Cholesky factorisation per pixel."""
    k = x.shape[1]
    x = x.contiguous()
    pairs = [(i, j) for i in range(k) for j in range(i + 1)]
    products = torch.stack([x[:, i] * x[:, j] for i, j in pairs], dim=1)
    moments = torch.cat([x, products], dim=1).contiguous(memory_format=torch.channels_last)
    ring, present = _ring(x, {r: box_sum(moments, r) for r in (GUARD_RADIUS, OUTER_RADIUS)},
                          GUARD_RADIUS, OUTER_RADIUS)
    mean = ring[:, :k]
    covariance = {pair: ring[:, k + index] - mean[:, pair[0]] * mean[:, pair[1]]
                  for index, pair in enumerate(pairs)}
    deviation = x - mean
    # covariance + ridge = L L^T; distance^2 = |L^-1 d|^2 by forward substitution
    lower: dict[tuple[int, int], torch.Tensor] = {}
    solved: list[torch.Tensor] = []
    for i in range(k):
        for j in range(i):
            value = covariance[i, j]
            for m in range(j):
                value = value - lower[i, m] * lower[j, m]
            lower[i, j] = value / lower[j, j]
        diagonal, value = covariance[i, i] + RIDGE, deviation[:, i]
        for m in range(i):
            diagonal = diagonal - lower[i, m] ** 2
            value = value - lower[i, m] * solved[m]
        lower[i, i] = torch.sqrt(diagonal.clamp_min(RIDGE))
        solved.append(value / lower[i, i])
    return torch.where(present, torch.sqrt(sum(v * v for v in solved))[:, None], 0.0)


def evidence_channels(x: torch.Tensor, local_rx_components: int = LOCAL_RX_COMPONENTS
                      ) -> torch.Tensor:
    """(N, INPUT_CHANNELS, H, W) reduced channels -> (N, EVIDENCE_CHANNELS, H, W); local
    RX compares the ``local_rx_components`` leading components."""
    if x.shape[1] != INPUT_CHANNELS:
        raise ValueError(f"expected {INPUT_CHANNELS} reduced channels, got {x.shape[1]}")
    if not 1 <= local_rx_components <= LEADING_COMPONENTS:
        raise ValueError(f"local RX needs 1 to {LEADING_COMPONENTS} components, "
                         f"got {local_rx_components}")
    contrast = local_contrast(x[:, list(CONTRAST_SOURCES)])
    rx = local_rx(x[:, :local_rx_components])
    return _compress(torch.cat([contrast, rx], dim=1))
