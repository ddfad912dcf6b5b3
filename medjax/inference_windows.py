"""Where the windows of sliding-window inference go and how they are weighted: MONAI's scan
interval and window starts, and the importance map (constant or Gaussian) that blends them.
`medjax.inference.sliding_window_inference` uses them (the tiling rules are in its module
docstring); they are importable from `medjax.inference` too."""

from collections.abc import Callable, Sequence
import itertools
import math
from typing import Any

import numpy as np

BLEND_MODES = ("constant", "gaussian")


def _as_triple(value: Any, name: str, cast: Callable[[Any], Any]) -> tuple[Any, Any, Any]:
  if isinstance(value, (int, float, np.integer, np.floating)) or value is None:
    return (cast(value),) * 3 if value is not None else (None, None, None)
  values = tuple(value)
  if len(values) != 3:
    raise ValueError(f"{name}={value!r}: expected a number or a sequence of 3 (one per D, H, W).")
  return tuple(cast(v) if v is not None else None for v in values)


def get_scan_interval(image_size: Sequence[int], roi_size: Sequence[int],
                      overlap: Sequence[float]) -> tuple[int, ...]:
  """MONAI's `_get_scan_interval`: the step between window starts along each axis.

  `interval = roi` when `roi == image`, else `max(int(roi * (1 - overlap)), 1)`.
  """
  intervals = []
  for image, roi, o in zip(image_size, roi_size, overlap):
    if roi == image:
      intervals.append(int(roi))
    else:
      intervals.append(max(int(roi * (1 - o)), 1))
  return tuple(intervals)


def window_starts_1d(image: int, roi: int, interval: int) -> list[int]:
  """Start positions along one axis, as MONAI's `dense_patch_slices` lays them out.

  The number of windows is `1 + min{d : d * interval + roi >= image}`; window `d` starts at
  `d * interval`, moved back by the amount it would overrun the image.

  Args:
    image: image size along the axis (>= roi).
    roi: window size along the axis.
    interval: scan interval (> 0).

  Returns:
    The start of each window, non-decreasing, the last one `image - roi`.
  """
  num = math.ceil(image / interval)
  count = next((d + 1 for d in range(num) if d * interval + roi >= image), 1)
  return [d * interval - max(d * interval + roi - image, 0) for d in range(count)]


def window_starts(image_size: Sequence[int], roi_size: Sequence[int],
                  overlap: Sequence[float]) -> np.ndarray:
  """All window starts `[N, 3]` (row-major over D, H, W, as MONAI enumerates them)."""
  interval = get_scan_interval(image_size, roi_size, overlap)
  per_axis = [window_starts_1d(i, r, s) for i, r, s in zip(image_size, roi_size, interval)]
  return np.asarray(list(itertools.product(*per_axis)), dtype=np.int32).reshape(-1, 3)


def importance_map(roi_size: Sequence[int], mode: str = "constant",
                   sigma_scale: float | Sequence[float] = 0.125) -> np.ndarray:
  """Blending weights `[d, h, w]` for one window (MONAI's `compute_importance_map`).

  `constant`: all ones. `gaussian`: `prod_i exp(-x_i^2 / (2 sigma_i^2))` with
  `x_i = j - (roi_i - 1) / 2` for voxel `j` and `sigma_i = sigma_scale_i * roi_i`; the map is
  clamped below at `max(min(map), 1e-3)` so no voxel gets a zero (or vanishing) weight.
  """
  if mode not in BLEND_MODES:
    raise ValueError(f"mode={mode!r}: expected one of {BLEND_MODES}.")
  roi_size = tuple(int(r) for r in roi_size)
  if mode == "constant":
    return np.ones(roi_size, np.float32)
  sigma_scale = _as_triple(sigma_scale, "sigma_scale", float)
  weights = np.ones((), np.float32)
  for axis, (size, scale) in enumerate(zip(roi_size, sigma_scale)):
    if scale is None or scale <= 0:
      raise ValueError(f"sigma_scale={sigma_scale!r}: expected positive values.")
    x = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    g = np.exp(x ** 2 / (-2.0 * (scale * size) ** 2)).astype(np.float32)
    weights = weights[..., None] * g.reshape((1,) * axis + (size,))
  return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)
