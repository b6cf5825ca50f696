"""The large-margin losses: pixel ranking, feature compactness, object peaks."""

import pytest
import torch

from anomaly_detector.model.training.losses import (FeatureMarginLoss, PeakMarginLoss, PixelMarginLoss,
                                           object_ids, object_weights)
from anomaly_detector.model.training.simulation_config import ANOMALY, BACKGROUND, IGNORE, LARGE_NORMAL


def _separated_logits(margin):
    labels = torch.tensor([ANOMALY] * 10 + [BACKGROUND] * 80 + [LARGE_NORMAL] * 10)
    logits = torch.where(labels == ANOMALY, torch.tensor(margin), torch.tensor(-margin)).float()
    return logits + torch.linspace(-0.3, 0.3, labels.numel()), labels


def test_pixel_loss_falls_as_the_margin_grows():
    loss = PixelMarginLoss()
    values = [loss(*_separated_logits(m)).item() for m in (-1.0, 0.0, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in zip(values, values[1:])), values


def test_pixel_loss_multipliers_rise_by_ascent_when_false_alarms_exceed_the_anchors():
    loss = PixelMarginLoss()
    optimiser = torch.optim.Adam(loss.parameters(), lr=0.05, maximize=True)
    before = loss.multipliers.detach().clone()
    logits, labels = _separated_logits(-2.0)  # background scores high: constraints violated
    for _ in range(5):
        optimiser.zero_grad()
        loss(logits, labels).backward()
        optimiser.step()
    assert (loss.multipliers > before).all()
    logits, labels = _separated_logits(6.0)   # constraints met: multipliers relax
    high = loss.multipliers.detach().clone()
    optimiser = torch.optim.SGD(loss.parameters(), lr=0.5, maximize=True)
    for _ in range(5):
        optimiser.zero_grad()
        loss(logits, labels).backward()
        optimiser.step()
    assert (loss.multipliers[1:] < high[1:]).all()


def test_feature_loss_falls_as_groups_separate():
    loss = FeatureMarginLoss()
    labels = torch.tensor([ANOMALY] * 20 + [BACKGROUND] * 60 + [LARGE_NORMAL] * 20).reshape(1, 10, 10)
    noise = torch.randn(1, 4, 10, 10) * 0.1
    values = []
    for margin in (0.0, 1.0, 2.0, 4.0):
        features = noise.clone()
        features[:, 0] += margin * (labels == ANOMALY).float()
        values.append(loss(features, labels).item())
    assert all(a > b for a, b in zip(values, values[1:])), values


def test_object_ids_label_each_8_connected_object_once():
    mask = torch.zeros(2, 9, 9, dtype=torch.bool)
    mask[0, 1:3, 1:4] = True                   # a block
    mask[0, 5, 5] = mask[0, 6, 6] = True       # diagonal neighbours: one object
    mask[0, 5, 8] = True                       # a separate pixel
    mask[1, 0, 0] = True                       # another crop
    ids = object_ids(mask)
    assert (ids[~mask] == 0).all()
    assert len(torch.unique(ids[0, 1:3, 1:4])) == 1
    assert ids[0, 5, 5] == ids[0, 6, 6] != ids[0, 5, 8]
    assert len(torch.unique(ids[mask])) == 4


def test_object_weights_make_every_object_count_the_same():
    mask = torch.zeros(1, 9, 9, dtype=torch.bool)
    mask[0, 1:3, 1:3] = True                   # 4 pixels
    mask[0, 6, 6] = True                       # 1 pixel
    weights = object_weights(mask, 1.0)
    assert (weights[~mask] == 0).all()
    assert weights[0, 1:3, 1:3].sum().item() == pytest.approx(2.5)
    assert weights[0, 6, 6].item() == pytest.approx(2.5)
    half = object_weights(mask, 0.5)           # size ** -0.5: 4 pixels of 1/2 against 1
    assert half[0, 6, 6].item() == pytest.approx(2 * half[0, 1, 1].item())
    assert half.sum().item() == pytest.approx(5.0)


def test_object_balance_weights_the_missed_small_target_more():
    labels = torch.full((1, 12, 12), BACKGROUND)
    labels[0, 1:5, 1:5] = ANOMALY              # 16 pixels
    labels[0, 9, 9] = ANOMALY                  # 1 pixel
    logits = torch.full((1, 12, 12), -4.0)
    big_missed, small_missed = logits.clone(), logits.clone()
    small_missed[0, 1:5, 1:5] = 4.0
    big_missed[0, 9, 9] = 4.0
    plain, balanced = PixelMarginLoss(), PixelMarginLoss(object_balance=1.0)
    assert plain(small_missed, labels) < plain(big_missed, labels)
    assert balanced(small_missed, labels).item() == pytest.approx(balanced(big_missed, labels).item())


def _peak_scene(target_peak):
    labels = torch.full((1, 20, 20), BACKGROUND)
    labels[0, 2:4, 2:4] = ANOMALY
    labels[0, 15, 15] = ANOMALY
    labels[0, 10, :] = IGNORE
    logits = torch.linspace(-3, 0, 400).reshape(1, 20, 20).clone()
    logits[0, 2:4, 2:4] = target_peak
    logits[0, 15, 15] = target_peak - 0.5
    logits[0, 10, :] = 50.0                     # ignored pixels never count as background
    return logits, labels


def test_peak_loss_falls_as_every_target_peak_clears_the_background_top():
    loss = PeakMarginLoss()
    values = [loss(*_peak_scene(peak)).item() for peak in (-2.0, 0.0, 1.0, 3.0, 6.0)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[-1] < 0.01


def test_peak_loss_follows_the_weakest_target_and_ignores_crops_without_targets():
    loss = PeakMarginLoss()
    logits, labels = _peak_scene(3.0)
    logits.requires_grad_(True)
    loss(logits, labels).backward()
    # both objects' peaks and the top background pixels get gradient; the rest none
    assert logits.grad[0, 2:4, 2:4].abs().sum() > 0 and logits.grad[0, 15, 15] != 0
    assert logits.grad[0, 10].abs().sum() == 0 and logits.grad[0, 0, 0] == 0
    empty = torch.full((1, 20, 20), BACKGROUND)
    assert loss(torch.randn(1, 20, 20), empty).item() == 0.0
