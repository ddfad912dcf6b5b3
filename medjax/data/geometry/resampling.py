"""Resampling maths: nnU-Net's new shape, its anisotropic axis rule, and the resampling of
images (splines) and labels (linear one-hot or nearest) over the same field of view."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from medjax.data.geometry._checks import _check_order, _check_spacing

# nnU-Net's ANISO_THRESHOLD (nnunetv2/configuration.py).
ANISOTROPY_THRESHOLD = 3.0
# Spline order along the low-resolution axis of anisotropic data (nnU-Net's order_z).
SEPARATE_AXIS_ORDER = 0


def resampled_shape(shape: Sequence[int], spacing: Sequence[float],
                    target_spacing: Sequence[float]) -> tuple[int, int, int]:
  """nnU-Net's `compute_new_shape`: `round(spacing / target_spacing * shape)` per axis, >= 1.

  Python's `round` (halves to even), as nnU-Net, so shapes match nnU-Net's.
  """
  spacing = _check_spacing(spacing, "spacing")
  target_spacing = _check_spacing(target_spacing, "target_spacing")
  return tuple(max(1, int(round(s / t * n))) for s, t, n in zip(spacing, target_spacing, shape))


def anisotropic_axis(spacing_from: Sequence[float], spacing_to: Sequence[float], *,
                     threshold: float = ANISOTROPY_THRESHOLD) -> int | None:
  """The axis to resample separately (order 0) when going from `spacing_from` to `spacing_to`.

  nnU-Net's rule (`resample_data_or_seg_to_shape(force_separate_z=None)`): the first of
  (`spacing_from`, `spacing_to`) whose max / min spacing exceeds `threshold` decides; its axis of
  largest spacing is returned if it is the only one, else None (e.g. (0.24, 1.25, 1.25)).
  """
  for spacing in (_check_spacing(spacing_from, "spacing_from"),
                  _check_spacing(spacing_to, "spacing_to")):
    s = np.asarray(spacing)
    if s.max() / s.min() > threshold:
      axes = np.flatnonzero(s == s.max())
      return int(axes[0]) if axes.size == 1 else None
  return None


def _resize(x: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
  """`x` [D, H, W] resampled to `shape`, voxel centres (j + 0.5) * n / m - 0.5; float32."""
  scale = np.asarray(x.shape, np.float64) / np.asarray(shape, np.float64)
  # A diagonal matrix makes affine_transform a separable zoom (no coordinate arrays).
  return ndimage.affine_transform(x, scale, offset=0.5 * scale - 0.5, output_shape=tuple(shape),
                                  order=order, mode="nearest", output=np.float32,
                                  prefilter=order > 1)


def _resample3(x: np.ndarray, shape: tuple[int, ...], order: int,
               separate_axis: int | None, separate_order: int) -> np.ndarray:
  """One [D, H, W] volume to `shape` (float32); axes whose size is unchanged are left exact."""
  x = np.asarray(x, np.float32)
  if separate_axis is None:
    steps = [((0, 1, 2), order)]
  else:
    steps = [(tuple(a for a in range(3) if a != separate_axis), order),
             ((separate_axis,), separate_order)]
  for axes, step_order in steps:
    step_shape = list(x.shape)
    for a in axes:
      step_shape[a] = shape[a]
    if tuple(step_shape) != x.shape:
      x = _resize(x, step_shape, step_order)
  return x


def resample(volume: np.ndarray, shape: Sequence[int], *, order: int = 3,
             separate_axis: int | None = None,
             separate_order: int = SEPARATE_AXIS_ORDER) -> np.ndarray:
  """Resamples a volume to `shape` over the same field of view (see the module docstring).

  Args:
    volume: `[D, H, W]` or `[D, H, W, C]` (channels resampled one by one).
    shape: the new `(d, h, w)`.
    order: spline order (0 nearest, 1 linear, 3 cubic), `mode='nearest'` at the borders.
    separate_axis: an axis resampled after the others, with `separate_order` (nnU-Net's
      anisotropic scheme; see `anisotropic_axis`), or None.
    separate_order: spline order along `separate_axis`.

  Returns:
    float32 `[d, h, w]` or `[d, h, w, C]`; a copy of `volume` when the shape is unchanged.
  """
  volume = np.asarray(volume)
  if volume.ndim not in (3, 4):
    raise ValueError(f"volume must be [D, H, W] or [D, H, W, C], got shape {volume.shape}.")
  shape = tuple(int(s) for s in shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"shape must be 3 positive ints, got {shape}.")
  order = _check_order(order, "order")
  separate_order = _check_order(separate_order, "separate_order")
  if separate_axis is not None and separate_axis not in (0, 1, 2):
    raise ValueError(f"separate_axis must be 0, 1, 2 or None, got {separate_axis!r}.")
  if volume.ndim == 3:
    return _resample3(volume, shape, order, separate_axis, separate_order)
  out = np.empty(shape + volume.shape[3:], np.float32)
  for c in range(volume.shape[3]):
    out[..., c] = _resample3(volume[..., c], shape, order, separate_axis, separate_order)
  return out


def _resample_labels(label: np.ndarray, shape: tuple[int, ...], method: str,
                     separate_axis: int | None) -> np.ndarray:
  """`[D, H, W]` class ids -> `[d, h, w]` uint8 by `method` (one of LABEL_METHODS)."""
  if label.shape == shape:
    return label.astype(np.uint8, copy=True)
  if method == "nearest":
    return _resample3(label, shape, 0, separate_axis, 0).astype(np.uint8)
  # Running argmax over the classes present; a class absent everywhere has probability 0 and
  # never wins, and `>` keeps the lowest class id on ties, like np.argmax.
  best = np.full(shape, -1.0, np.float32)
  out = np.zeros(shape, np.uint8)
  for k in np.unique(label):
    p = _resample3((label == k).astype(np.float32), shape, 1, separate_axis,
                   SEPARATE_AXIS_ORDER)
    win = p > best
    out[win] = k
    best[win] = p[win]
  return out
