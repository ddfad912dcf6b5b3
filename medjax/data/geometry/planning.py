"""Dataset-level target-spacing planning: the median spacing and nnU-Net's full-resolution rule."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medjax.data.geometry.resampling import ANISOTROPY_THRESHOLD


def _check_spacings(spacings: Any, name: str = "spacings") -> np.ndarray:
  s = np.asarray(spacings, dtype=np.float64)
  if s.ndim != 2 or s.shape[1] != 3 or s.shape[0] < 1:
    raise ValueError(f"{name} must be [N, 3] (one row per case), got shape {s.shape}.")
  if not np.all(np.isfinite(s)) or np.any(s <= 0):
    raise ValueError(f"{name} must be positive and finite, got {s.tolist()}.")
  return s


def median_spacing(spacings: Sequence[Sequence[float]]) -> tuple[float, float, float]:
  """The per-axis median of the cases' spacings (`np.percentile(..., 50)`), `[N, 3]` -> 3."""
  return tuple(float(v) for v in np.percentile(_check_spacings(spacings), 50, axis=0))


def target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]], *,
                   anisotropy_threshold: float = ANISOTROPY_THRESHOLD
                   ) -> tuple[float, float, float]:
  """nnU-Net's full-resolution target spacing (`determine_fullres_target_spacing`).

  Start from `median_spacing`. With `worst` its axis of largest spacing and `others` the two
  others, the dataset is anisotropic when both
  - median spacing[worst] > threshold * max(median spacing[others]), and
  - median shape[worst] * threshold < min(median shape[others]);
  then axis `worst` takes the 10th percentile of its spacings instead (never below
  max(median spacing[others]); if it would be, it becomes that + 1e-5, as in nnU-Net).

  Args:
    spacings: `[N, 3]` voxel sizes (mm) of the cases, in canonical axes.
    shapes: `[N, 3]` their shapes (nnU-Net uses the shapes after the non-zero crop).
    anisotropy_threshold: nnU-Net's 3.

  Returns:
    `(s0, s1, s2)` in mm.
  """
  s = _check_spacings(spacings)
  n = np.asarray(shapes, dtype=np.float64)
  if n.shape != s.shape or np.any(n < 1):
    raise ValueError(f"shapes must be [N, 3] positive like spacings {s.shape}, got "
                     f"{n.tolist()}.")
  target = np.percentile(s, 50, axis=0)
  median_shape = np.percentile(n, 50, axis=0)
  worst = int(np.argmax(target))
  others = [a for a in range(3) if a != worst]
  max_other = float(target[others].max())
  aniso_spacing = target[worst] > anisotropy_threshold * max_other
  aniso_voxels = median_shape[worst] * anisotropy_threshold < median_shape[others].min()
  if aniso_spacing and aniso_voxels:
    low = float(np.percentile(s[:, worst], 10))
    target[worst] = low if low >= max_other else max_other + 1e-5
  return tuple(float(v) for v in target)
