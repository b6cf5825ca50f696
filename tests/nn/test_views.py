"""Views: the mean logit over the tile as it is and the tile turned by 180° (or also
mirrored), in the module, the fused path, tiles over a raster file and the weights card."""

import json
import shutil

import numpy as np
import pytest
import torch

from anomaly_detector.model.nn.detector import detect_raster
from anomaly_detector.model.nn.features import INPUT_CHANNELS
from anomaly_detector.model.nn.fused import FusedScorer
from anomaly_detector.model.nn.network import DeviationNet, build_network, ensemble_of
from anomaly_detector.model.nn.weights import (DEFAULT_WEIGHTS, WeightsError, card_path,
                                               load_detector, save_weights)
from conftest import read_raster, targets_scene, write_raster


def _network(seed: int = 0, **config) -> DeviationNet:
    torch.manual_seed(seed)
    return DeviationNet(width=4, evidence=True, local_rx_components=3, **config).eval()


def _with_views(views: int, tmp_path) -> str:
    """A copy of the bundled weights whose card asks for ``views`` views."""
    path = tmp_path / f"views{views}" / "detector.pt"
    path.parent.mkdir()
    shutil.copy(DEFAULT_WEIGHTS, path)
    card = json.loads(card_path(DEFAULT_WEIGHTS).read_text())
    card["network"]["views"] = views
    card_path(path).write_text(json.dumps(card))
    return str(path)


def test_two_views_average_the_logits_of_the_tile_and_of_it_turned_back():
    one, two = _network(), _network(views=2)
    two.load_state_dict(one.state_dict())
    x = torch.randn(1, INPUT_CHANNELS, 64, 48)
    with torch.no_grad():
        turned = torch.flip(one(torch.flip(x, (-2, -1)))[0], (-2, -1))
        expected = torch.sigmoid((one(x)[0] + turned) / 2)
        assert (two.score(x) - expected).abs().max() < 1e-6
        assert (two.score(x) - one.score(x)).abs().max() > 1e-3  # the second view counts
        # training sees the tile as it is, or the mean logit of the views it is asked for
        assert torch.equal(two(x)[0], one(x)[0])
        logits, features = one(x, 2)
        assert (torch.sigmoid(logits) - expected).abs().max() < 1e-6
        assert torch.equal(features, one(x)[1])  # the features of the tile as it is
    assert "views" not in one.config and two.config["views"] == 2


@pytest.mark.parametrize("views", [2, 4])
def test_fused_views_equal_the_module_on_windows(views):
    network = _network(views=views)
    fused = FusedScorer.build(network, "cpu")
    torch.manual_seed(1)
    x = torch.randn(1, INPUT_CHANNELS, 160, 136).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        whole = network.score(x)
        assert (fused(x) - whole).abs().max() < 1e-5
        y0, y1, x0, x1 = 48, 112, 40, 96  # off-centre: each view's window is flipped
        window = fused(x, (y0, y1, x0, x1))
        assert (window[:, y0:y1, x0:x1] - whole[:, y0:y1, x0:x1]).abs().max() < 1e-5
        assert torch.isnan(window[:, :y0]).all()


def test_an_ensemble_averages_its_members_over_the_views():
    members = [_network(seed, views=2) for seed in range(2)]
    ensemble = ensemble_of(members).eval()
    assert ensemble.views == 2 and ensemble.config["views"] == 2
    x = torch.randn(1, INPUT_CHANNELS, 64, 48).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        logits = torch.logit(torch.stack([member.score(x) for member in members]), eps=0)
        expected = torch.sigmoid(logits.mean(dim=0))
        assert (ensemble.score(x) - expected).abs().max() < 1e-5
        assert (FusedScorer.build(ensemble, "cpu")(x) - expected).abs().max() < 1e-5


def test_views_over_a_raster_are_seam_free_and_tile_independent(tmp_path):
    image, targets = targets_scene(height=150, width=131)  # sides not multiples of 4
    src = write_raster(tmp_path / "in.tif", image.astype(np.float32))
    weights = _with_views(2, tmp_path)
    detect_raster(src, str(tmp_path / "one.tif"), tile_size=1024, weights_path=weights)
    detect_raster(src, str(tmp_path / "many.tif"), tile_size=48, weights_path=weights)
    detect_raster(src, str(tmp_path / "single.tif"), tile_size=1024,
                  weights_path=_with_views(1, tmp_path))
    one, many = read_raster(tmp_path / "one.tif")[0], read_raster(tmp_path / "many.tif")[0]
    single = read_raster(tmp_path / "single.tif")[0]
    assert np.abs(one - many).max() < 1e-5
    assert np.abs(one - single).max() > 1e-3
    for row, col in targets:
        assert one[row, col] > np.quantile(one, 0.98)


def test_a_card_with_an_unknown_view_count_is_refused(tmp_path):
    with pytest.raises(ValueError, match="views must be one of 1, 2, 4"):
        build_network({"in_channels": INPUT_CHANNELS, "width": 4, "views": 3})
    with pytest.raises(WeightsError, match="cannot be loaded"):
        load_detector(_with_views(3, tmp_path))
    assert load_detector(_with_views(4, tmp_path)).views == 4


def test_views_are_written_in_the_card(tmp_path):
    path = tmp_path / "detector.pt"
    save_weights(_network(views=2), path)
    assert json.loads(card_path(path).read_text())["network"]["views"] == 2
    assert load_detector(path).views == 2
