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

Both filters divide by a local spread, floored so that flat areas do not explode. On a
raster of integer bands the floor is at least one grey level (``grey_step``: the change
of component 1, in whitened units, when every band rises by one grey level), so that a
one-level step between flat plateaus, which the sensor cannot resolve finer, is not
read as many standard deviations. Training uses the fixed floors (``grey_step`` 0).

The network then learns when to trust which evidence, and can at worst copy the best.
All channels are compressed by ``sign(x) * log(1 + |x|)`` like the reduced channels.
:func:`evidence_channels` is the definition (training and the module's forward pass);
:func:`windowed_evidence` computes the same channels on part of a tile, faster, for the
fused inference path of :mod:`.fused`.
"""
from __future__ import annotations

import functools

import torch
from torch.nn import functional as F

from .features import INPUT_CHANNELS, LEADING_COMPONENTS

CONTRAST_SCALES = (1, 3, 7)           # centre box sides
CONTRAST_SOURCES = (0, LEADING_COMPONENTS)  # component 1 and the global RX distance
GUARD_RADIUS, OUTER_RADIUS = 3, 10    # local RX: 7 x 7 guard, 21 x 21 outer window
LOCAL_RX_COMPONENTS = 3               # leading components that local RX compares (4 before v4)
RIDGE = 0.01                           # added to the local covariance (reduced units)
SPREAD_FLOOR = 0.02                    # least local contrast spread (reduced units)

EVIDENCE_CHANNELS = len(CONTRAST_SCALES) * len(CONTRAST_SOURCES) + 1
EVIDENCE_RADIUS = max(max(2 * s + 1 for s in CONTRAST_SCALES), OUTER_RADIUS)
# what windowed_evidence's shortcuts rely on: contrast radii 1, 3, 7, 15 (each window twice
# the last plus its centre) and an outer window three guard windows wide
assert CONTRAST_SCALES == (1, 3, 7)
assert 2 * OUTER_RADIUS + 1 == 3 * (2 * GUARD_RADIUS + 1)


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


@functools.lru_cache(maxsize=32)  # a raster's tiles: up to 4 shapes, 7 windows or rings each
def _window_weights(height: int, width: int, inner: int, outer: int, dtype: torch.dtype,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(1 / pixels in each window or ring, where the ring holds any pixel or None if
    everywhere): a tile shape's factors, computed once. ``inner`` -1 is the window of
    radius ``outer`` itself; a ring is empty where the raster is smaller than the inner
    window. Normal tensors even under inference mode, so that autograd may use them."""
    with torch.inference_mode(False):
        like = torch.empty(0, dtype=dtype, device=device)
        count = window_count(height, width, outer, like)
        if inner >= 0:
            count = count - window_count(height, width, inner, like)
        present = count > 0
        return count.clamp_min(1).reciprocal(), None if bool(present.all()) else present


Frame = tuple[int, int, tuple[int, int, int, int]]
"""(height, width, window): sums on ``window`` (rows y0:y1, columns x0:x1) of a tile of
that size, whose windows are clipped at the tile's edge."""


def _average(total: torch.Tensor, inner: int, outer: int, frame: Frame | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``total`` (sums over the window of radius ``outer``, ``inner`` -1, or over the ring
    between two windows, inner < outer radius) divided by the pixels there, and where the
    ring holds any pixel (None if everywhere; the evidence elsewhere is 0). ``total`` covers
    the whole tile, or ``frame``'s window of it."""
    if inner < 0 and outer == 0:  # a window of one pixel: the pixels themselves
        return total, None
    height, width, (y0, y1, x0, x1) = frame or (*total.shape[-2:], (0, None, 0, None))
    weights, present = _window_weights(height, width, inner, outer, total.dtype, total.device)
    if frame is not None:
        weights = weights[..., y0:y1, x0:x1]
        present = None if present is None else present[..., y0:y1, x0:x1]
    return total.contiguous() * weights, present


def _where(present: torch.Tensor | None, evidence: torch.Tensor) -> torch.Tensor:
    return evidence if present is None else torch.where(present, evidence, 0.0)


def _moments(x: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """(N, C + len(pairs), H, W) in channels-last layout (as :func:`box_sum` reads it):
    the channels of ``x``, then the product of each pair of them, each written in place
    (not a stack of channels-first maps transposed at once: several times slower)."""
    n, channels, height, width = x.shape
    moments = x.new_empty((n, height, width, channels + len(pairs))).permute(0, 3, 1, 2)
    moments[:, :channels] = x
    for index, (i, j) in enumerate(pairs):
        moments[:, channels + index] = x[:, i] * x[:, j]
    return moments


def _compress(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``."""
    return x.abs().log1p_().copysign_(x)


Floor = float | torch.Tensor
"""A floor for the whole batch, or one per sample ((N, 1, 1, 1): training crops)."""


def spread_floors(grey_step: float | torch.Tensor = 0.0) -> tuple[Floor, Floor]:
    """(local contrast's least spread, local RX's ridge) for a raster whose grey level is
    ``grey_step`` along component 1 (0: float data), or for each sample of a batch
    (``grey_step`` of shape (N,))."""
    if isinstance(grey_step, torch.Tensor):
        step = grey_step.reshape(-1, 1, 1, 1)
        return step.clamp_min(SPREAD_FLOOR), (step * step).clamp_min(RIDGE)
    return max(SPREAD_FLOOR, grey_step), max(RIDGE, grey_step ** 2)


def local_contrast(x: torch.Tensor, floor: Floor = SPREAD_FLOOR) -> torch.Tensor:
    """(N, C, H, W) -> (N, C * len(CONTRAST_SCALES), H, W): signed multi-scale local
    contrast of each channel (channel-major), the ring's spread at least ``floor``."""
    channels = x.shape[1]
    moments = _moments(x, [(c, c) for c in range(channels)])
    radii = {r for side in CONTRAST_SCALES for r in ((side - 1) // 2, side, 2 * side + 1)}
    return _contrast({r: box_sum(moments, r) for r in radii}, channels, floor)


def _contrast(sums: dict[int, torch.Tensor], channels: int, floor: Floor,
              frame: Frame | None = None) -> torch.Tensor:
    """:func:`local_contrast` from the box sums (by radius) of the channels and of their
    squares."""
    outputs = []
    for side in CONTRAST_SCALES:
        centre_radius = (side - 1) // 2
        centre = _average(sums[centre_radius][:, :channels], -1, centre_radius, frame)[0]
        ring, present = _average(sums[2 * side + 1] - sums[side], side, 2 * side + 1, frame)
        mean, variance = ring[:, :channels], (ring[:, channels:] - ring[:, :channels] ** 2)
        contrast = (centre - mean) / torch.sqrt(variance.clamp_min(0) + floor ** 2)
        outputs.append(_where(present, contrast))
    return torch.stack(outputs, dim=2).flatten(1, 2)


def _local_rx_pairs(k: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(k) for j in range(i + 1)]


def local_rx(x: torch.Tensor, ridge: Floor = RIDGE) -> torch.Tensor:
    """(N, K, H, W) -> (N, 1, H, W): dual-window local RX distance (square root) of the
    K channels under the ring's covariance plus ``ridge``, by a closed-form Cholesky
    factorisation per pixel."""
    moments = _moments(x, _local_rx_pairs(x.shape[1]))
    return _local_rx(x, box_sum(moments, OUTER_RADIUS) - box_sum(moments, GUARD_RADIUS), ridge)


def _local_rx(x: torch.Tensor, ring_sums: torch.Tensor, ridge: Floor,
              frame: Frame | None = None) -> torch.Tensor:
    """:func:`local_rx` of the pixels ``x`` from the ring sums of their moments."""
    if isinstance(ridge, torch.Tensor):  # one per sample, against (N, H, W) maps
        ridge = ridge.reshape(-1, 1, 1)
    k = x.shape[1]
    pairs = _local_rx_pairs(k)
    ring, present = _average(ring_sums, GUARD_RADIUS, OUTER_RADIUS, frame)
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
        diagonal, value = covariance[i, i] + ridge, deviation[:, i]
        for m in range(i):
            diagonal = diagonal - lower[i, m] ** 2
            value = value - lower[i, m] * solved[m]
        lower[i, i] = torch.sqrt(torch.clamp(diagonal, min=ridge))
        solved.append(value / lower[i, i])
    return _where(present, torch.sqrt(sum(v * v for v in solved))[:, None])


def _check(x: torch.Tensor, local_rx_components: int) -> None:
    if x.shape[1] != INPUT_CHANNELS:
        raise ValueError(f"expected {INPUT_CHANNELS} reduced channels, got {x.shape[1]}")
    if not 1 <= local_rx_components <= LEADING_COMPONENTS:
        raise ValueError(f"local RX needs 1 to {LEADING_COMPONENTS} components, "
                         f"got {local_rx_components}")


def evidence_channels(x: torch.Tensor, local_rx_components: int = LOCAL_RX_COMPONENTS,
                      grey_step: float | torch.Tensor = 0.0) -> torch.Tensor:
    """(N, INPUT_CHANNELS, H, W) reduced channels -> (N, EVIDENCE_CHANNELS, H, W); local
    RX compares the ``local_rx_components`` leading components; ``grey_step`` as
    :func:`spread_floors` reads it."""
    _check(x, local_rx_components)
    floor, ridge = spread_floors(grey_step)
    contrast = local_contrast(x[:, list(CONTRAST_SOURCES)], floor)
    rx = local_rx(x[:, :local_rx_components], ridge)
    return _compress(torch.cat([contrast, rx], dim=1))


def _pairs(x: torch.Tensor, shift: int, dim: int) -> torch.Tensor:
    """``x[i - shift] + x[i + shift]`` along ``dim``, for the i that have both (the map
    loses ``shift`` pixels at each end)."""
    length = x.shape[dim] - 2 * shift
    return x.narrow(dim, 0, length) + x.narrow(dim, 2 * shift, length)


def _inset(x: torch.Tensor, by: int, dims: tuple[int, ...] = (-2, -1)) -> torch.Tensor:
    """``x`` without ``by`` pixels at each end of ``dims``."""
    for dim in dims:
        x = x.narrow(dim, by, x.shape[dim] - 2 * by)
    return x


def doubling_box_sums(padded: torch.Tensor, top: int) -> dict[int, torch.Tensor]:
    """Box sums over the (2r+1)² windows, r = 1, 3, 7, … up to ``top`` (2^k - 1), of the
    map that ``padded`` holds with ``top`` pixels (real or zero) around it, by doubling: a
    window of side 2w + 1 is its centre pixel, its row and its column of side-w windows
    ``(w + 1)/2`` away on each side (the 1-D sums of the last step) and four side-w
    windows at its corners. Each step is nine shifted additions of whole maps, whatever
    the radius, where :func:`box_sum`'s separable convolutions take 2(2r + 1)
    multiply-adds per pixel; the sums agree to float rounding."""
    rows = columns = boxes = padded
    margin, radius, sums = top, 0, {}
    while radius < top:
        shift = radius + 1
        margin -= shift
        centre = _inset(padded, top - margin)
        rows = _inset(_pairs(rows, shift, -1), shift, (-2,)) + centre
        columns = _inset(_pairs(columns, shift, -2), shift, (-1,)) + centre
        boxes = _pairs(_pairs(boxes, shift, -1), shift, -2) + rows + columns - centre
        radius = 2 * radius + 1
        sums[radius] = _inset(boxes, margin)
    return sums


def _ring_sums(moments: torch.Tensor) -> torch.Tensor:
    """Sums over local RX's ring of ``moments`` that hold :data:`OUTER_RADIUS` pixels
    (real or zero) around the map: the guard window's sums (:func:`box_sum`), and the
    outer window as the 3 x 3 guard windows that tile it."""
    guard = box_sum(moments, GUARD_RADIUS)
    shift = 2 * GUARD_RADIUS + 1
    outer = _pairs(guard, shift, -1) + _inset(guard, shift, (-1,))
    outer = _pairs(outer, shift, -2) + _inset(outer, shift, (-2,))
    return _inset(outer, OUTER_RADIUS - shift) - _inset(guard, OUTER_RADIUS)


def _around(x: torch.Tensor, window: tuple[int, int, int, int], margin: int) -> torch.Tensor:
    """``window`` of ``x`` and ``margin`` pixels around it: x's own where it has them,
    zeros beyond its edge (where the windows of the whole map are clipped)."""
    y0, y1, x0, x1 = window
    height, width = x.shape[-2:]
    part = x[..., max(0, y0 - margin):min(height, y1 + margin),
             max(0, x0 - margin):min(width, x1 + margin)]
    return F.pad(part, (max(0, margin - x0), max(0, x1 + margin - width),
                        max(0, margin - y0), max(0, y1 + margin - height)))


def windowed_evidence(x: torch.Tensor, window: tuple[int, int, int, int],
                      local_rx_components: int = LOCAL_RX_COMPONENTS, grey_step: float = 0.0
                      ) -> torch.Tensor:
    """``evidence_channels(x)`` on ``window`` (rows y0:y1, columns x0:x1 of x) alone, from
    x's pixels within :data:`EVIDENCE_RADIUS` of it: equal up to float rounding (tested),
    and faster (``tools/evidence_speed.py``): nothing is computed outside the window, and
    the window sums come from :func:`doubling_box_sums` and :func:`_ring_sums`. Every sum
    at a pixel depends only on the pixels around it, so tiles still agree exactly where
    they overlap. Training keeps :func:`evidence_channels`, so that ``make train``
    reproduces the shipped weights bit for bit."""
    _check(x, local_rx_components)
    floor, ridge = spread_floors(grey_step)
    y0, y1, x0, x1 = window
    frame = (*x.shape[-2:], window)
    top = 2 * max(CONTRAST_SCALES) + 1
    padded = _around(x, window, top)  # every window's pixels, read once
    sources = padded[:, list(CONTRAST_SOURCES)]
    channels = sources.shape[1]
    # channels-first, not _moments' channels-last (made for the convolutions of box_sum):
    # the doubling's shifted additions then run along contiguous rows
    moments = torch.cat([sources, sources * sources], dim=1)
    contrast = _contrast({0: _inset(moments, top), **doubling_box_sums(moments, top)},
                         channels, floor, frame)
    components = _inset(padded[:, :local_rx_components], top - OUTER_RADIUS)
    rx = _local_rx(x[:, :local_rx_components, y0:y1, x0:x1],
                   _ring_sums(_moments(components, _local_rx_pairs(local_rx_components))),
                   ridge, frame)
    return _compress(torch.cat([contrast, rx], dim=1))
