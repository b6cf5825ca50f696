"""The large-margin losses of the method.

* :class:`PixelMarginLoss`: a differentiable surrogate of partial AUC. For each score
  threshold t, anomaly pixels scoring below t and background pixels scoring above t
  (the violators) get a cross-entropy weighted by -log(t); background pixels also carry
  half a cross-entropy times a non-negative Lagrange multiplier per threshold, tied to
  a false-positive-rate anchor. The multipliers are trained by gradient *ascent*
  (give their parameters to an optimizer with ``maximize=True``). With
  ``object_balance`` a > 0 an anomaly pixel's term is weighted by its object's size
  to the power -a (a = 1: every simulated target counts the same, whatever its size).
* :class:`FeatureMarginLoss`: on the last feature map, each group (background, large
  normal objects, anomalies) is pulled within a shrinking radius of its mean
  (Deep-SVDD style: radius^2 + 10 * mean hinge beyond it), and the anomaly mean is
  pushed away from the background and normal means.
* :class:`PeakMarginLoss`: what the analyst's ranked list needs: every simulated
  target's peak logit above the crop's highest background logits (a smooth maximum of
  the top 0.5 %, the product's default threshold) by a margin.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .simulation_config import ANOMALY, BACKGROUND, LARGE_NORMAL

THRESHOLDS = (0.9, 0.85, 0.8, 0.75, 0.7, 0.6)
FPR_ANCHORS = (0.0, 0.06, 0.12, 0.18, 0.24, 0.3)   # one per threshold, spread over [0, 0.3]
FEATURE_LOSS_WEIGHT = 0.1
PEAK_LOSS_WEIGHT = 0.0    # off: the candidate trained with 0.3 ranked worse (weights/MODEL.md)
PEAK_MARGIN = 1.0          # in logits
PEAK_TOP_SHARE = 0.005     # background pixels above the default threshold
_SMOOTH_STEP = 0.02


def top_thresholds(top: float | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The pixel loss's thresholds and anchors, with ``top`` (anchor 0) in front if given."""
    if top is None:
        return THRESHOLDS, FPR_ANCHORS
    return (top,) + THRESHOLDS, (0.0,) + FPR_ANCHORS


class PixelMarginLoss(nn.Module):
    """Threshold-anchored large-margin ranking loss over per-pixel logits."""

    def __init__(self, thresholds=THRESHOLDS, anchors=FPR_ANCHORS,
                 object_balance: float = 0.0) -> None:
        super().__init__()
        self.object_balance = object_balance
        self.register_buffer("thresholds", torch.tensor(thresholds, dtype=torch.float32))
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32))
        # multiplier = softplus(raw) >= 0; starts at 1.
        self.raw_multipliers = nn.Parameter(torch.full((len(thresholds),), 0.5413))

    @property
    def multipliers(self) -> torch.Tensor:
        return F.softplus(self.raw_multipliers)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        positive_weights = object_weights(labels == ANOMALY, self.object_balance).reshape(-1) \
            if self.object_balance else 1.0
        logits, labels = logits.reshape(-1), labels.reshape(-1)
        anomaly = labels == ANOMALY
        background = (labels == BACKGROUND) | (labels == LARGE_NORMAL)
        scores = torch.sigmoid(logits)
        loss_positive = F.softplus(-logits)     # -log(s)
        loss_negative = F.softplus(logits)      # -log(1 - s)
        n_anomaly = anomaly.sum().clamp(min=1)
        n_background = background.sum().clamp(min=1)
        background_ce = (loss_negative * background).sum() / n_background
        total = logits.new_zeros(())
        for threshold, anchor, multiplier in zip(self.thresholds, self.anchors, self.multipliers):
            weight = -torch.log(threshold)
            missed = anomaly & (scores < threshold)
            false_alarm = background & (scores > threshold)
            violation = (loss_positive * missed * positive_weights).sum() / n_anomaly + \
                (loss_negative * false_alarm).sum() / n_background
            smooth_fpr = (torch.sigmoid((scores - threshold) / _SMOOTH_STEP) * background).sum() \
                / n_background
            total = total + weight * violation + multiplier * (0.5 * background_ce + smooth_fpr - anchor)
        return total / len(self.thresholds)


class FeatureMarginLoss(nn.Module):
    """Compactness of each group's features and separation of the anomaly group."""

    GROUPS = (BACKGROUND, LARGE_NORMAL, ANOMALY)

    def __init__(self, max_pixels_per_group: int = 4096) -> None:
        super().__init__()
        self.radii = nn.Parameter(torch.ones(len(self.GROUPS)))
        self.max_pixels = max_pixels_per_group

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        vectors = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        labels = labels.reshape(-1)
        centres = {}
        total = features.new_zeros(())
        for index, group in enumerate(self.GROUPS):
            members = torch.nonzero(labels == group).reshape(-1)
            if members.numel() < 2:
                continue
            if members.numel() > self.max_pixels:
                members = members[torch.randperm(members.numel(), device=members.device)[:self.max_pixels]]
            group_vectors = vectors[members]
            centre = group_vectors.mean(dim=0)
            distance2 = ((group_vectors - centre) ** 2).sum(dim=1)
            radius2 = self.radii[index] ** 2
            total = total + radius2 + 10.0 * F.relu(distance2 - radius2).mean()
            centres[group] = centre
        if ANOMALY in centres:
            for group in (BACKGROUND, LARGE_NORMAL):
                if group in centres:
                    total = total - torch.linalg.vector_norm(centres[ANOMALY] - centres[group])
        return total


def object_ids(mask: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, H, W) int64: one id per 8-connected object of ``mask``
    (unique over the batch), 0 elsewhere; by propagating the largest id inside each object."""
    ids = torch.arange(1, mask.numel() + 1, dtype=torch.float32,
                       device=mask.device).reshape(mask.shape) * mask
    while True:
        grown = F.max_pool2d(ids[:, None], 3, stride=1, padding=1)[:, 0] * mask
        if torch.equal(grown, ids):
            return ids.long()
        ids = grown


def object_weights(mask: torch.Tensor, power: float) -> torch.Tensor:
    """(N, H, W) bool -> float32 weights: on each 8-connected object of ``mask`` its size to
    the power -``power``, scaled to sum to the number of ``mask`` pixels; 0 elsewhere."""
    ids = object_ids(mask).reshape(-1)
    _, index, sizes = torch.unique(ids, return_inverse=True, return_counts=True)
    weights = sizes.to(torch.float32)[index].pow(-power) * mask.reshape(-1)
    total = weights.sum()
    if total > 0:
        weights = weights * (mask.sum() / total)
    return weights.reshape(mask.shape)


class PeakMarginLoss(nn.Module):
    """Object-level ranking: softplus(margin - (object peak - smooth top background))
    averaged over the simulated targets of crops that have any."""

    def __init__(self, margin: float = PEAK_MARGIN, top_share: float = PEAK_TOP_SHARE) -> None:
        super().__init__()
        self.margin, self.top_share = margin, top_share

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        background = (labels == BACKGROUND) | (labels == LARGE_NORMAL)
        ids = object_ids(labels == ANOMALY).reshape(logits.shape[0], -1)
        flat = logits.reshape(logits.shape[0], -1)
        losses = []
        for crop in range(flat.shape[0]):
            crop_ids, quiet = ids[crop], flat[crop][background[crop].reshape(-1)]
            if not bool((crop_ids > 0).any()) or quiet.numel() == 0:
                continue
            count = max(1, int(round(self.top_share * quiet.numel())))
            top = torch.topk(quiet, count).values
            ceiling = torch.logsumexp(top, 0) - torch.log(top.new_tensor(float(count)))
            objects, index = torch.unique(crop_ids[crop_ids > 0], return_inverse=True)
            peaks = flat.new_full((objects.numel(),), -torch.inf).scatter_reduce(
                0, index, flat[crop][crop_ids > 0], "amax")
            losses.append(F.softplus(self.margin - (peaks - ceiling)))
        if not losses:
            return logits.new_zeros(())
        return torch.cat(losses).mean()
