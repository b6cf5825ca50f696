"""The deviation network: scores, size and the context it declares."""

import pytest
import torch

from anomaly_detector.model.nn.evidence import EVIDENCE_RADIUS, evidence_channels
from anomaly_detector.model.nn.features import INPUT_CHANNELS
from anomaly_detector.model.nn.network import CONV_RECEPTIVE_RADIUS, DeviationNet, parameter_count


def test_network_scores_are_probabilities_and_compact():
    model = DeviationNet().eval()
    with torch.inference_mode():
        scores = model.score(torch.randn(2, INPUT_CHANNELS, 64, 48))
    assert scores.shape == (2, 64, 48)
    assert float(scores.min()) >= 0 and float(scores.max()) <= 1
    assert parameter_count(model) < 5_000_000 // 4  # far below the 20 MB budget in float32


@pytest.mark.parametrize("evidence", [False, True])
def test_receptive_radius_is_what_the_network_declares(evidence):
    torch.manual_seed(0)
    model = DeviationNet(evidence=evidence)
    for parameter in model.parameters():  # all-positive weights: no accidental zero gradients
        parameter.data.abs_()
    inputs = torch.randn(1, INPUT_CHANNELS, 160, 160, requires_grad=True)
    model(inputs)[0][0, 80, 80].backward()
    reached = torch.nonzero(inputs.grad.abs().sum(dim=1)[0] > 0)
    radius = int(max(80 - reached.min(), reached.max() - 80))
    assert radius == model.receptive_radius == CONV_RECEPTIVE_RADIUS + evidence * EVIDENCE_RADIUS


@pytest.mark.parametrize("evidence", [False, True])
def test_with_evidence_channels_appends_the_classic_evidence(evidence):
    model = DeviationNet(evidence=evidence, local_rx_components=2)
    x = torch.randn(1, INPUT_CHANNELS, 24, 20)
    expanded = model.with_evidence_channels(x)
    assert torch.equal(expanded[:, :INPUT_CHANNELS], x)
    if evidence:
        assert torch.equal(expanded[:, INPUT_CHANNELS:], evidence_channels(x, 2))
    else:
        assert expanded.shape[1] == INPUT_CHANNELS
