"""Evaluation metrics and classic baselines against small hand-computed examples."""

import math

import numpy as np
import pytest

from anomaly_detector.model.classic import baselines
from anomaly_detector.model.training.evaluate import main, report, roc_auc, summarise
from anomaly_detector.model.training.objects import MISSED, ObjectScores, bootstrap_intervals, object_scores
from conftest import write_raster


def _two_targets():
    """20 x 20 mask with a 1-pixel target at (5, 5) and a 1 x 2 target at (15, 15)."""
    mask = np.zeros((20, 20), bool)
    mask[5, 5] = True
    mask[15, 15:17] = True
    return mask


def test_top_group_missing_the_target_gives_hit1_zero():
    # fraction 0.01 of 400 pixels flags 4: groups ranked 10 (far), 9 (beside target 1), 8 (far)
    score = np.zeros((20, 20))
    score[0, 19], score[5, 6], score[12, 2:4] = 10, 9, 8
    assert object_scores(score, _two_targets(), 0.01) == ObjectScores(0.5, 0.5, 0)


def test_perfect_ranking_and_eight_connected_groups():
    score = np.zeros((20, 20))
    score[5, 5], score[6, 6] = 5, 4      # diagonal neighbours: one group on target 1
    score[15, 15], score[15, 16] = 3, 3  # target 2
    assert object_scores(score, _two_targets(), 0.01) == ObjectScores(1.0, 1.0, 1)


def test_fewer_groups_than_targets_and_invalid_pixels():
    score = np.full((20, 20), np.nan)
    score[:, :10] = 0.0                  # 200 valid pixels: 0.01 flags 2
    score[0, 0:2] = 7                    # one group, far from both targets
    assert object_scores(score, _two_targets(), 0.01) == ObjectScores(0.0, 0.0, 0)
    score[0, 1] = 0
    score[5, 5] = 6                      # two groups: a miss ranked first, then target 1
    assert object_scores(score, _two_targets(), 0.01) == ObjectScores(0.5, 0.5, 0)


def test_no_target_or_no_valid_pixel():
    assert object_scores(np.ones((4, 4)), np.zeros((4, 4), bool)) is None
    assert object_scores(np.full((20, 20), np.nan), _two_targets()) == MISSED


def test_bootstrap_intervals_contain_the_means_and_are_reproducible():
    rng = np.random.default_rng(3)
    groups = {"a": rng.uniform(size=12), "b": rng.uniform(size=5),
              "c": np.array([0.7, 0.7, np.nan])}
    intervals, macro = bootstrap_intervals(groups, resamples=500, seed=1)
    for name, values in groups.items():
        low, high = intervals[name]
        assert low <= np.nanmean(values) <= high
    assert intervals["c"] == pytest.approx((0.7, 0.7))
    assert macro[0] <= np.mean([np.nanmean(v) for v in groups.values()]) <= macro[1]
    assert bootstrap_intervals(groups, resamples=500, seed=1) == (intervals, macro)


def test_roc_auc_and_summarise():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert roc_auc([np.nan, 1.0], [1, 0]) == 0.0
    rows = [{"modality": "a", "auc": 1.0}, {"modality": "a", "auc": math.nan},
            {"modality": "b", "auc": 0.5}, {"modality": "b", "auc": 0.7}]
    assert summarise(rows, "auc") == pytest.approx({"a": 1.0, "b": 0.6, "mean_of_modalities": 0.8})


def test_box_sums_clip_at_the_border():
    expected = np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]], float)
    np.testing.assert_array_equal(baselines.box_sum(np.ones((3, 3)), 1), expected)
    np.testing.assert_array_equal(baselines.box_count(3, 3, 1), expected)


def test_fill_nonfinite_uses_the_band_mean():
    image = np.array([[[1.0, np.nan], [3.0, np.inf]], [[np.nan] * 2] * 2])
    np.testing.assert_array_equal(baselines.fill_nonfinite(image)[0], [[1, 2], [3, 2]])
    np.testing.assert_array_equal(baselines.fill_nonfinite(image)[1], 0)


def test_global_rx_by_hand():
    np.testing.assert_allclose(baselines.global_rx(np.array([[[0.0, 0.0], [0.0, 4.0]]])),
                               np.array([[1, 1], [1, 3]]) / math.sqrt(3))
    image = np.random.default_rng(0).normal(size=(3, 6, 5))
    pixels = image.reshape(3, -1)
    centred = pixels - pixels.mean(axis=1, keepdims=True)
    expected = np.einsum("in,ij,jn->n", centred, np.linalg.pinv(np.cov(pixels)), centred)
    np.testing.assert_allclose(baselines.global_rx(image).ravel(), expected)


def _spike(size=9):
    image = np.zeros((1, size, size))
    image[0, size // 2, size // 2] = 1.0
    return image


def test_local_rx_one_band_by_hand():
    # whitened spike: 1 / sd above a flat background; the guard is the pixel, the ring its 8
    # neighbours (no variance), so the centre scores (1 / sd)^2 / ridge
    sd = _spike().std(ddof=1)
    scores = baselines.local_rx(_spike(), inner=1, outer=3, ridge=0.01)
    assert scores[4, 4] == pytest.approx((1 / sd) ** 2 / 0.01, rel=1e-4)
    assert scores.argmax() == 40


def test_local_rx_matches_the_definition_pixel_by_pixel():
    image = np.random.default_rng(1).normal(size=(2, 9, 8))
    scores = baselines.local_rx(image, inner=3, outer=7, ridge=0.1)
    whitened = baselines.whiten(image, 10)
    np.testing.assert_allclose(np.cov(whitened.reshape(-1, 2).T), np.eye(2), atol=1e-12)
    for y, x in [(0, 0), (4, 4), (8, 7), (2, 6)]:
        ring = [whitened[j, i] for j in range(max(0, y - 3), min(9, y + 4))
                for i in range(max(0, x - 3), min(8, x + 4)) if max(abs(j - y), abs(i - x)) > 1]
        ring = np.array(ring)
        mean = ring.mean(axis=0)
        covariance = np.cov(ring.T, bias=True) + 0.1 * np.eye(2)
        deviation = whitened[y, x] - mean
        assert scores[y, x] == pytest.approx(deviation @ np.linalg.solve(covariance, deviation))


def test_local_contrast_by_hand():
    # scale 1: centre = the spike, ring (3 x 3 .. 7 x 7) flat background -> spike contrast / eps
    image = _spike(15)
    scores = baselines.local_contrast(image, scales=(1, 3), eps=0.01)
    assert scores[7, 7] == pytest.approx(1 / image.std() / 0.01, rel=1e-4)
    assert scores.argmax() == 7 * 15 + 7


def test_report_counts_wins_and_prints_both_tables():
    rows = [{"modality": m, "scene": f"s{i}",
             "detector_auc": 0.9, "rx_auc": a, "detector_rprec": 1.0, "rx_rprec": r,
             "detector_recall": 1.0, "rx_recall": r, "detector_hit1": 1.0, "rx_hit1": r}
            for i, (m, a, r) in enumerate([("x", 0.8, 1.0), ("x", 0.95, 0.0), ("y", 0.9, 0.5)])]
    text = report(rows, ("detector", "rx"), 0.005, 200, 0)
    assert "Pixel ROC AUC" in text and "R-precision" in text
    wins = text.splitlines()[-1].split()
    assert wins == ["all", "1/1/1", "2/1/0"]


def test_evaluate_baselines_on_synthetic_scenes(tmp_path, capsys):
    rng = np.random.default_rng(2)
    for modality, bands in (("one", 1), ("three", 3)):
        for scene in ("a", "b"):
            folder = tmp_path / "data" / modality / scene
            folder.mkdir(parents=True)
            image = rng.normal(100, 5, (bands, 40, 40)).astype(np.float32)
            image[:, 10:12, 20:22] += 60
            mask = np.zeros((40, 40), np.uint8)
            mask[10:12, 20:22] = 1
            write_raster(folder / "image.tif", image)
            write_raster(folder / "mask.tif", mask)
    out = tmp_path / "out"
    assert main([str(tmp_path / "data"), "--out", str(out), "--methods", "rx,lcm",
                 "--limit", "1", "--resamples", "100"]) == 0
    lines = (out / "evaluation.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:7] == ["modality", "scene", "rx_auc", "rx_rprec", "rx_recall",
                                        "rx_hit1", "rx_seconds"]
    assert len(lines) == 3  # --limit 1: one scene per modality
    for line in lines[1:]:
        values = dict(zip(lines[0].split("\t"), line.split("\t")))
        assert float(values["rx_auc"]) == 1.0 and float(values["rx_hit1"]) == 1.0
    assert sorted(p.relative_to(out).as_posix() for p in (out / "maps").rglob("*.tif")) == [
        "maps/lcm/one/a.tif", "maps/lcm/three/a.tif", "maps/rx/one/a.tif", "maps/rx/three/a.tif"]
    assert "mean_of_modalities" in capsys.readouterr().out
