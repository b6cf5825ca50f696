"""A faster CPU path for the networks' ``score`` with the same weights and result
(in float32; in bfloat16, where the CPU computes it natively, within its rounding)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..defaults import PRECISIONS
from .evidence import windowed_evidence
from .network import (CONV_RECEPTIVE_RADIUS, VIEW_FLIPS, Detector, DeviationEnsemble,
                      DeviationNet, flipped, members_of)

Window = tuple[int, int, int, int]  # rows [y0, y1), columns [x0, x1)

def native_bfloat16() -> bool:
    """True when this CPU computes bfloat16 dot products natively (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def precision_name(dtype: torch.dtype) -> str:
    """'bfloat16' or 'float32': the name of a convolution arithmetic."""
    return "bfloat16" if dtype == torch.bfloat16 else "float32"


def convolution_dtype(precision: str = "auto") -> torch.dtype:
    """The arithmetic of the fused path's convolutions for a ``precision`` setting: 'auto'
    is bfloat16 on CPUs that compute it natively (a faster forward pass, scores within
    about 0.01 of float32's: ``tools/precision.py``), else float32; 'float32' always float32;
    'bfloat16' bfloat16, refused where the CPU would only emulate it."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision '{precision}': use {', '.join(PRECISIONS)}.")
    if precision == "float32" or (precision == "auto" and not native_bfloat16()):
        return torch.float32
    if not native_bfloat16():
        raise ValueError("PRECISION is 'bfloat16' but this CPU has no native bfloat16 "
                         "arithmetic (AVX512-BF16 or AMX): choose 'auto' or 'float32'.")
    return torch.bfloat16


class _Conv(NamedTuple):
    """A convolution's parameters in the fused path's arithmetic."""
    weight: torch.Tensor
    bias: torch.Tensor | None
    padding: list[int]
    dilation: list[int]

    @classmethod
    def of(cls, conv: nn.Conv2d, dtype: torch.dtype, weight: torch.Tensor | None = None,
           bias: bool = True) -> "_Conv":
        weight = conv.weight if weight is None else weight
        with torch.no_grad():
            weight = weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
            bias = conv.bias.detach().to(dtype) if bias else None
        return cls(weight, bias, list(conv.padding), list(conv.dilation))


def _grow(window: Window, by: int, height: int, width: int) -> Window:
    y0, y1, x0, x1 = window
    return max(0, y0 - by), min(height, y1 + by), max(0, x0 - by), min(width, x1 + by)


def _coarser(window: Window, height: int, width: int) -> Window:
    """The window of a map at half the resolution (``height`` x ``width``) that a bilinear
    2x upsampling needs to give exact values on ``window``: its cover plus one pixel."""
    y0, y1, x0, x1 = window
    return _grow((y0 // 2, -(-y1 // 2), x0 // 2, -(-x1 // 2)), 1, height, width)


def _shift(window: Window, origin: Window, factor: int = 1) -> Window:
    """``window`` relative to the corner of ``origin`` (given at 1/``factor`` resolution)."""
    y, x = factor * origin[0], factor * origin[2]
    return window[0] - y, window[1] - y, window[2] - x, window[3] - x


def _crop(x: torch.Tensor, window: Window) -> torch.Tensor:
    return x[:, :, window[0]:window[1], window[2]:window[3]].contiguous(
        memory_format=torch.channels_last)


def _flipped_window(window: Window, axes: tuple[int, ...], height: int, width: int) -> Window:
    """``window`` of a ``height`` x ``width`` map in that map flipped along ``axes``."""
    y0, y1, x0, x1 = window
    if -2 in axes:
        y0, y1 = height - y1, height - y0
    if -1 in axes:
        x0, x1 = width - x1, width - x0
    return y0, y1, x0, x1


def _upsampled(x: torch.Tensor, window: Window, source: Window) -> torch.Tensor:
    """The bilinear 2x upsampling of ``x``, exact on ``window`` (at the finer resolution),
    computed from ``x``'s ``source`` window only (see :func:`_coarser`)."""
    up = F.interpolate(_crop(x, source), scale_factor=2, mode="bilinear", align_corners=False)
    return _crop(up, _shift(window, source, 2))


class _FusedNetwork:
    """One :class:`.network.DeviationNet`'s convolutions in the fused path: logits of its
    input channels on a window (see :class:`FusedScorer`)."""

    def __init__(self, model: DeviationNet, dtype: torch.dtype) -> None:
        self.op = torch.ops.mkldnn._convolution_pointwise
        self.add_op = torch.ops.mkldnn._convolution_pointwise.binary
        self.dtype = dtype
        self.fine = [_Conv.of(model.fine[i], dtype) for i in (0, 2)]
        self.middle = [_Conv.of(model.middle[i], dtype) for i in (0, 2)]
        self.coarse = [_Conv.of(model.coarse[i], dtype) for i in (0, 2, 4)]
        self.head = _Conv.of(model.head, torch.float32)
        width = model.fine[0].out_channels
        inputs = model.fine[0].in_channels
        # merge_middle sees cat([up(coarse), middle]); merge_fine cat([up(middle), fine, x])
        self.merge_middle = self._split(model.merge_middle[0], [model.coarse[4].out_channels,
                                                                model.middle[2].out_channels])
        self.merge_fine = self._split(model.merge_fine[0], [model.merge_middle[0].out_channels,
                                                            width, inputs])

    def _split(self, conv: nn.Conv2d, sizes: list[int]) -> list[_Conv]:
        """``conv`` as one convolution per input group; the last one carries the bias."""
        parts = torch.split(conv.weight, sizes, dim=1)
        return [_Conv.of(conv, self.dtype, part, bias=index == len(parts) - 1)
                for index, part in enumerate(parts)]

    def _conv(self, x: torch.Tensor, conv: _Conv, relu: bool = True) -> torch.Tensor:
        return self.op(x, conv.weight, conv.bias, conv.padding, [1, 1], conv.dilation, 1,
                       "relu" if relu else "none", [], "")

    def _merge(self, inputs: list[torch.Tensor], convs: list[_Conv]) -> torch.Tensor:
        acc = self._conv(inputs[-1], convs[-1], relu=False)
        for x, conv in zip(inputs[-2::-1], convs[-2::-1]):
            acc = self.add_op(x, acc, conv.weight, None, conv.padding, [1, 1], conv.dilation, 1,
                              "add", None, None, [], "")
        return torch.relu_(acc)

    def logits(self, x: torch.Tensor, window: Window) -> torch.Tensor:
        """Float32 logits (N, h, w) on ``window`` of the input channels ``x``."""
        conv = self._conv
        height, width = x.shape[-2:]
        fine = conv(conv(x, self.fine[0]), self.fine[1])
        middle = conv(conv(F.avg_pool2d(fine, 2), self.middle[0]), self.middle[1])
        coarse = F.avg_pool2d(middle, 2)
        for layer in self.coarse:
            coarse = conv(coarse, layer)
        # merge_fine's inputs one pixel around the window, merge_middle's around what that
        # needs, each upsampling from the coarser window that it needs
        fine_inputs = _grow(window, 1, height, width)
        merged = _coarser(fine_inputs, height // 2, width // 2)
        middle_inputs = _grow(merged, 1, height // 2, width // 2)
        coarse_needed = _coarser(middle_inputs, height // 4, width // 4)
        middle = self._merge([_upsampled(coarse, middle_inputs, coarse_needed),
                              _crop(middle, middle_inputs)], self.merge_middle)
        middle = _crop(middle, _shift(merged, middle_inputs))
        up = _upsampled(middle, _shift(fine_inputs, merged, 2),
                        (0, middle.shape[2], 0, middle.shape[3]))
        features = self._merge([up, _crop(fine, fine_inputs), _crop(x, fine_inputs)],
                               self.merge_fine)
        features = _crop(features, _shift(window, fine_inputs)).float()
        return conv(features, self.head, relu=False)[:, 0]


class FusedScorer:
    """``model.score`` computed with fewer passes over memory, same weights and result.

    Each convolution and its ReLU are one oneDNN call, and the two merge convolutions
    over concatenated maps are split by input group and accumulated in place
    (``conv(cat[a, b]) = conv_a(a) + conv_b(b)``), so the concatenated maps are never
    written. The output equals ``model.score`` up to float rounding (max difference
    ~2e-7; tests/nn/test_fused.py checks it). A model of another layout, another device or
    a missing operator falls back to the module. Measured on 2 cores: about a third
    less CPU time per pixel. An ensemble's members and a model's views share the input
    and evidence channels; the score is the sigmoid of the mean logit over members and
    views.

    Given a ``window`` (the tile's core, whose scores are kept), each layer is computed
    only where it reaches the window: the convolutions on the window plus their
    receptive radius, the two merges and the head on the window plus their own few
    pixels. Inside the window the scores are exactly those of the whole tile; outside
    they are NaN.

    With ``dtype`` bfloat16 (see :func:`convolution_dtype`) the convolutions, poolings and
    upsamplings run in bfloat16; the evidence channels, the head and the sigmoid stay
    float32. Each score still depends only on the pixels around it, so tiles agree
    exactly where they overlap.
    """

    def __init__(self, model: Detector, dtype: torch.dtype = torch.float32) -> None:
        self.dtype = dtype
        self.evidence, self.local_rx_components = model.evidence, model.local_rx_components
        self.networks = [_FusedNetwork(member, dtype) for member in members_of(model)]
        self.view_flips = VIEW_FLIPS[:model.views]

    def __call__(self, x: torch.Tensor, window: Window | None = None, grey_step: float = 0.0
                 ) -> torch.Tensor:
        """Scores (N, H, W) of (N, C, H, W) reduced channels (H, W multiples of 4), on
        ``window`` (multiples of 4 from the tile's corner, or the whole tile if None);
        ``grey_step`` as ``model.score`` reads it."""
        height, width = x.shape[-2:]
        if window is None:
            window = (0, height, 0, width)
        # the convolutions are exact on the window when they run on ``area``
        area = _grow(window, CONV_RECEPTIVE_RADIUS, height, width)
        inputs, core = self._inputs(x, area, grey_step).to(self.dtype), _shift(window, area)
        logits = []
        for axes in self.view_flips:  # each view's inputs flipped once for every member
            view = flipped(inputs, axes)  # torch.flip keeps the channels-last layout
            view_core = _flipped_window(core, axes, *inputs.shape[-2:])
            logits += [flipped(network.logits(view, view_core), axes) for network in self.networks]
        scores = torch.sigmoid(logits[0] if len(logits) == 1 else torch.stack(logits).mean(dim=0))
        if scores.shape[-2:] == (height, width):
            return scores
        out = scores.new_full((x.shape[0], height, width), float("nan"))
        out[:, window[0]:window[1], window[2]:window[3]] = scores
        return out

    def _inputs(self, x: torch.Tensor, area: Window, grey_step: float) -> torch.Tensor:
        """The network's input channels on ``area``: the reduced channels and, when the model
        has them, the evidence channels computed there alone (from the pixels around it)."""
        if not self.evidence:
            return _crop(x, area)
        evidence = windowed_evidence(x, area, self.local_rx_components, grey_step)
        channels = x.shape[1]
        inputs = torch.empty((x.shape[0], channels + evidence.shape[1], *evidence.shape[-2:]),
                             dtype=x.dtype, device=x.device,
                             memory_format=torch.channels_last)  # one copy, not a cat's two
        inputs[:, :channels] = x[:, :, area[0]:area[1], area[2]:area[3]]
        inputs[:, channels:] = evidence
        return inputs

    @staticmethod
    def matches(model: Detector) -> bool:
        """True when ``model`` (or every member of an ensemble) has exactly the layout this
        path reproduces (checked from its structure, not by running it: a probe would cost
        a third of a second per raster)."""
        if type(model) is DeviationEnsemble:
            return all(FusedScorer._matches_network(member) for member in model.members)
        return FusedScorer._matches_network(model)

    @staticmethod
    def _matches_network(model: DeviationNet) -> bool:
        if type(model).forward is not DeviationNet.forward or \
                type(model).score is not DeviationNet.score:
            return False
        layout = {"fine": 2, "middle": 2, "coarse": 3, "merge_middle": 1, "merge_fine": 1}
        for name, convs in layout.items():
            layers = list(getattr(model, name, []))
            if len(layers) != 2 * convs or not all(
                    isinstance(layers[i], nn.Conv2d) and isinstance(layers[i + 1], nn.ReLU)
                    for i in range(0, len(layers), 2)):
                return False
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if any(c.groups != 1 or c.stride != (1, 1) or c.padding_mode != "zeros" or c.bias is None
               for c in convs) or not isinstance(model.head, nn.Conv2d):
            return False
        return (model.merge_middle[0].in_channels
                == model.coarse[4].out_channels + model.middle[2].out_channels
                and model.merge_fine[0].in_channels == model.merge_middle[0].out_channels
                + model.fine[2].out_channels + model.fine[0].in_channels)

    @classmethod
    def build(cls, model: Detector, device: str, precision: str = "float32"):
        """The fused path when it applies to ``model`` on ``device``, else None (use the
        module); ``precision`` as :func:`convolution_dtype` reads it."""
        dtype = convolution_dtype(precision)
        if device != "cpu" or not hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
            return None
        try:
            return cls(model, dtype) if cls.matches(model) else None
        except Exception:  # noqa: BLE001 - an unexpected layout or operator: use the module
            return None
