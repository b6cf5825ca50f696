"""Running the bundled detector: on an in-memory array, or over a raster file by tiles.

The per-raster spectral reduction is fitted once from streaming band statistics
(exact mean and covariance over every valid pixel), then each padded tile is mapped
to the network's input channels and scored. Nodata and non-finite pixels are fed as
the raster mean and written as nodata by the engine.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from . import engine
from .engine import RasterInputError
from .features import INPUT_CHANNELS, SpectralReduction, fit_from_array
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


THREADS_ENV = "ANOMALY_DETECTOR_TORCH_THREADS"


def use_all_cores() -> int:
    """Let torch use every core (it may default to fewer), or ``$ANOMALY_DETECTOR_TORCH_THREADS``
    threads (set by the batch runner, which shares the cores between its workers)."""
    wanted = os.environ.get(THREADS_ENV, "").strip()
    if wanted.isdigit() and int(wanted) > 0:
        torch.set_num_threads(int(wanted))
        return torch.get_num_threads()
    cores = os.cpu_count() or 1
    if torch.get_num_threads() < cores:
        torch.set_num_threads(cores)
    return torch.get_num_threads()


class _FusedForward:
    """``DeviationNet.score`` computed with fewer passes over memory, same weights and result.

    Each convolution and its ReLU are one oneDNN call, and the two merge convolutions
    over concatenated maps are split by input group and accumulated in place
    (``conv(cat[a, b]) = conv_a(a) + conv_b(b)``), so the concatenated maps are never
    written. The output equals ``model.score`` up to float rounding (max difference
    ~2e-7; tests/test_scale.py checks it). A model of another layout, another device or
    a missing operator falls back to the module. Measured on 2 cores: about a third
    less CPU time per pixel.
    """

    def __init__(self, model: DeviationNet) -> None:
        self.op = torch.ops.mkldnn._convolution_pointwise
        self.add_op = torch.ops.mkldnn._convolution_pointwise.binary
        self.fine = [model.fine[0], model.fine[2]]
        self.middle = [model.middle[0], model.middle[2]]
        self.coarse = [model.coarse[0], model.coarse[2], model.coarse[4]]
        self.head = model.head
        self.expand_inputs = model.expand_inputs
        width = model.fine[0].out_channels
        inputs = model.fine[0].in_channels
        # merge_middle sees cat([up(coarse), middle]); merge_fine cat([up(middle), fine, x])
        self.merge_middle = self._split(model.merge_middle[0], [model.coarse[4].out_channels,
                                                                model.middle[2].out_channels])
        self.merge_fine = self._split(model.merge_fine[0], [model.merge_middle[0].out_channels,
                                                            width, inputs])

    @staticmethod
    def _split(conv: torch.nn.Conv2d, sizes: list[int]):
        with torch.no_grad():
            weights = [w.detach().contiguous(memory_format=torch.channels_last)
                       for w in torch.split(conv.weight, sizes, dim=1)]
        return conv, weights

    def _conv(self, x: torch.Tensor, conv: torch.nn.Conv2d, relu: bool = True) -> torch.Tensor:
        return self.op(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation,
                       conv.groups, "relu" if relu else "none", [], "")

    def _merge(self, inputs: list[torch.Tensor], merge) -> torch.Tensor:
        conv, weights = merge
        acc = self.op(inputs[-1], weights[-1], conv.bias, conv.padding, conv.stride,
                      conv.dilation, 1, "none", [], "")
        for x, weight in zip(inputs[-2::-1], weights[-2::-1]):
            acc = self.add_op(x, acc, weight, None, conv.padding, conv.stride, conv.dilation, 1,
                              "add", None, None, [], "")
        return torch.relu_(acc)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv = self._conv
        x = self.expand_inputs(x)
        fine = conv(conv(x, self.fine[0]), self.fine[1])
        middle = conv(conv(F.avg_pool2d(fine, 2), self.middle[0]), self.middle[1])
        coarse = F.avg_pool2d(middle, 2)
        for layer in self.coarse:
            coarse = conv(coarse, layer)
        up = F.interpolate(coarse, size=middle.shape[-2:], mode="bilinear", align_corners=False)
        middle = self._merge([up, middle], self.merge_middle)
        up = F.interpolate(middle, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        features = self._merge([up, fine, x], self.merge_fine)
        return torch.sigmoid(conv(features, self.head, relu=False)[:, 0])

    @staticmethod
    def matches(model: DeviationNet) -> bool:
        """True when ``model`` has exactly the layout this path reproduces (checked from its
        structure, not by running it: a probe would cost a third of a second per raster)."""
        from torch import nn
        if type(model).forward is not DeviationNet.forward or \
                type(model).score is not DeviationNet.score:
            return False
        layout = {"fine": 2, "middle": 2, "coarse": 3, "merge_middle": 1, "merge_fine": 1}
        for name, convs in layout.items():
            layers = list(getattr(model, name, []))
            if len(layers) != 2 * convs or not all(
                    isinstance(layers[i], nn.Conv2d) and isinstance(layers[i + 1], nn.ReLU)
                    for i in range(0, len(layers), 2)):
                return False
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if any(c.groups != 1 or c.stride != (1, 1) or c.padding_mode != "zeros" or c.bias is None
               for c in convs) or not isinstance(model.head, nn.Conv2d):
            return False
        return (model.merge_middle[0].in_channels
                == model.coarse[4].out_channels + model.middle[2].out_channels
                and model.merge_fine[0].in_channels == model.merge_middle[0].out_channels
                + model.fine[2].out_channels + model.fine[0].in_channels)

    @classmethod
    def build(cls, model: DeviationNet, device: str):
        """The fused path when it applies to ``model`` on ``device``, else None (use the module)."""
        if device != "cpu" or not hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
            return None
        try:
            return cls(model) if cls.matches(model) else None
        except Exception:  # noqa: BLE001 - an unexpected layout or operator: use the module
            return None


_ALLOCATOR_TUNED = False


def keep_freed_memory() -> None:
    """Let glibc reuse freed feature maps instead of unmapping and re-faulting them.

    Large tensors are otherwise mmap'ed and returned to the system on every layer;
    the page faults cost ~15 % of the CPU time of a forward pass on 2 cores. Memory
    stays bounded by the engine's memory setting; :func:`release_memory` gives it
    back after a run. No effect outside glibc (Windows, macOS).
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return
    _ALLOCATOR_TUNED = True
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: feature maps from the heap
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: give back large free tops
    except (OSError, AttributeError):
        pass


def release_memory() -> None:
    """Return freed heap memory to the system (glibc ``malloc_trim``; no-op elsewhere)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class TileScorer:
    """Callable (bands (B, h, w), valid (h, w)) -> scores (h, w) float32 for one raster.

    ``score_batch`` scores several equal-shaped tiles in one forward pass; the
    engine uses it (up to ``max_batch`` tiles) and sizes its tiles with
    ``bytes_per_pixel``, the scorer's working memory per tile pixel.
    """

    max_batch = 1  # on CPU a batch is no faster than its tiles one by one (measured)
    bytes_per_pixel = 800  # measured peak of a forward pass: ~600-700 bytes per tile pixel
    prepared_bytes_per_pixel = 4 * INPUT_CHANNELS + 1  # a reduced tile and its mask

    def __init__(self, model: DeviationNet, reduction: SpectralReduction, device: str = "cpu") -> None:
        self.model = model.to(memory_format=torch.channels_last)
        self.reduction, self.device = reduction, device
        if device == "cpu":
            use_all_cores()
            keep_freed_memory()
        self._forward = _FusedForward.build(self.model, device) or self.model.score
        if device != "cpu":
            self.max_batch = 4

    def prepare(self, bands: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """The spectral reduction of one (B, h, w) tile -> (channels, h, w) float32.

        The engine runs it in its reader thread, so that only the reduced tiles (not the
        raw bands) wait in its queue."""
        return self.reduction.apply(bands, valid)

    @torch.inference_mode()
    def score_prepared(self, prepared: list[np.ndarray]) -> np.ndarray:
        """Score equal-shaped prepared tiles in one forward pass -> (N, h, w) float32."""
        height, width = prepared[0].shape[1:]
        pad_h, pad_w = _round_up(height) - height, _round_up(width) - width
        batch = np.stack(prepared) if len(prepared) > 1 else prepared[0][None]
        if pad_h or pad_w:
            batch = np.pad(batch, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="symmetric")
        tensor = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        scores = self._forward(tensor.contiguous(memory_format=torch.channels_last))
        return scores[:, :height, :width].float().cpu().numpy()

    def score_batch(self, bands: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Score (N, B, h, w) tiles (with (N, h, w) masks) -> (N, h, w) float32."""
        return self.score_prepared([self.prepare(bands[i], None if valid is None else valid[i])
                                    for i in range(bands.shape[0])])

    def __call__(self, bands: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        return self.score_batch(bands[None], None if valid is None else valid[None])[0]


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
                  is_cancelled: Callable[[], bool] | None = None,
                  memory_mb: float | None = None) -> DetectionResult:
    """Write the deviation score map of ``src_path`` to ``dst_path`` (float32 GeoTIFF).

    ``memory_mb`` is the engine's memory setting (default: ``$ANOMALY_DETECTOR_MEMORY_MB``
    or :data:`engine.DEFAULT_MEMORY_MB`); ``tile_size`` is the largest tile, smaller ones
    are used when it would not fit (the result does not depend on the tile size).
    """
    start = time.perf_counter()
    device = resolve_device(device)
    engine.open_raster_checked(src_path, bands)
    model = load_detector(weights_path, device)
    tile_size, overlap = _round_up(max(tile_size, 32)), _round_up(max(overlap, 0))

    def report(offset: float, share: float) -> Callable[[float], None] | None:
        return None if progress is None else (lambda fraction: progress(offset + share * fraction))

    mean, covariance, _ = engine.band_statistics(
        src_path, bands, progress=report(0.0, 0.1), is_cancelled=is_cancelled, memory_mb=memory_mb)
    scorer = TileScorer(model, SpectralReduction.fit(mean, covariance), device)
    try:
        engine.score_raster(src_path, dst_path, scorer, bands=bands, tile_size=tile_size,
                            overlap=overlap, align=SIZE_MULTIPLE, progress=report(0.1, 0.9),
                            is_cancelled=is_cancelled, memory_mb=memory_mb)
    finally:
        release_memory()
    return DetectionResult(device, time.perf_counter() - start, tile_size, overlap)
