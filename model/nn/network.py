"""The compact deviation-scoring network.

A small three-scale encoder-decoder over the fixed input channels of
:mod:`.features` (optionally followed by the classic evidence channels of
:mod:`.evidence`: multi-scale local contrast and dual-window local RX): full
resolution for the pixel and its immediate neighbours, 1/2 and 1/4 resolution (with
dilated convolutions) for the surroundings it is compared with.
Skip connections bring the fine detail back; a 1x1 head turns the last feature map
into a per-pixel logit, and ``sigmoid(logit)`` is the deviation score in [0, 1].
:class:`DeviationEnsemble` averages the logits of several such networks, trained
apart (other seeds), over input and evidence channels computed once. With ``views`` > 1
a network (or an ensemble) also scores the tile turned by 180° (and, with 4, mirrored
left-right and top-bottom) and averages the logits of the views turned back.

There is deliberately no normalisation layer: instance or batch statistics would be
computed per tile and show as seams. Inputs are already normalised once per raster.
Tiles must have sides that are multiples of ``SIZE_MULTIPLE`` and start at offsets
that are multiples of it, so the pooling grid is the same in every tile.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .evidence import EVIDENCE_CHANNELS, EVIDENCE_RADIUS, LOCAL_RX_COMPONENTS, evidence_channels
from .features import INPUT_CHANNELS

SIZE_MULTIPLE = 4
# Pixels of context on each side that influence a score through the convolutions and
# pooling (tested); the evidence channels, when used, add their window radius.
CONV_RECEPTIVE_RADIUS = 44


# Flipped axes of each view of a tile: as it is, turned by 180°, mirrored left-right,
# mirrored top-bottom. A flip is its own inverse, so the same flip turns a view's logits back.
VIEW_FLIPS: tuple[tuple[int, ...], ...] = ((), (-2, -1), (-1,), (-2,))
VIEWS = (1, 2, 4)


def check_views(views: int) -> int:
    """``views`` if it is a view count the network offers, else a ValueError."""
    if views not in VIEWS:
        raise ValueError(f"The number of views must be one of {', '.join(map(str, VIEWS))}, "
                         f"not {views}.")
    return int(views)


def flipped(x: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """``x`` flipped along ``axes`` (itself when there are none)."""
    return torch.flip(x, axes) if axes else x


def mean_view_logits(logits: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     views: int) -> torch.Tensor:
    """The mean over the first ``views`` views of ``x`` of ``logits(view)`` turned back."""
    if views == 1:
        return logits(x)
    return torch.stack([flipped(logits(flipped(x, axes)), axes)
                        for axes in VIEW_FLIPS[:views]]).mean(dim=0)


def _conv(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)


class _ViewScored(nn.Module):
    """What a network and an ensemble share: ``forward`` gives the logits for training (the
    tile as it is, or the mean over the views asked for), ``score`` the sigmoid of the mean
    logit over ``views`` views (the input and evidence channels computed once)."""

    config: dict
    views: int

    def _set_views(self, views: int) -> None:
        self.views = check_views(views)
        if views > 1:
            self.config["views"] = views

    def forward(self, x: torch.Tensor, views: int = 1, grey_step: float | torch.Tensor = 0.0
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, last features) for training: the logits averaged over ``views`` views
        (by default the tile as it is), the features of the tile as it is; ``grey_step``
        as :meth:`score` reads it, or one per sample."""
        features = []

        def logits(view: torch.Tensor) -> torch.Tensor:
            view_logits, view_features = self.logits_of_inputs(view)
            features.append(view_features)
            return view_logits

        return mean_view_logits(logits, self.with_evidence_channels(x, grey_step), views), \
            features[0]

    def score(self, x: torch.Tensor, grey_step: float = 0.0) -> torch.Tensor:
        """Deviation score in [0, 1], shape (N, H, W); ``grey_step``: one grey level of the
        raster along component 1 (see :func:`.evidence.spread_floors`)."""
        return torch.sigmoid(mean_view_logits(lambda view: self.logits_of_inputs(view)[0],
                                              self.with_evidence_channels(x, grey_step),
                                              self.views))


class DeviationNet(_ViewScored):
    """Per-pixel deviation scorer. ``forward`` returns (logits, last features)."""

    def __init__(self, in_channels: int = INPUT_CHANNELS, width: int = 16,
                 evidence: bool = False,
                 local_rx_components: int = LOCAL_RX_COMPONENTS, views: int = 1) -> None:
        super().__init__()
        w1, w2, w3 = width, 2 * width, 3 * width
        self.config = {"in_channels": in_channels, "width": width, "evidence": evidence}
        if evidence:
            self.config["local_rx_components"] = local_rx_components
        self._set_views(views)
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

    def with_evidence_channels(self, x: torch.Tensor, grey_step: float | torch.Tensor = 0.0
                               ) -> torch.Tensor:
        """The input channels, followed by the classic evidence channels when configured."""
        if not self.evidence:
            return x
        return torch.cat([x, evidence_channels(x, self.local_rx_components, grey_step)], dim=1)

    def logits_of_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, last features) of the channels that :meth:`with_evidence_channels` gave."""
        fine = self.fine(x)
        middle = self.middle(F.avg_pool2d(fine, 2))
        coarse = self.coarse(F.avg_pool2d(middle, 2))
        up = F.interpolate(coarse, size=middle.shape[-2:], mode="bilinear", align_corners=False)
        middle = self.merge_middle(torch.cat([up, middle], dim=1))
        up = F.interpolate(middle, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        features = self.merge_fine(torch.cat([up, fine, x], dim=1))
        return self.head(features)[:, 0], features


class DeviationEnsemble(_ViewScored):
    """The mean logit of ``members`` networks of one configuration (trained apart); the
    input and evidence channels are computed once for all of them. ``forward`` returns
    (mean logits, None): an ensemble is scored, not trained."""

    def __init__(self, members: int = 2, views: int = 1, **config) -> None:
        super().__init__()
        if members < 2:
            raise ValueError(f"An ensemble needs at least 2 members, not {members}.")
        self.members = nn.ModuleList(DeviationNet(**config) for _ in range(members))
        self.config = {**self.members[0].config, "members": members}
        self._set_views(views)

    # the members' shared input layout
    evidence = property(lambda self: self.members[0].evidence)
    local_rx_components = property(lambda self: self.members[0].local_rx_components)
    receptive_radius = property(lambda self: self.members[0].receptive_radius)

    def with_evidence_channels(self, x: torch.Tensor, grey_step: float | torch.Tensor = 0.0
                               ) -> torch.Tensor:
        return self.members[0].with_evidence_channels(x, grey_step)

    def logits_of_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(the members' mean logits, None) of the channels that ``with_evidence_channels``
        gave."""
        logits = [member.logits_of_inputs(x)[0] for member in self.members]
        return torch.stack(logits).mean(dim=0), None


Detector = DeviationNet | DeviationEnsemble


def members_of(model: Detector) -> list[DeviationNet]:
    """The networks whose logits ``model`` averages (itself, if it is not an ensemble)."""
    return list(model.members) if isinstance(model, DeviationEnsemble) else [model]


def build_network(config: dict) -> Detector:
    """The network a weights card's ``network`` configuration describes (an ensemble when it
    names its ``members``)."""
    config = dict(config)
    if config.get("evidence"):  # cards written before this setting existed used 4
        config.setdefault("local_rx_components", 4)
    if "members" in config:
        return DeviationEnsemble(**config)
    return DeviationNet(**config)


def ensemble_of(models: list[DeviationNet]) -> DeviationEnsemble:
    """An ensemble holding copies of the parameters of ``models`` (of one configuration;
    it has their view count)."""
    if any(model.config != models[0].config for model in models):
        raise ValueError("The members of an ensemble must share one configuration "
                         "(input channels, width, evidence channels, views).")
    ensemble = DeviationEnsemble(len(models), **models[0].config)
    for member, model in zip(ensemble.members, models):
        member.load_state_dict(model.state_dict())
    return ensemble


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
