"""Per-modality intensity normalisation with MedicalZoo's option names.

Every mode first clips each channel to its (0.1, 99.8) percentiles (`np.percentile`, linear
interpolation, over the whole volume including background), like MedicalZoo's
`percentile_clip`; pass `clip_percentiles=None` to skip the clip. With x the clipped channel:

- `full_volume_mean`: (x - mean(x)) / std(x) over all voxels.
- `max_min`: (x - min(x)) / (max(x) - min(x)), in [0, 1].
- `mean`: (x - m) / s, with m, s the mean and std of the non-zero voxels, applied to all voxels.
- `max`: x / max(|x|) (MedicalZoo crashes on this mode).
- `brats` (MedicalZoo's exactly): voxels with x = 0 stay 0; every other voxel becomes

      100 ((x - mean(x)) / std1(x) - min(x)) / (max(x) - min(x)) + 10,

  with the mean, the *unbiased* standard deviation std1 (ddof=1, torch's `Tensor.std()`), the
  min and the max all of the whole clipped channel, zeros included. The z-score is rescaled
  with the raw clipped range, not its own, so the result is not confined to [10, 110] (for
  x = [0, 0, 2, 4, 6]: 0, 0, 7.44, 20.23, 33.01). MedicalZoo: `normalize_intensity`,
  lib/medloaders/medical_image_process.py:156-162, with MEAN, STD, MAX, MIN from
  `load_medical_image` (lines 40-43) after `percentile_clip` (line 31).
- `none`: x.

One mode is fixed by dataset-wide statistics instead of the volume's own (nnU-Net's
`CTNormalization`, for CT channels whose Hounsfield units mean the same in every scan):

- `ct`: clip to the 0.5 and 99.5 percentiles of the training set's foreground intensities,
  then (x - mean) / max(std, 1e-8) with that foreground's mean and std (`ct_stats`). No
  per-volume percentile clip.

Standard deviations are population ones (ddof=0) except in `brats` (ddof=1, see above). A zero
denominator (a constant channel) is replaced by 1, so such a channel stays finite instead of
becoming NaN as in MedicalZoo.

The normaliser of a channel is an affine map of the clipped values, fixed by a few volume
statistics (`volume_stats`). Storing those statistics beside a crop lets
`normalize_with_stats(crop, stats, mode)` reproduce exactly the crop of the normalised volume;
the `subvolumes` dataset configs rely on this.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Modes fixed by one volume's own statistics (`volume_stats`).
MODES = ("full_volume_mean", "max_min", "mean", "max", "brats", "none")
# Modes fixed by statistics of the training set (`ct_stats`).
DATASET_MODES = ("ct",)
ALL_MODES = MODES + DATASET_MODES
CT_STATS_FIELDS = ("mean", "std", "percentile_00_5", "percentile_99_5")
# Foreground voxels sampled per training case for `ct_stats` (nnU-Net samples 10,000).
CT_SAMPLES_PER_CASE = 10_000
DEFAULT_CLIP_PERCENTILES = (0.1, 99.8)
# The fields of `volume_stats`, in order. All but the clip bounds are of the clipped channel;
# `nz_*` are over its non-zero voxels; `count` is the number of voxels (for `brats`' ddof=1 std).
STATS_FIELDS = ("clip_low", "clip_high", "mean", "std", "min", "max",
                "nz_mean", "nz_std", "nz_min", "nz_max", "count")
NUM_STATS = len(STATS_FIELDS)
# Statistics written before `count` was added (every mode but `brats` can still use them).
_LEGACY_NUM_STATS = NUM_STATS - 1


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
    fields are (0, 1, 0, 0); without clipping the bounds are (-inf, inf). `std` is the
    population one (ddof=0); `count` = n gives the unbiased one, std * sqrt(n / (n - 1)).
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
  return np.array((lo, hi, x.mean(), x.std(), x.min(), x.max()) + nz_stats + (x.size,),
                  dtype=np.float64)


def _nonzero(d: float) -> float:
  return d if d != 0 else 1.0


def normalize_with_stats(channel: np.ndarray, stats: np.ndarray, mode: str) -> np.ndarray:
  """Normalises one channel (or any crop of it) with its volume's `volume_stats`.

  Args:
    channel: `[...]` raw intensities of one modality.
    stats: `[NUM_STATS]` from `volume_stats` of the whole volume. Statistics of an older
      medjax without the final `count` field (`[NUM_STATS - 1]`) still work for every mode but
      `brats`.
    mode: one of MODES.

  Returns:
    float32 array of `channel`'s shape; see the module docstring for the formulas.
  """
  _check_mode(mode)
  stats = np.asarray(stats, dtype=np.float64)
  if stats.shape == (_LEGACY_NUM_STATS,):
    if mode == "brats":
      raise ValueError(
          f"stats of shape ({_LEGACY_NUM_STATS},) lack the voxel count that 'brats' needs for its "
          f"unbiased std; expected shape ({NUM_STATS},) {STATS_FIELDS} -- rebuild the dataset's "
          "stored statistics with this medjax.")
    stats = np.append(stats, np.nan)
  if stats.shape != (NUM_STATS,):
    raise ValueError(f"stats must have shape ({NUM_STATS},) with fields {STATS_FIELDS}, got "
                     f"{stats.shape}.")
  lo, hi, mean, std, vmin, vmax, nz_mean, nz_std, nz_min, nz_max, count = stats
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
  # brats (MedicalZoo): z-score with the whole channel's mean and unbiased std, rescaled with
  # the clipped channel's own min and max; zeros stay 0.
  std1 = std * np.sqrt(count / (count - 1)) if count > 1 else 0.0
  z = (x - mean) / _nonzero(std1)
  out = 100.0 * (z - vmin) / _nonzero(vmax - vmin) + 10.0
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


def foreground_samples(channel: np.ndarray, label: np.ndarray, *, rng: np.random.Generator,
                       num_samples: int = CT_SAMPLES_PER_CASE) -> np.ndarray:
  """Up to `num_samples` intensities of `channel` where `label > 0`, drawn without replacement.

  Args:
    channel: `[D, H, W]` raw intensities of one channel.
    label: `[D, H, W]` class ids on the same grid.
    rng: the generator (a fixed seed per case makes the statistics reproducible).

  Returns:
    float64 `[n]`, n = min(num_samples, foreground voxels).
  """
  channel, label = np.asarray(channel), np.asarray(label)
  if channel.shape != label.shape:
    raise ValueError(f"channel {channel.shape} and label {label.shape} differ in shape.")
  values = channel[label > 0].astype(np.float64)
  if values.size > num_samples:
    values = rng.choice(values, num_samples, replace=False)
  return values


def ct_stats(samples: np.ndarray) -> dict[str, float]:
  """`ct` mode's statistics from foreground intensities pooled over the training cases.

  Returns:
    `{'mean', 'std', 'percentile_00_5', 'percentile_99_5'}` (population std; `np.percentile`
    with linear interpolation), as nnU-Net's dataset fingerprint computes them.

  Raises:
    ValueError: no foreground voxel at all.
  """
  samples = np.asarray(samples, np.float64).ravel()
  if samples.size == 0:
    raise ValueError("no foreground voxels in the training cases: the 'ct' normalisation needs "
                     "labelled foreground to compute its intensity statistics.")
  lo, hi = np.percentile(samples, (0.5, 99.5))
  return {"mean": float(samples.mean()), "std": float(samples.std()),
          "percentile_00_5": float(lo), "percentile_99_5": float(hi)}


def normalize_ct(channel: np.ndarray, stats: dict[str, float]) -> np.ndarray:
  """nnU-Net's CT normalisation of one channel with the training set's `ct_stats`; float32."""
  missing = [k for k in CT_STATS_FIELDS if k not in stats]
  if missing:
    raise ValueError(f"ct statistics lack {missing}; expected the fields {CT_STATS_FIELDS}.")
  x = np.clip(np.asarray(channel, np.float64), stats["percentile_00_5"], stats["percentile_99_5"])
  return ((x - stats["mean"]) / max(stats["std"], 1e-8)).astype(np.float32)


def normalize_channels(image: np.ndarray, modes: Sequence[str], *,
                       clip_percentiles: Sequence[float] | None = DEFAULT_CLIP_PERCENTILES,
                       dataset_stats: Sequence[dict[str, float] | None] | None = None
                       ) -> np.ndarray:
  """Normalises channel c of `image [..., C]` with `modes[c]` (any of ALL_MODES).

  Args:
    image: `[..., C]` raw intensities.
    modes: one mode per channel.
    clip_percentiles: the per-volume clip of the MODES (not used by `ct`).
    dataset_stats: per channel, the `ct_stats` of a `ct` channel (None elsewhere).

  Returns:
    `[..., C]` float32. With every mode in MODES this equals `normalize` channel by channel.
  """
  image = np.asarray(image)
  if image.ndim < 2 or image.shape[-1] != len(modes):
    raise ValueError(f"image of shape {image.shape} needs one normalisation per channel; got "
                     f"{len(modes)}: {tuple(modes)}.")
  out = []
  for c, mode in enumerate(modes):
    if mode in DATASET_MODES:
      stats = None if dataset_stats is None else dataset_stats[c]
      if stats is None:
        raise ValueError(f"channel {c} uses normalisation {mode!r}, which needs the training "
                         "set's intensity statistics; none were given.")
      out.append(normalize_ct(image[..., c], stats))
    else:
      _check_mode(mode)
      out.append(normalize_with_stats(image[..., c], volume_stats(image[..., c], clip_percentiles),
                                      mode))
  return np.stack(out, axis=-1)
