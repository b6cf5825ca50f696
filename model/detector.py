"""Running the bundled detector: on an in-memory array, or over a raster file by tiles.

The per-raster spectral reduction is fitted once from streaming band statistics
(exact mean and covariance over every valid pixel), then each padded tile is mapped
to the network's input channels and scored. Nodata and non-finite pixels are fed as
the raster mean and written as nodata by the engine.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from . import engine
from .engine import RasterInputError
from .features import SpectralReduction, fit_from_array
from .network import SIZE_MULTIPLE, DeviationNet
from .weights import WeightsError, load_detector

__all__ = ["DetectionResult", "RasterInputError", "TileScorer", "WeightsError", "detect_raster",
           "resolve_device", "score_array"]

DEFAULT_TILE_SIZE = 512
DEFAULT_OVERLAP = 64


def resolve_device(requested: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is usable, else 'cpu'; refuses an unusable 'cuda'."""
    requested = (requested or "auto").lower()
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"Unknown device '{requested}': use auto, cpu or cuda.")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("DEVICE is 'cuda' but PyTorch sees no CUDA GPU on this machine: "
                         "choose 'auto' or 'cpu', or install a CUDA build of PyTorch.")
    return requested


def _round_up(value: int, multiple: int = SIZE_MULTIPLE) -> int:
    return -(-int(value) // multiple) * multiple


class TileScorer:
    """Callable (bands (B, h, w), valid (h, w)) -> scores (h, w) float32 for one raster."""

    def __init__(self, model: DeviationNet, reduction: SpectralReduction, device: str = "cpu") -> None:
        self.model = model.to(memory_format=torch.channels_last)
        self.reduction, self.device = reduction, device

    @torch.inference_mode()
    def __call__(self, bands: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        channels = self.reduction.apply(bands, valid)
        height, width = channels.shape[1:]
        pad_h, pad_w = _round_up(height) - height, _round_up(width) - width
        if pad_h or pad_w:
            channels = np.pad(channels, ((0, 0), (0, pad_h), (0, pad_w)), mode="symmetric")
        tensor = torch.from_numpy(np.ascontiguousarray(channels))[None].to(self.device)
        scores = self.model.score(tensor.contiguous(memory_format=torch.channels_last))
        return scores[0, :height, :width].float().cpu().numpy()


def score_array(model: DeviationNet, image: np.ndarray, valid: np.ndarray | None = None,
                device: str = "cpu") -> np.ndarray:
    """Score a whole in-memory (B, H, W) image in one pass (small scenes, validation)."""
    reduction = fit_from_array(image, valid)
    return TileScorer(model, reduction, device)(image, valid)


@dataclass
class DetectionResult:
    device: str
    seconds: float
    tile_size: int
    overlap: int


def detect_raster(src_path: str, dst_path: str, *, bands: Sequence[int] | None = None,
                  tile_size: int = DEFAULT_TILE_SIZE, overlap: int = DEFAULT_OVERLAP,
                  device: str = "auto", weights_path: str | None = None,
                  progress: Callable[[float], None] | None = None,
                  is_cancelled: Callable[[], bool] | None = None) -> DetectionResult:
    """Write the deviation score map of ``src_path`` to ``dst_path`` (float32 GeoTIFF)."""
    start = time.perf_counter()
    device = resolve_device(device)
    engine.open_raster_checked(src_path, bands)
    model = load_detector(weights_path, device)
    tile_size, overlap = _round_up(max(tile_size, 32)), _round_up(max(overlap, 0))

    def report(offset: float, share: float) -> Callable[[float], None] | None:
        return None if progress is None else (lambda fraction: progress(offset + share * fraction))

    mean, covariance, _ = engine.band_statistics(
        src_path, bands, progress=report(0.0, 0.1), is_cancelled=is_cancelled)
    scorer = TileScorer(model, SpectralReduction.fit(mean, covariance), device)
    engine.score_raster(src_path, dst_path, scorer, bands=bands, tile_size=tile_size,
                        overlap=overlap, align=SIZE_MULTIPLE, progress=report(0.1, 0.9), is_cancelled=is_cancelled)
    return DetectionResult(device, time.perf_counter() - start, tile_size, overlap)
