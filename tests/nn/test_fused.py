"""The fused CPU path scores as the network module does, and only for its layout."""

import numpy as np
import pytest
import torch

from anomaly_detector.model.nn import fused as fused_module
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
        # an integer raster's grey level sets the evidence's floors on both paths
        floored = fused(x, grey_step=0.5)
        assert (floored - model.score(x, grey_step=0.5)).abs().max() < 1e-5
        assert (floored - fused(x)).abs().max() > 1e-3
    rng = np.random.default_rng(0)
    tiles = rng.normal(size=(3, 4, 100, 76)).astype(np.float32)
    valids = rng.random((3, 100, 76)) > 0.05
    scorer = TileScorer(model, SpectralReduction.fit(np.zeros(4), np.eye(4)))
    batched = scorer.score_batch(tiles, valids)
    for i in range(3):
        assert np.abs(batched[i] - scorer(tiles[i], valids[i])).max() < 1e-5


def test_fused_scores_on_a_window_equal_the_whole_tile_there_and_nothing_else():
    model = load_detector()
    fused = FusedScorer.build(model, "cpu")
    torch.manual_seed(2)
    x = torch.randn(1, INPUT_CHANNELS, 200, 168).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        whole = fused(x)
        assert (whole - model.score(x)).abs().max() < 1e-5
        # a core with margins, one at the tile's corner, a thin one, the whole tile
        for window in [(64, 136, 64, 104), (0, 132, 100, 168), (96, 100, 4, 164),
                       (0, 200, 0, 168)]:
            y0, y1, x0, x1 = window
            scores = fused(x, window)
            # equal up to float rounding (oneDNN may sum in another order on another size)
            assert (scores[:, y0:y1, x0:x1] - whole[:, y0:y1, x0:x1]).abs().max() < 1e-6
            outside = torch.ones_like(scores, dtype=torch.bool)
            outside[:, y0:y1, x0:x1] = False
            assert torch.isnan(scores[outside]).all()


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


@pytest.mark.skipif(not fused_module.native_bfloat16(), reason="no native bfloat16 on this CPU")
def test_bfloat16_path_is_seamless_and_close_to_float32():
    model = load_detector()
    fast = FusedScorer.build(model, "cpu", "auto")
    exact = FusedScorer.build(model, "cpu", "float32")
    assert fast.dtype == torch.bfloat16 and exact.dtype == torch.float32
    torch.manual_seed(3)
    x = torch.randn(1, INPUT_CHANNELS, 336, 336).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        whole = fast(x)
        assert whole.dtype == torch.float32
        difference = (whole - exact(x)).abs()
        assert 0 < difference.max() < 0.05 and difference.mean() < 0.005
        # each score depends only on its surroundings (103 px): a window, or the same
        # pixels in a tile that starts elsewhere on the pooling grid, give the same scores
        window = fast(x, (120, 192, 120, 160))
        assert torch.equal(window[:, 120:192, 120:160], whole[:, 120:192, 120:160])
        shifted = fast(x[:, :, 8:, 12:], (112, 184, 108, 148))
        assert torch.equal(shifted[:, 112:184, 108:148], whole[:, 120:192, 120:160])


def test_precision_settings(monkeypatch):
    assert fused_module.convolution_dtype("float32") == torch.float32
    with pytest.raises(ValueError, match="Unknown precision 'half'"):
        fused_module.convolution_dtype("half")
    # a CPU without native bfloat16: auto means float32, bfloat16 is refused
    monkeypatch.setattr(fused_module, "native_bfloat16", lambda: False)
    assert fused_module.convolution_dtype("auto") == torch.float32
    assert FusedScorer.build(load_detector(), "cpu", "auto").dtype == torch.float32
    with pytest.raises(ValueError, match="no native bfloat16"):
        fused_module.convolution_dtype("bfloat16")
