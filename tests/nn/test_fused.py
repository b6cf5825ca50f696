"""The fused CPU path scores as the network module does, and only for its layout."""

import numpy as np
import torch

from anomaly_detector.model.nn.detector import TileScorer
from anomaly_detector.model.nn.features import INPUT_CHANNELS, SpectralReduction
from anomaly_detector.model.nn.fused import FusedScorer
from anomaly_detector.model.nn.weights import load_detector


def test_fused_forward_and_batches_equal_the_module():
    model = load_detector()
    fused = FusedScorer.build(model, "cpu")
    assert fused is not None
    x = torch.randn(2, INPUT_CHANNELS, 96, 132).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert (fused(x) - model.score(x)).abs().max() < 1e-5
    rng = np.random.default_rng(0)
    tiles = rng.normal(size=(3, 4, 100, 76)).astype(np.float32)
    valids = rng.random((3, 100, 76)) > 0.05
    scorer = TileScorer(model, SpectralReduction.fit(np.zeros(4), np.eye(4)))
    batched = scorer.score_batch(tiles, valids)
    for i in range(3):
        assert np.abs(batched[i] - scorer(tiles[i], valids[i])).max() < 1e-5


def test_fused_path_only_for_the_known_layout():
    model = load_detector()
    assert FusedScorer.build(model, "cpu") is not None
    assert FusedScorer.build(model, "cuda") is None

    class Variant(type(model)):
        def forward(self, x):  # another computation: must not be replaced
            return super().forward(x)

    variant = Variant(**model.config)
    variant.load_state_dict(model.state_dict())
    assert FusedScorer.build(variant, "cpu") is None
