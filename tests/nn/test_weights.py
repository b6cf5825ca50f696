"""Saving and loading the detector's weights: checksum, safe loading, earlier cards."""

import json

import pytest
import torch

from anomaly_detector.model.nn import weights as weights_module
from anomaly_detector.model.nn.network import DeviationNet
from anomaly_detector.model.nn.weights import WeightsError, card_path, load_detector, save_weights


def test_bundled_weights_load_and_verify():
    card = json.loads(weights_module.card_path(weights_module.DEFAULT_WEIGHTS).read_text())
    assert weights_module.sha256_of(weights_module.DEFAULT_WEIGHTS) == card["sha256"]
    assert weights_module.DEFAULT_WEIGHTS.stat().st_size < 20 * 1024 * 1024
    load_detector()


def test_tampered_or_missing_weights_give_a_clear_error(tmp_path, tampered_weights):
    with pytest.raises(WeightsError, match="corrupt or was modified"):
        load_detector(tampered_weights)
    with pytest.raises(WeightsError, match="not found"):
        load_detector(tmp_path / "absent.pt")


def test_negligible_weights_are_zeroed_on_load_without_changing_scores(tmp_path):
    torch.manual_seed(0)
    model = DeviationNet(width=4).eval()
    with torch.no_grad():
        model.coarse[2].weight[0, 0] = 1e-30  # a decayed unit: 9 tiny weights
        model.coarse[2].weight[1, 0, 0, 0] = 1e-3
    save_weights(model, tmp_path / "w.pt")
    loaded = load_detector(tmp_path / "w.pt")
    assert (loaded.coarse[2].weight[0, 0] == 0).all()
    assert loaded.coarse[2].weight[1, 0, 0, 0].item() == pytest.approx(1e-3)
    x = torch.randn(1, 5, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.score(x), model.score(x))




def _write_card(weights, network):
    """Rewrite the card beside ``weights`` with this network configuration."""
    card = json.loads(card_path(weights).read_text())
    card_path(weights).write_text(json.dumps({**card, "network": network}))


class _Payload:
    """Pickles as a call of os.mkdir: what a weights file must never be able to run."""

    def __init__(self, folder):
        self.folder = str(folder)

    def __reduce__(self):
        import os
        return os.mkdir, (self.folder,)


def test_weights_that_would_run_code_are_refused_without_running_it(tmp_path):
    model = DeviationNet(width=4)
    save_weights(model, tmp_path / "w.pt")
    marker = tmp_path / "code-ran"
    torch.save({**model.state_dict(), "payload": _Payload(marker)}, tmp_path / "w.pt")
    card = json.loads(card_path(tmp_path / "w.pt").read_text())
    card["sha256"] = weights_module.sha256_of(tmp_path / "w.pt")  # a matching checksum
    card_path(tmp_path / "w.pt").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="cannot be loaded"):
        load_detector(tmp_path / "w.pt")
    assert not marker.exists()


def test_card_without_local_rx_components_loads_with_four(tmp_path):
    torch.manual_seed(1)
    model = DeviationNet(width=4, evidence=True, local_rx_components=4).eval()
    save_weights(model, tmp_path / "w.pt")
    _write_card(tmp_path / "w.pt", {"in_channels": 5, "width": 4, "evidence": True})
    loaded = load_detector(tmp_path / "w.pt")
    assert loaded.local_rx_components == 4 and loaded.config["local_rx_components"] == 4
    x = torch.randn(1, 5, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.score(x), model.score(x))
    _write_card(tmp_path / "w.pt", {"in_channels": 5, "width": 8, "evidence": True})
    with pytest.raises(WeightsError, match="cannot be loaded"):  # weights of another shape
        load_detector(tmp_path / "w.pt")
