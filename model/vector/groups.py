"""Streaming 8-connected groups of flagged pixels, ranked by their peak score.

QGIS-free (numpy only). Strips of whole rows are fed in raster order. Each strip's
flagged pixels are cut into horizontal runs; runs of consecutive rows that touch
(8-connected) are joined by a vectorised union-find, and so are runs that touch a
group left open by the strip above. A group that reaches the strip's last row stays
open; the others are closed: counted, and kept only while they rank among the best
``top_n``.

Memory and time do not grow with the number of groups: between strips only the open
groups (fewer than half a row's pixels) and the best ``top_n`` closed ones are held,
as numpy arrays; the others are counted and forgotten. ``top_n = 0`` keeps every
group (a few dozen bytes each).

A group is named by its first pixel in raster order (``row * width + col``), which
does not depend on the strip height. Groups rank by peak score (highest first), then
by size (largest first), then by that first pixel. When groups that were open
separately meet in a later strip, the merged group keeps the smaller name and the
other one is remembered with it: :class:`GroupLabels` replays the same strips and
paints the pixels of the kept groups with their rank, so that only those are
polygonised.
"""
from __future__ import annotations

from typing import List, NamedTuple, Tuple

import numpy as np

STRIP_PIXELS = 1 << 20
"""Pixels per strip of whole rows (at least one row)."""

_NO_INT = np.empty(0, np.int64)


def strip_rows(width: int) -> int:
    """Rows per strip of a raster ``width`` pixels wide."""
    return max(1, STRIP_PIXELS // max(1, int(width)))


class Groups(NamedTuple):
    """Parallel arrays, one entry per group."""

    ids: np.ndarray        # first pixel in raster order, row * width + col
    pixels: np.ndarray     # number of pixels
    score_sum: np.ndarray  # sum of their scores
    peak: np.ndarray       # highest score
    peak_at: np.ndarray    # its pixel, row * width + col (the first in raster order on ties)

    @classmethod
    def empty(cls) -> "Groups":
        return cls(_NO_INT, _NO_INT, np.empty(0), np.empty(0), _NO_INT)

    def take(self, index) -> "Groups":
        return Groups(*(field[index] for field in self))

    @staticmethod
    def concat(parts: List["Groups"]) -> "Groups":
        return Groups(*(np.concatenate(fields) for fields in zip(*parts)))

    def rank_order(self) -> np.ndarray:
        """Indices from the most anomalous group on: peak, then size, then first pixel."""
        return np.lexsort((self.ids, -self.pixels, -self.peak))


class Ranked(NamedTuple):
    """The kept groups of a :class:`GroupScan`, most anomalous first (rank = index + 1)."""

    groups: Groups
    found: int           # groups of at least ``min_area`` pixels, kept or not
    names: np.ndarray    # sorted: every name a kept group had while it was open
    ranks: np.ndarray    # the rank of the group each name belongs to


# --------------------------------------------------------------------------
# vectorised pieces

class FlaggedStrip(NamedTuple):
    """The flagged pixels of a strip of whole rows: what grouping needs of it."""

    y0: int             # its first row in the raster
    height: int         # its rows
    index: np.ndarray   # flat positions of its flagged pixels in the strip, raster order
    values: np.ndarray  # their scores

    @classmethod
    def of(cls, y0: int, values: np.ndarray, flagged: np.ndarray) -> "FlaggedStrip":
        """The strip of rows from ``y0`` on with scores ``values`` and bool ``flagged``."""
        index = np.flatnonzero(flagged)
        return cls(int(y0), flagged.shape[0], index, np.asarray(values).reshape(-1)[index])


def _runs(index: np.ndarray, width: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row, start, end)`` of the horizontal runs of flagged pixels at the sorted flat
    positions ``index`` of a raster ``width`` pixels wide (end exclusive), raster order."""
    if not index.size:
        return _NO_INT, _NO_INT, _NO_INT
    rows, columns = np.divmod(index.astype(np.int64, copy=False), width)
    first = np.flatnonzero(np.r_[True, (index[1:] != index[:-1] + 1) | (columns[1:] == 0)])
    last = np.r_[first[1:], index.size] - 1
    return rows[first], columns[first], columns[last] + 1


def _touching(row: np.ndarray, start: np.ndarray, end: np.ndarray, width: int):
    """Pairs ``(i, j)`` of runs in consecutive rows (``row[j] = row[i] + 1``) that touch
    8-connectedly; the runs are in raster order."""
    stride = width + 2  # row * stride + col orders the runs like the raster
    lo = np.searchsorted(row * stride + end, (row - 1) * stride + start, side="left")
    hi = np.searchsorted(row * stride + start, (row - 1) * stride + end, side="right")
    count = np.maximum(hi - lo, 0)
    j = np.repeat(np.arange(len(row)), count)
    first = np.cumsum(count) - count
    i = np.repeat(lo, count) + np.arange(len(j)) - np.repeat(first, count)
    return i, j


def _join(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest node of each node's component in a graph of ``n`` nodes and edges
    ``(a, b)``: larger roots are hooked onto smaller ones, then paths are halved until
    every node points at its root."""
    parent = np.arange(n)
    while a.size:
        ra, rb = parent[a], parent[b]
        apart = ra != rb
        if not apart.any():
            break
        a, b, ra, rb = a[apart], b[apart], ra[apart], rb[apart]
        parent[np.maximum(ra, rb)] = np.minimum(ra, rb)  # any smaller root will do
        while True:
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up
    return parent


def _run_groups(values: np.ndarray, lengths: np.ndarray, first: np.ndarray) -> Groups:
    """Each run as a group: ``values`` are the flagged pixels' scores in raster order."""
    if not len(lengths):
        return Groups.empty()
    offsets = np.cumsum(lengths) - lengths
    peaks = np.maximum.reduceat(values, offsets)
    run_of = np.repeat(np.arange(len(lengths)), lengths)
    at_peak = np.flatnonzero(values == peaks[run_of])
    leading = at_peak[np.r_[True, run_of[at_peak[1:]] != run_of[at_peak[:-1]]]]
    return Groups(first, lengths, np.add.reduceat(values, offsets, dtype=np.float64), peaks,
                  first + leading - offsets)


def _merge(nodes: Groups, roots: np.ndarray, component: np.ndarray) -> Groups:
    """Per component: its name (that of its root, the node of smallest name), total pixels
    and score sum, and the highest peak (the first pixel in raster order on ties)."""
    count = len(roots)
    if not count:
        return Groups.empty()
    order = np.lexsort((nodes.peak_at, -nodes.peak, component))
    best = order[np.r_[True, component[order][1:] != component[order][:-1]]]
    return Groups(nodes.ids[roots],
                  np.bincount(component, nodes.pixels, count).astype(np.int64),
                  np.bincount(component, nodes.score_sum, count),
                  nodes.peak[best], nodes.peak_at[best])


# --------------------------------------------------------------------------

class _Components:
    """The groups of the strips fed so far; those touching the last row fed stay open."""

    def __init__(self, width: int) -> None:
        self.width = int(width)
        self.open = Groups.empty()  # sorted by name
        self.run_start = self.run_end = self.run_group = _NO_INT  # open runs of the row above
        self.absorbed = self.absorbed_into = _NO_INT  # names merged into an open group (index)

    def add(self, strip: FlaggedStrip):
        """Join the next strip. Returns the name of each run's group, the runs' lengths
        (raster order), the groups it closed and ``(names, group names)`` of the names
        those had absorbed."""
        rows, starts, ends = _runs(strip.index, self.width)
        lengths = ends - starts
        runs = _run_groups(strip.values, lengths, (strip.y0 + rows) * self.width + starts)
        n_open = len(self.open.ids)
        above = np.full(len(self.run_start), -1)
        i, j = _touching(np.r_[above, rows], np.r_[self.run_start, starts],
                         np.r_[self.run_end, ends], self.width)
        # nodes: the open groups (sorted by name), then the runs (raster order): a node's
        # name grows with its index, so a component's smallest node carries its name
        node = np.r_[self.run_group, n_open + np.arange(len(rows))]
        roots, component = np.unique(_join(n_open + len(rows), node[i], node[j]),
                                     return_inverse=True)
        merged = _merge(Groups.concat([self.open, runs]), roots, component)
        last = rows == strip.height - 1
        stays = np.zeros(len(roots), bool)
        stays[component[n_open:][last]] = True
        renamed = np.flatnonzero(merged.ids[component[:n_open]] != self.open.ids)
        names = np.r_[self.absorbed, self.open.ids[renamed]]
        into = component[np.r_[self.absorbed_into, renamed]]
        kept = stays[into]
        position = np.cumsum(stays) - 1
        self.absorbed, self.absorbed_into = names[kept], position[into[kept]]
        self.open = merged.take(stays)
        self.run_start, self.run_end = starts[last], ends[last]
        self.run_group = position[component[n_open:][last]]
        closed_names = (names[~kept], merged.ids[into[~kept]])
        return merged.ids[component[n_open:]], lengths, merged.take(~stays), closed_names

    def finish(self):
        """Close the groups still open: ``(groups, (names, group names))``."""
        closed = (self.open, (self.absorbed, self.open.ids[self.absorbed_into]))
        self.__init__(self.width)
        return closed


class GroupScan:
    """Counts the groups of at least ``min_area`` pixels and keeps the best ``top_n``
    (all with 0); feed the strips with :meth:`add`, then call :meth:`ranked` once."""

    def __init__(self, width: int, min_area: int = 1, top_n: int = 0) -> None:
        self._components = _Components(width)
        self.min_area, self.top_n = max(1, int(min_area)), max(0, int(top_n))
        self._groups: List[Groups] = []
        self._names: List[Tuple[np.ndarray, np.ndarray]] = []
        self._held = self.found = 0

    def add(self, y0: int, values: np.ndarray, flagged: np.ndarray) -> None:
        """Feed the strip of rows from ``y0`` on (``values``: scores, ``flagged``: bool)."""
        self.add_strip(FlaggedStrip.of(y0, values, flagged))

    def add_strip(self, strip: FlaggedStrip) -> None:
        """Feed the next strip."""
        self._keep(*self._components.add(strip)[2:])

    def _keep(self, closed: Groups, absorbed) -> None:
        closed = closed.take(closed.pixels >= self.min_area)
        names, into = absorbed
        inside = np.isin(into, closed.ids)
        self._groups.append(closed)
        self._names.append((names[inside], into[inside]))
        self.found += len(closed.ids)
        self._held += len(closed.ids)
        if self.top_n and self._held > self.top_n:
            self._trim()

    def _trim(self):
        """Keep the best ``top_n`` groups held (all with 0), in rank order."""
        groups = Groups.concat(self._groups)
        groups = groups.take(groups.rank_order()[:self.top_n or None])
        names, into = (np.concatenate(parts) for parts in zip(*self._names))
        inside = np.isin(into, groups.ids)
        self._groups, self._names = [groups], [(names[inside], into[inside])]
        self._held = len(groups.ids)
        return groups, names[inside], into[inside]

    def ranked(self) -> Ranked:
        """The kept groups in rank order, once every strip was fed."""
        self._keep(*self._components.finish())
        groups, names, into = self._trim()
        ranks = np.arange(1, len(groups.ids) + 1)
        by_name = np.argsort(groups.ids)
        into_rank = ranks[by_name][np.searchsorted(groups.ids[by_name], into)]
        all_names, all_ranks = np.r_[groups.ids, names], np.r_[ranks, into_rank]
        order = np.argsort(all_names)
        return Ranked(groups, self.found, all_names[order], all_ranks[order])


class GroupLabels:
    """Replays the strips of a :class:`GroupScan` and returns, per strip, the rank of each
    pixel's group where that group was kept (0 elsewhere)."""

    def __init__(self, width: int, ranked: Ranked) -> None:
        self._components = _Components(width)
        self._names, self._ranks = ranked.names, ranked.ranks

    def add(self, y0: int, values: np.ndarray, flagged: np.ndarray) -> np.ndarray:
        """An int32 array of the strip's shape: ranks of kept groups, 0 elsewhere."""
        labels = np.zeros(flagged.size, np.int32)
        strip = FlaggedStrip.of(y0, values, flagged)
        labels[strip.index] = self.ranks(strip)
        return labels.reshape(flagged.shape)

    def ranks(self, strip: FlaggedStrip) -> np.ndarray:
        """The rank of each flagged pixel's group in the next strip (0: not kept)."""
        names, lengths, _, _ = self._components.add(strip)
        if not (len(self._names) and len(names)):
            return np.zeros(strip.index.size, np.int32)
        at = np.minimum(np.searchsorted(self._names, names), len(self._names) - 1)
        rank = np.where(self._names[at] == names, self._ranks[at], 0)
        return np.repeat(rank, lengths).astype(np.int32, copy=False)
