"""An ensemble of networks: the sigmoid of their mean logit, in the module, the fused path,
tiles and the weights file."""

import json

import numpy as np
import pytest
import torch

from anomaly_detector.model.nn.detector import TileScorer
from anomaly_detector.model.nn.features import INPUT_CHANNELS, SpectralReduction
from anomaly_detector.model.nn.fused import FusedScorer
from anomaly_detector.model.nn.network import (DeviationEnsemble, DeviationNet, build_network,
                                               ensemble_of)
from anomaly_detector.model.nn.weights import card_path, load_detector, save_weights
from anomaly_detector.model.training.ensemble import collect, join_members, log_path, main


def _members(count: int = 2, **config) -> list[DeviationNet]:
    config = {"width": 4, "evidence": True, "local_rx_components": 3, **config}
    members = []
    for seed in range(count):
        torch.manual_seed(seed)
        members.append(DeviationNet(**config).eval())
    return members


def _saved(tmp_path, members: list[DeviationNet]) -> list:
    paths = []
    for index, member in enumerate(members):
        path = tmp_path / f"member{index}" / "detector.pt"
        save_weights(member, path, {"training": {"seed": index}})
        log_path(path).write_text(f"step 1 of member {index}\n")
        paths.append(path)
    return paths


def test_ensemble_scores_the_sigmoid_of_its_members_mean_logit():
    members = _members(3)
    ensemble = ensemble_of(members).eval()
    x = torch.randn(2, INPUT_CHANNELS, 64, 48)
    with torch.no_grad():
        logits = torch.stack([member(x)[0] for member in members]).mean(dim=0)
        assert (ensemble.score(x) - torch.sigmoid(logits)).abs().max() < 1e-6
        # not any one member's scores
        assert (ensemble.score(x) - members[0].score(x)).abs().max() > 1e-3
    assert ensemble.config == {**members[0].config, "members": 3}
    assert ensemble.receptive_radius == members[0].receptive_radius


def test_members_of_another_configuration_are_refused():
    with pytest.raises(ValueError, match="share one configuration"):
        ensemble_of([_members(1)[0], _members(1, width=6)[0]])
    with pytest.raises(ValueError, match="at least 2 members"):
        DeviationEnsemble(1, width=4)


def test_fused_ensemble_equals_the_module_on_windows_and_tiles():
    ensemble = ensemble_of(_members(2)).eval()
    fused = FusedScorer.build(ensemble, "cpu")
    assert fused is not None and len(fused.networks) == 2
    torch.manual_seed(3)
    x = torch.randn(1, INPUT_CHANNELS, 160, 136).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        whole = ensemble.score(x)
        assert (fused(x) - whole).abs().max() < 1e-5
        y0, y1, x0, x1 = 48, 112, 40, 96
        window = fused(x, (y0, y1, x0, x1))
        assert (window[:, y0:y1, x0:x1] - whole[:, y0:y1, x0:x1]).abs().max() < 1e-5
        assert torch.isnan(window[:, :y0]).all()
    rng = np.random.default_rng(0)
    tiles = rng.normal(size=(2, 4, 92, 76)).astype(np.float32)
    scorer = TileScorer(ensemble, SpectralReduction.fit(np.zeros(4), np.eye(4)))
    batched = scorer.score_batch(tiles)
    for i in range(2):
        assert np.abs(batched[i] - scorer(tiles[i])).max() < 1e-6


def test_joined_weights_load_verified_as_the_ensemble(tmp_path):
    members = _members(2)
    paths = _saved(tmp_path, members)
    out = tmp_path / "ensemble" / "detector.pt"
    checksum = join_members(paths, out)
    card = json.loads(card_path(out).read_text())
    assert card["sha256"] == checksum and card["network"]["members"] == 2
    assert [m["training"]["seed"] for m in card["members"]] == [0, 1]
    assert [m["sha256"] for m in card["members"]] == \
        [json.loads(card_path(p).read_text())["sha256"] for p in paths]
    loaded = load_detector(out)
    assert isinstance(loaded, DeviationEnsemble)
    assert isinstance(build_network(card["network"]), DeviationEnsemble)
    x = torch.randn(1, INPUT_CHANNELS, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded.score(x), ensemble_of(members).eval().score(x))
    # the same members give the same file, byte for byte
    again = tmp_path / "again" / "detector.pt"
    assert join_members(paths, again) == checksum


def test_collect_joins_members_or_copies_the_one_member_with_their_logs(tmp_path, capsys):
    paths = _saved(tmp_path, _members(2))
    one = tmp_path / "one" / "detector.pt"
    checksum = collect(paths[:1], one)
    assert one.read_bytes() == paths[0].read_bytes()
    assert card_path(one).read_text() == card_path(paths[0]).read_text()
    assert log_path(one).read_text() == "step 1 of member 0\n"
    loaded = load_detector(one)
    assert isinstance(loaded, DeviationNet) and checksum == loaded.weights_sha256
    main([*map(str, paths), "--out", str(tmp_path / "two" / "detector.pt")])
    assert "SHA-256" in capsys.readouterr().out
    assert log_path(tmp_path / "two" / "detector.pt").read_text() == (
        "# member 1 of 2 (member0)\nstep 1 of member 0\n"
        "# member 2 of 2 (member1)\nstep 1 of member 1\n")
