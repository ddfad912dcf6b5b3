"""Per-modality intensity normalisation with MedicalZoo's option names.

Every mode first clips each channel to its (0.1, 99.8) percentiles (`np.percentile`, linear
interpolation, over the whole volume including background), like MedicalZoo's
`percentile_clip`; pass `clip_percentiles=None` to skip the clip. With x the clipped channel:

- `full_volume_mean`: (x - mean(x)) / std(x) over all voxels.
- `max_min`: (x - min(x)) / (max(x) - min(x)), in [0, 1].
- `mean`: (x - m) / s, with m, s the mean and std of the non-zero voxels, applied to all voxels.
- `max`: x / max(|x|) (MedicalZoo crashes on this mode).
- `brats`: on non-zero voxels z = (x - m) / s as in `mean`, then
  100 (z - min z) / (max z - min z) + 10, in [10, 110]; zero voxels stay 0.
- `none`: x.

Standard deviations are population ones (ddof=0). A zero denominator (a constant channel) is
replaced by 1, so such a channel maps to 0 instead of NaN.

The normaliser of a channel is an affine map of the clipped values, fixed by a few volume
statistics (`volume_stats`). Storing those statistics beside a crop lets
`normalize_with_stats(crop, stats, mode)` reproduce exactly the crop of the normalised volume;
the `subvolumes` dataset configs rely on this.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MODES = ("full_volume_mean", "max_min", "mean", "max", "brats", "none")
DEFAULT_CLIP_PERCENTILES = (0.1, 99.8)
# The fields of `volume_stats`, in order. All but the clip bounds are of the clipped channel;
# `nz_*` are over its non-zero voxels.
STATS_FIELDS = ("clip_low", "clip_high", "mean", "std", "min", "max",
                "nz_mean", "nz_std", "nz_min", "nz_max")
NUM_STATS = len(STATS_FIELDS)


def _check_mode(mode: str) -> None:
  if mode not in MODES:
    raise ValueError(f"normalization must be one of {MODES}, got {mode!r}.")


def _check_percentiles(clip_percentiles: Sequence[float] | None) -> None:
  if clip_percentiles is None:
    return
  if len(clip_percentiles) != 2 or not 0 <= clip_percentiles[0] <= clip_percentiles[1] <= 100:
    raise ValueError(
        f"clip_percentiles must be (low, high) with 0 <= low <= high <= 100, got "
        f"{tuple(clip_percentiles)}.")


def volume_stats(channel: np.ndarray,
                 clip_percentiles: Sequence[float] | None = DEFAULT_CLIP_PERCENTILES
                 ) -> np.ndarray:
  """The statistics that fix every normaliser of one channel.

  Args:
    channel: `[...]` intensities of one modality (usually a whole volume `[D, H, W]`).
    clip_percentiles: (low, high) percentiles to clip to, or None for no clip.

  Returns:
    `[NUM_STATS]` float64, fields in STATS_FIELDS order. Without non-zero voxels the `nz_*`
    fields are (0, 1, 0, 0); without clipping the bounds are (-inf, inf).
  """
  _check_percentiles(clip_percentiles)
  x = np.asarray(channel, dtype=np.float64).ravel()
  if x.size == 0:
    raise ValueError("cannot normalise an empty channel.")
  if clip_percentiles is None:
    lo, hi = -np.inf, np.inf
  else:
    lo, hi = np.percentile(x, clip_percentiles)
    x = np.clip(x, lo, hi)
  nz = x[x != 0]
  if nz.size:
    nz_stats = (nz.mean(), nz.std(), nz.min(), nz.max())
  else:
    nz_stats = (0.0, 1.0, 0.0, 0.0)
  return np.array((lo, hi, x.mean(), x.std(), x.min(), x.max()) + nz_stats, dtype=np.float64)


def _nonzero(d: float) -> float:
  return d if d != 0 else 1.0


def normalize_with_stats(channel: np.ndarray, stats: np.ndarray, mode: str) -> np.ndarray:
  """Normalises one channel (or any crop of it) with its volume's `volume_stats`.

  Args:
    channel: `[...]` raw intensities of one modality.
    stats: `[NUM_STATS]` from `volume_stats` of the whole volume.
    mode: one of MODES.

  Returns:
    float32 array of `channel`'s shape; see the module docstring for the formulas.
  """
  _check_mode(mode)
  stats = np.asarray(stats, dtype=np.float64)
  if stats.shape != (NUM_STATS,):
    raise ValueError(f"stats must have shape ({NUM_STATS},), got {stats.shape}.")
  lo, hi, mean, std, vmin, vmax, nz_mean, nz_std, nz_min, nz_max = stats
  x = np.clip(np.asarray(channel, dtype=np.float64), lo, hi)
  if mode == "none":
    return x.astype(np.float32)
  if mode == "full_volume_mean":
    return ((x - mean) / _nonzero(std)).astype(np.float32)
  if mode == "max_min":
    return ((x - vmin) / _nonzero(vmax - vmin)).astype(np.float32)
  if mode == "mean":
    return ((x - nz_mean) / _nonzero(nz_std)).astype(np.float32)
  if mode == "max":
    return (x / _nonzero(max(abs(vmin), abs(vmax)))).astype(np.float32)
  # brats: z-score of the non-zero voxels, rescaled to [10, 110]; zeros stay 0.
  s = _nonzero(nz_std)
  z = (x - nz_mean) / s
  z_min, z_max = (nz_min - nz_mean) / s, (nz_max - nz_mean) / s
  out = 100.0 * (z - z_min) / _nonzero(z_max - z_min) + 10.0
  return np.where(x != 0, out, 0.0).astype(np.float32)


def normalize(image: np.ndarray, mode: str, *,
              clip_percentiles: Sequence[float] | None = DEFAULT_CLIP_PERCENTILES) -> np.ndarray:
  """Normalises each channel (modality) of `image` on its own.

  Args:
    image: `[..., C]` raw intensities, e.g. a subject `[D, H, W, 2]` (T1, T2).
    mode: one of MODES (see the module docstring for formulas).
    clip_percentiles: (low, high) percentiles each channel is clipped to first, or None.

  Returns:
    `[..., C]` float32.
  """
  _check_mode(mode)
  image = np.asarray(image)
  if image.ndim < 2:
    raise ValueError(f"image must be [..., C], got shape {image.shape}.")
  return np.stack([
      normalize_with_stats(image[..., c], volume_stats(image[..., c], clip_percentiles), mode)
      for c in range(image.shape[-1])], axis=-1)
