"""The compact deviation-scoring network.

A small three-scale encoder-decoder over the fixed input channels of
:mod:`.features` (optionally followed by the classic evidence channels of
:mod:`.evidence`: multi-scale local contrast and dual-window local RX): full
resolution for the pixel and its immediate neighbours, 1/2 and 1/4 resolution (with
dilated convolutions) for the surroundings it is compared with.
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

from .evidence import EVIDENCE_CHANNELS, EVIDENCE_RADIUS, LOCAL_RX_COMPONENTS, evidence_channels
from .features import INPUT_CHANNELS

SIZE_MULTIPLE = 4
# Pixels of context on each side that influence a score through the convolutions and
# pooling (tested); the evidence channels, when used, add their window radius.
CONV_RECEPTIVE_RADIUS = 44


def _conv(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)


class DeviationNet(nn.Module):
    """Per-pixel deviation scorer. ``forward`` returns (logits, last features)."""

    def __init__(self, in_channels: int = INPUT_CHANNELS, width: int = 16,
                 evidence: bool = False,
                 local_rx_components: int = LOCAL_RX_COMPONENTS) -> None:
        super().__init__()
        w1, w2, w3 = width, 2 * width, 3 * width
        self.config = {"in_channels": in_channels, "width": width, "evidence": evidence}
        if evidence:
            self.config["local_rx_components"] = local_rx_components
        self.evidence, self.local_rx_components = evidence, local_rx_components
        if evidence:
            in_channels += EVIDENCE_CHANNELS
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

    @property
    def receptive_radius(self) -> int:
        """Pixels of context on each side of a pixel that influence its score."""
        return CONV_RECEPTIVE_RADIUS + (EVIDENCE_RADIUS if self.evidence else 0)

    def expand_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The input channels, followed by the classic evidence channels when configured."""
        if not self.evidence:
            return x
        return torch.cat([x, evidence_channels(x, self.local_rx_components)], dim=1)

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


class FusedScorer:
    """``DeviationNet.score`` computed with fewer passes over memory, same weights and result.

    Each convolution and its ReLU are one oneDNN call, and the two merge convolutions
    over concatenated maps are split by input group and accumulated in place
    (``conv(cat[a, b]) = conv_a(a) + conv_b(b)``), so the concatenated maps are never
    written. The output equals ``model.score`` up to float rounding (max difference
    ~2e-7; tests/test_scale.py checks it). A model of another layout, another device or
    a missing operator falls back to the module. Measured on 2 cores: about a third
    less CPU time per pixel.
    """

    def __init__(self, model: DeviationNet) -> None:
        self.op = torch.ops.mkldnn._convolution_pointwise
        self.add_op = torch.ops.mkldnn._convolution_pointwise.binary
        self.fine = [model.fine[0], model.fine[2]]
        self.middle = [model.middle[0], model.middle[2]]
        self.coarse = [model.coarse[0], model.coarse[2], model.coarse[4]]
        self.head = model.head
        self.expand_inputs = model.expand_inputs
        width = model.fine[0].out_channels
        inputs = model.fine[0].in_channels
        # merge_middle sees cat([up(coarse), middle]); merge_fine cat([up(middle), fine, x])
        self.merge_middle = self._split(model.merge_middle[0], [model.coarse[4].out_channels,
                                                                model.middle[2].out_channels])
        self.merge_fine = self._split(model.merge_fine[0], [model.merge_middle[0].out_channels,
                                                            width, inputs])

    @staticmethod
    def _split(conv: torch.nn.Conv2d, sizes: list[int]):
        with torch.no_grad():
            weights = [w.detach().contiguous(memory_format=torch.channels_last)
                       for w in torch.split(conv.weight, sizes, dim=1)]
        return conv, weights

    def _conv(self, x: torch.Tensor, conv: torch.nn.Conv2d, relu: bool = True) -> torch.Tensor:
        return self.op(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation,
                       conv.groups, "relu" if relu else "none", [], "")

    def _merge(self, inputs: list[torch.Tensor], merge) -> torch.Tensor:
        conv, weights = merge
        acc = self.op(inputs[-1], weights[-1], conv.bias, conv.padding, conv.stride,
                      conv.dilation, 1, "none", [], "")
        for x, weight in zip(inputs[-2::-1], weights[-2::-1]):
            acc = self.add_op(x, acc, weight, None, conv.padding, conv.stride, conv.dilation, 1,
                              "add", None, None, [], "")
        return torch.relu_(acc)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv = self._conv
        x = self.expand_inputs(x)
        fine = conv(conv(x, self.fine[0]), self.fine[1])
        middle = conv(conv(F.avg_pool2d(fine, 2), self.middle[0]), self.middle[1])
        coarse = F.avg_pool2d(middle, 2)
        for layer in self.coarse:
            coarse = conv(coarse, layer)
        up = F.interpolate(coarse, size=middle.shape[-2:], mode="bilinear", align_corners=False)
        middle = self._merge([up, middle], self.merge_middle)
        up = F.interpolate(middle, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        features = self._merge([up, fine, x], self.merge_fine)
        return torch.sigmoid(conv(features, self.head, relu=False)[:, 0])

    @staticmethod
    def matches(model: DeviationNet) -> bool:
        """True when ``model`` has exactly the layout this path reproduces (checked from its
        structure, not by running it: a probe would cost a third of a second per raster)."""
        from torch import nn
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
    def build(cls, model: DeviationNet, device: str):
        """The fused path when it applies to ``model`` on ``device``, else None (use the module)."""
        if device != "cpu" or not hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
            return None
        try:
            return cls(model) if cls.matches(model) else None
        except Exception:  # noqa: BLE001 - an unexpected layout or operator: use the module
            return None
