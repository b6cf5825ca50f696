"""Per-raster spectral reduction: any number of bands -> a fixed set of input channels.

The detector must accept 1 to 1000+ bands in any order and any data type without
retraining. Statistics (band mean and covariance) are gathered once per raster,
streaming, and turned into a fixed linear map that is applied identically to every
tile, so tiles never see per-tile normalisation and cannot show seams.

Channels produced (``INPUT_CHANNELS`` in total):
  0..K-1  the K leading principal components, whitened (unit variance over the raster),
          sign-fixed so that component 1 grows with overall brightness;
  K       the Mahalanobis (global RX) distance over all components, divided by the
          square root of the number of components, so it is comparable across band counts.
All channels are compressed by ``sign(x) * log1p(|x|)``: order-preserving, but heavy
tails (SAR, specular highlights) no longer dominate. Rasters with fewer than K bands
get zero channels for the missing components.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..linalg import CHUNK_VALUES, WhiteningKernel

LEADING_COMPONENTS = 4
INPUT_CHANNELS = LEADING_COMPONENTS + 1
_RELATIVE_EIGEN_FLOOR = 1e-9


@dataclass(frozen=True)
class SpectralReduction:
    """A fixed affine map from the raster's bands to the detector's input channels."""

    mean: np.ndarray            # (B,) float64
    leading: np.ndarray         # (B, k) whitened projection of the leading components, k <= K
    full: np.ndarray            # (B, r) whitened projection of all r non-degenerate components
    grey_level: float = 0.0     # variance of one grey level of the bands (0: unknown)

    @classmethod
    def fit(cls, mean: np.ndarray, covariance: np.ndarray, grey_level: float = 0.0
            ) -> "SpectralReduction":
        """Build the map from a raster's band mean (B,) and covariance (B, B).

        ``grey_level``: the variance of one grey level of integer bands (0: unknown). When
        every component after the first varies less than that, the bands are copies of one
        image up to rounding (a grey image stored in several bands): only the first is kept,
        so that rounding differences between the copies are not whitened into evidence.
        """
        mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        cov = np.asarray(covariance, dtype=np.float64).reshape(mean.size, mean.size)
        cov = (cov + cov.T) / 2.0
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
        top = max(float(eigenvalues[0]), 0.0)
        keep = eigenvalues > max(top * _RELATIVE_EIGEN_FLOOR, 1e-20)
        eigenvalues, eigenvectors = eigenvalues[keep], eigenvectors[:, keep]
        if eigenvalues.size > 1 and eigenvalues[1] < grey_level:
            eigenvalues, eigenvectors = eigenvalues[:1], eigenvectors[:, :1]
        # A principal axis has no intrinsic sign: orient each towards the brighter side.
        signs = np.where(eigenvectors.sum(axis=0) < 0, -1.0, 1.0)
        whitened = eigenvectors * signs / np.sqrt(eigenvalues)
        return cls(mean=mean, leading=whitened[:, :LEADING_COMPONENTS], full=whitened,
                   grey_level=grey_level)

    @property
    def band_count(self) -> int:
        return int(self.mean.size)

    @property
    def grey_step(self) -> float:
        """One grey level along component 1, in whitened units: its change when every band
        rises by one grey level (0 when the grey level is unknown)."""
        if not self.leading.shape[1]:
            return 0.0
        return float(np.sqrt(self.grey_level) * abs(self.leading[:, 0].sum()))

    @cached_property
    def _kernel(self) -> WhiteningKernel:
        """The projection of all components as a :class:`WhiteningKernel` (float32 unless
        the components are too ill-conditioned), derived once per raster."""
        return WhiteningKernel.fit(self.full.T, self.mean)

    def apply(self, bands: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Map a (B, h, w) block to (INPUT_CHANNELS, h, w) float32; invalid pixels become 0.

        Pixels are processed in cache-sized chunks (bounded temporaries), by
        :class:`WhiteningKernel` (within about 1e-4 of float64).
        """
        count, height, width = bands.shape
        if count != self.band_count:
            raise ValueError(f"expected {self.band_count} bands, got {count}")
        kernel = self._kernel
        size = height * width
        flat = bands.reshape(count, size)
        valid_flat = None if valid is None else valid.reshape(size)
        rank, k = kernel.rank, self.leading.shape[1]
        channels = np.zeros((INPUT_CHANNELS, size), dtype=np.float32)
        step = max(1024, CHUNK_VALUES // max(count, rank, 1))
        for start in range(0, size if rank else 0, step):
            stop = min(size, start + step)
            components = kernel.apply(flat[:, start:stop])
            if valid_flat is not None:
                components[:, ~valid_flat[start:stop]] = 0.0
            block = channels[:, start:stop]
            block[:k] = components[:k]
            components *= components
            distance = components.sum(axis=0)
            distance /= rank
            block[LEADING_COMPONENTS] = np.sqrt(distance)
        magnitude = np.abs(channels)
        np.log1p(magnitude, out=magnitude)
        np.copysign(magnitude, channels, out=magnitude)
        return magnitude.reshape(INPUT_CHANNELS, height, width)


def grey_level_variance(integer: bool, scale: int = 1) -> float:
    """:meth:`SpectralReduction.fit`'s ``grey_level``: one grey level squared for integer
    bands, averaged over ``scale`` x ``scale`` blocks (the variance of rounding falls with
    the block's pixel count); 0 (unknown) for float bands."""
    return 1.0 / scale ** 2 if integer else 0.0


def fit_from_array(bands: np.ndarray, valid: np.ndarray | None = None,
                   grey_level: float | None = None) -> SpectralReduction:
    """Fit the reduction on an in-memory (B, h, w) array (training crops, small scenes); an
    integer array is reduced as a raster of integer bands is, unless ``grey_level`` says
    otherwise (see :meth:`SpectralReduction.fit`)."""
    if grey_level is None:
        grey_level = grey_level_variance(np.issubdtype(bands.dtype, np.integer))
    pixels = bands.reshape(bands.shape[0], -1).astype(np.float64)
    if valid is not None:
        pixels = pixels[:, valid.reshape(-1)]
    pixels = pixels[:, np.isfinite(pixels).all(axis=0)]
    if pixels.shape[1] == 0:
        raise ValueError("no valid pixels to fit the spectral reduction")
    mean = pixels.mean(axis=1)
    centred = pixels - mean[:, None]
    covariance = centred @ centred.T / max(pixels.shape[1] - 1, 1)
    return SpectralReduction.fit(mean, covariance, grey_level)
