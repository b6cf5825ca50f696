"""The contract between the tiled pipeline and a detector's tile scorer.

A scorer maps one tile ``(B, h, w)`` float32 with its validity mask ``(h, w)`` to
float32 scores ``(h, w)``. :class:`TileScorer` gives every optional part a default,
so the pipeline and the tile planner call the same methods on every scorer; a plain
function is wrapped by :func:`as_scorer`.
"""
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class TileScorer:
    """Base class of tile scorers; subclasses implement ``__call__`` and may override:

    * ``prepare(tile, valid, core)``: run by the pipeline's reader thread (e.g. a band
      reduction) so that only prepared tiles wait in its queue; ``core`` (rows y0:y1,
      columns x0:x1 of the tile) is the part whose scores are written, so a scorer may
      leave the rest of the tile's scores undefined; default: ``(tile, valid)``.
    * ``score_prepared(prepared)``: score a list of equal-shaped prepared tiles ->
      ``(N, h, w)``; default: :meth:`score_batch` of the stacked tiles, or one call.
    * ``score_batch(tiles (N, B, h, w), valids (N, h, w))`` -> ``(N, h, w)``.
    * ``max_batch``: tiles scored per call at most.
    * ``bytes_per_pixel``: working memory per tile pixel while scoring (None: the
      planner's default for the band count).
    * ``prepared_bytes_per_pixel``: memory per pixel of a prepared tile (None:
      ``prepare`` keeps the tile as read).
    """

    max_batch: int = 1
    bytes_per_pixel: Optional[float] = None
    prepared_bytes_per_pixel: Optional[float] = None

    def __call__(self, tile: np.ndarray, valid: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, tile: np.ndarray, valid: np.ndarray,
                core: Optional[Tuple[int, int, int, int]] = None):
        return tile, valid

    def score_prepared(self, prepared: Sequence) -> Union[np.ndarray, List[np.ndarray]]:
        if len(prepared) > 1:
            return self.score_batch(np.stack([p[0] for p in prepared]),
                                    np.stack([p[1] for p in prepared]))
        return [self(*prepared[0])]

    def score_batch(self, tiles: np.ndarray, valids: np.ndarray) -> np.ndarray:
        return np.stack([self(tile, valid) for tile, valid in zip(tiles, valids)])


class FunctionScorer(TileScorer):
    """A plain ``score_tile(tile, valid)`` function as a :class:`TileScorer`."""

    def __init__(self, function: ScoreFn) -> None:
        self.function = function

    def __call__(self, tile: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return self.function(tile, valid)


def as_scorer(score_tile: Union[TileScorer, ScoreFn]) -> TileScorer:
    """``score_tile`` itself when it is a :class:`TileScorer`, else wrapped in one."""
    return score_tile if isinstance(score_tile, TileScorer) else FunctionScorer(score_tile)


def zero_scorer(tile: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``score_tile`` of a raster without variation: 0 everywhere (see
    :func:`~.stats.no_variation`)."""
    return np.zeros(tile.shape[1:], np.float32)
