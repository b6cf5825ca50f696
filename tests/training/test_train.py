"""Training is seeded (same command, same weights) and resumable from its checkpoint."""

import json

import numpy as np
import torch

from anomaly_detector.model.training.simulation_config import SimulationConfig
from anomaly_detector.model.training.train import main as train_main, parse_args, simulation_config
from conftest import write_raster


def _backgrounds(root):
    for modality in ("multispectral", "sar"):
        (root / modality).mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_raster(root / "multispectral" / "a.tif", rng.normal(100, 10, (6, 40, 44)).astype(np.float32))
    write_raster(root / "sar" / "b.tif", rng.gamma(1.0, 50, (1, 48, 40)).astype(np.float32))
    return root


def _train(data, out, steps, *extra):
    train_main(["--data", str(data), "--steps", str(steps), "--out", str(out), "--batch", "2",
                "--crop", "32", "--width", "4", "--checkpoint-every", "2", "--threads", "1", *extra])
    return torch.load(out, weights_only=True)


def test_training_is_seeded_and_resumable(tmp_path):
    data = _backgrounds(tmp_path / "bg")
    first = _train(data, tmp_path / "one" / "w.pt", 4)
    second = _train(data, tmp_path / "two" / "w.pt", 4)
    for name in first:
        assert torch.equal(first[name], second[name]), name
    checkpoint = tmp_path / "one" / "w.checkpoint.pt"
    assert torch.load(checkpoint, weights_only=True)["step"] == 4
    resumed = _train(data, tmp_path / "one" / "w.pt", 6, "--resume", str(checkpoint))
    assert any(not torch.equal(first[name], resumed[name]) for name in first)
    log = (tmp_path / "one" / "w.log").read_text()
    assert "# start step 4 of 6" in log and "step 6 loss" in log


def test_saved_weights_are_the_moving_average(tmp_path):
    from anomaly_detector.model.training.train import update_average
    model, average = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        average.weight.fill_(0.0)
    update_average(average, model, decay=0.998, step=10_000)
    assert torch.allclose(average.weight, torch.full_like(average.weight, 0.002))
    update_average(average, model, decay=0.998, step=0)  # warm-up: mostly the new weights
    assert (average.weight > 0.85).all()
    update_average(average, model, decay=0.0, step=10_000)  # --ema 0: the trained weights
    assert torch.equal(average.weight, model.weight)
    # a run saves the average, which differs from the last step's weights
    data = _backgrounds(tmp_path / "bg")
    saved = _train(data, tmp_path / "w.pt", 4)
    last = torch.load(tmp_path / "w.checkpoint.pt", weights_only=True)
    assert all(torch.equal(saved[k], last["average"][k]) for k in saved)
    assert any(not torch.equal(saved[k], last["model"][k]) for k in saved)


def test_command_line_sets_the_simulation_it_names():
    config = simulation_config(parse_args(["--panel-arrays", "0.6", "--corner-negatives", "0.1",
                                           "--panel-fields", "0.5", "--jpeg", "0.3",
                                           "--blob-negatives", "0.3",
                                           "--rescaled-backgrounds", "0.5"]))
    assert config.panels_p == 0.6 and config.hard_negatives.corner_p == 0.1
    assert config.rescaled_backgrounds_p == 0.5
    assert config.hard_negatives.blob_p == 0.3
    assert config.panels.field_p == 0.5 and config.jpeg_p == 0.3
    defaults = simulation_config(parse_args([]))
    assert defaults == SimulationConfig()


def test_worker_processes_give_a_seeded_stream_of_their_own(tmp_path):
    data = _backgrounds(tmp_path / "bg")
    in_process = _train(data, tmp_path / "zero" / "w.pt", 4)
    first = _train(data, tmp_path / "one" / "w.pt", 4, "--workers", "2")
    second = _train(data, tmp_path / "two" / "w.pt", 4, "--workers", "2")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], in_process[k]) for k in first)
    card = json.loads((tmp_path / "one" / "w.json").read_text())
    assert card["training"]["workers"] == 2
    resumed = _train(data, tmp_path / "one" / "w.pt", 6, "--workers", "2",
                     "--resume", str(tmp_path / "one" / "w.checkpoint.pt"))
    assert any(not torch.equal(first[k], resumed[k]) for k in first)
    assert "step 6 loss" in (tmp_path / "one" / "w.log").read_text()


def test_training_can_judge_the_mean_logit_of_two_views(tmp_path):
    data = _backgrounds(tmp_path / "bg")
    one = _train(data, tmp_path / "one" / "w.pt", 4)
    two = _train(data, tmp_path / "two" / "w.pt", 4, "--train-views", "2")
    assert any(not torch.equal(one[k], two[k]) for k in one)
    assert json.loads((tmp_path / "two" / "w.json").read_text())["training"]["train_views"] == 2
    assert "train_views" not in json.loads((tmp_path / "one" / "w.json").read_text())["training"]
