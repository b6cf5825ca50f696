"""The compact deviation-scoring network.

A small three-scale encoder-decoder over the fixed input channels of
:mod:`.features` and their local contrast (a fixed, parameter-free filter: value
minus local mean over local standard deviation, 21 x 21 window): full resolution for the pixel and its immediate neighbours, 1/2 and
1/4 resolution (with dilated convolutions) for the surroundings it is compared with.
Skip connections bring the fine detail back; a 1x1 head turns the last feature map
into a per-pixel logit, and ``sigmoid(logit)`` is the deviation score in [0, 1].

There is deliberately no normalisation layer: instance or batch statistics would be
computed per tile and show as seams. Inputs are already normalised once per raster.
Tiles must have sides that are multiples of ``SIZE_MULTIPLE`` and start at offsets
that are multiples of it, so the pooling grid is the same in every tile.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .features import INPUT_CHANNELS

SIZE_MULTIPLE = 4
CONTRAST_RADIUS = 10
# Pixels of context on each side that influence a score (tested): 44 from the
# convolutions and pooling, plus the local-contrast window.
RECEPTIVE_RADIUS = 44 + CONTRAST_RADIUS


def _box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)^2 window around each pixel, the window clipped at the
    tile edge: two depthwise box convolutions (fast in channels-last layout)."""
    channels, height, width = x.shape[1:]
    size = 2 * radius + 1
    ones = x.new_ones(channels, 1, size, 1)
    total = F.conv2d(x, ones, padding=(radius, 0), groups=channels)
    total = F.conv2d(total, ones.transpose(2, 3), padding=(0, radius), groups=channels)

    def count(n: int) -> torch.Tensor:
        index = torch.arange(n, device=x.device, dtype=x.dtype)
        return (index + radius).clamp(max=n - 1) - (index - radius).clamp(min=0) + 1

    return total / (count(height)[:, None] * count(width)[None, :])


def local_contrast(x: torch.Tensor, radius: int, floor: float = 0.05) -> torch.Tensor:
    """(x - local mean) / local standard deviation over a (2r+1)^2 window around each
    pixel (windows clipped at the tile edge); ``floor`` keeps flat areas from
    amplifying noise. A fixed function of the neighbourhood, so tiling stays exact."""
    mean = _box_mean(x, radius)
    variance = (_box_mean(x * x, radius) - mean * mean).clamp_min(0)
    return (x - mean) / torch.sqrt(variance + floor * floor)


def _conv(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)


class DeviationNet(nn.Module):
    """Per-pixel deviation scorer. ``forward`` returns (logits, last features)."""

    def __init__(self, in_channels: int = INPUT_CHANNELS, width: int = 16,
                 contrast_radius: int = CONTRAST_RADIUS) -> None:
        super().__init__()
        w1, w2, w3 = width, 2 * width, 3 * width
        self.config = {"in_channels": in_channels, "width": width,
                       "contrast_radius": contrast_radius}
        self.contrast_radius = contrast_radius
        if contrast_radius:
            in_channels *= 2
        self.fine = nn.Sequential(_conv(in_channels, w1), nn.ReLU(inplace=True),
                                  _conv(w1, w1), nn.ReLU(inplace=True))
        self.middle = nn.Sequential(_conv(w1, w2), nn.ReLU(inplace=True),
                                    _conv(w2, w2, 2), nn.ReLU(inplace=True))
        self.coarse = nn.Sequential(_conv(w2, w3), nn.ReLU(inplace=True),
                                    _conv(w3, w3, 2), nn.ReLU(inplace=True),
                                    _conv(w3, w3, 4), nn.ReLU(inplace=True))
        self.merge_middle = nn.Sequential(_conv(w3 + w2, w2), nn.ReLU(inplace=True))
        self.merge_fine = nn.Sequential(_conv(w2 + w1 + in_channels, w1), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(w1, 1, 1)

    def expand_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The input channels, followed by their local contrast when configured."""
        if not self.contrast_radius:
            return x
        return torch.cat([x, local_contrast(x, self.contrast_radius)], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.expand_inputs(x)
        fine = self.fine(x)
        middle = self.middle(F.avg_pool2d(fine, 2))
        coarse = self.coarse(F.avg_pool2d(middle, 2))
        up = F.interpolate(coarse, size=middle.shape[-2:], mode="bilinear", align_corners=False)
        middle = self.merge_middle(torch.cat([up, middle], dim=1))
        up = F.interpolate(middle, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        features = self.merge_fine(torch.cat([up, fine, x], dim=1))
        return self.head(features)[:, 0], features

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Deviation score in [0, 1], shape (N, H, W)."""
        return torch.sigmoid(self.forward(x)[0])


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
