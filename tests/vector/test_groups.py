"""Streaming 8-connected groups against scipy's labelling of the whole array."""

import numpy as np
import pytest
from scipy import ndimage

from anomaly_detector.model.vector.groups import GroupLabels, Groups, GroupScan

EIGHT = np.ones((3, 3), dtype=bool)


def scan(scores, flagged, rows, min_area=1, top_n=0):
    """Feed ``rows``-row strips twice: ``(ranked, label array of the kept groups' ranks)``."""
    height, width = flagged.shape
    groups = GroupScan(width, min_area, top_n)
    for y in range(0, height, rows):
        groups.add(y, scores[y:y + rows], flagged[y:y + rows])
    ranked = groups.ranked()
    labels = GroupLabels(width, ranked)
    painted = [labels.add(y, scores[y:y + rows], flagged[y:y + rows])
               for y in range(0, height, rows)]
    return ranked, np.concatenate(painted)


def expected(scores, flagged, min_area=1):
    """Every group of at least ``min_area`` pixels in rank order, from scipy's labels, and
    the label array with each of them numbered by rank."""
    labels, count = ndimage.label(flagged, structure=EIGHT)
    index = np.arange(1, count + 1)
    position = np.arange(flagged.size).reshape(flagged.shape)
    pixels = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    peaks = np.asarray(ndimage.maximum(scores, labels, index))
    # the first pixel in raster order that reaches the group's peak
    at_peak = np.where(flagged & (scores == np.r_[0.0, peaks][labels]), position, flagged.size)
    groups = Groups(np.asarray(ndimage.minimum(position, labels, index), dtype=np.int64),
                    pixels, np.asarray(ndimage.sum(scores, labels, index)), peaks,
                    np.asarray(ndimage.minimum(at_peak, labels, index), dtype=np.int64))
    big = pixels >= min_area
    groups, index = groups.take(big), index[big]
    order = groups.rank_order()
    ranked_labels = np.zeros(count + 1, dtype=np.int64)
    ranked_labels[index[order]] = np.arange(1, len(order) + 1)
    return groups.take(order), ranked_labels[labels]


def check(ranked, painted, scores, flagged, min_area=1, top_n=0):
    groups, labels = expected(scores, flagged, min_area)
    kept = len(groups.ids) if not top_n else min(top_n, len(groups.ids))
    assert ranked.found == len(groups.ids)
    for name, got, want in zip(Groups._fields, ranked.groups, groups.take(slice(0, kept))):
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=name)
    np.testing.assert_array_equal(painted, np.where(labels <= kept, labels, 0))


CASES = [  # (share flagged, rows per strip, min_area, top_n, score levels)
    (0.03, 1, 1, 0, 1000), (0.3, 2, 3, 0, 4), (0.6, 5, 1, 5, 1000), (0.85, 64, 2, 1, 4),
    (0.6, 1, 1, 0, 4), (0.3, 7, 1, 3, 1000), (0.85, 3, 1, 0, 1000), (0.03, 64, 1, 2, 4),
]


@pytest.mark.parametrize("seed, case", list(enumerate(CASES)))
def test_groups_match_whole_array_labelling(seed, case):
    # sparse noise to percolating clusters (one group over many strips), with score ties
    share, rows, min_area, top_n, levels = case
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 70, size=2)
    flagged = rng.random((height, width)) < share
    scores = np.round(rng.random((height, width)) * levels)
    ranked, painted = scan(scores, flagged, rows, min_area, top_n)
    check(ranked, painted, scores, flagged, min_area, top_n)


def test_a_group_whose_parts_meet_strips_later_is_one_group():
    # a "W": three arms open separately in the first strips and meet at the bottom, each in
    # a later strip; the best peak is on the last arm, so the group is named after (and kept
    # through) parts it absorbed
    flagged = np.zeros((40, 30), bool)
    flagged[2:30, 3] = flagged[6:30, 12] = flagged[11:36, 24] = True
    flagged[29, 3:13] = flagged[35, 12:25] = flagged[29:36, 12] = True
    flagged[20, 18] = True  # a one-pixel group between the arms
    scores = np.where(flagged, 1.0, 0.0)
    scores[12, 24] = 5.0
    scores[20, 18] = 3.0
    for rows in (1, 4, 10, 40):
        ranked, painted = scan(scores, flagged, rows, top_n=1)
        check(ranked, painted, scores, flagged, top_n=1)
        assert ranked.found == 2 and ranked.groups.ids.tolist() == [2 * 30 + 3]
        assert ranked.groups.peak_at.tolist() == [12 * 30 + 24]
        assert (painted == 1).sum() == flagged.sum() - 1 and painted[20, 18] == 0


def test_no_flagged_pixel_gives_no_group():
    ranked, painted = scan(np.zeros((5, 7)), np.zeros((5, 7), bool), 2)
    assert ranked.found == 0 and len(ranked.groups.ids) == 0 and not painted.any()
