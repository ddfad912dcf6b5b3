"""Segmentation metrics in numpy/scipy: Dice, Hausdorff distance (HD95), ASSD, NSD (in mm).

Conventions follow MONAI's `compute_dice`, `do_metric_reduction`,
`compute_hausdorff_distance(percentile=95)`, `compute_average_surface_distance(symmetric=True)`
and `compute_surface_dice` (without sub-voxel areas):

* The surface of a binary mask is its boundary voxels: `mask XOR binary_erosion(mask)` with
  scipy's default 6-connected structuring element; voxels outside the volume count as
  background, so a mask touching the volume border has a surface there.
* The distance from a surface voxel of A to B is the Euclidean distance in millimetres to the
  nearest surface voxel of B: `distance_transform_edt(~surface(B), sampling=spacing)` read at
  the surface voxels of A (voxel spacing honoured, so anisotropic voxels are handled).
  `distance_metric='chessboard'` or `'taxicab'` uses scipy's chamfer transform
  `distance_transform_cdt` instead: `max_i |a_i - b_i|` or `sum_i |a_i - b_i|` in voxels. As in
  MONAI, `spacing` is then ignored (a warning says so when it is not all ones).
* HD95 = `max(P95(d(A->B)), P95(d(B->A)))`, each percentile linearly interpolated
  (`numpy.percentile`'s default, as `torch.quantile`).
  With `directed=True` only `P95(d(A->B))`, A the prediction (MONAI's `directed=True`).
* ASSD = mean of the union of both directed distance sets:
  `(sum d(A->B) + sum d(B->A)) / (|surface(A)| + |surface(B)|)`.
* NSD at tolerance `tau` (Nikolov et al. 2021, MONAI's `compute_surface_dice`, surface size =
  voxel count): `(#{d(A->B) <= tau} + #{d(B->A) <= tau}) / (|surface(A)| + |surface(B)|)`.

Empty masks:
* Dice (`dice`, `dice_per_class` default): both empty -> nan (undefined, skipped by `nanmean`);
  exactly one empty -> 0 (nnU-Net's rule). `dice_per_class(ignore_empty=True/False)` follows
  MONAI's DiceMetric instead (empty truth -> nan; or, with False, 1 if the prediction is
  empty too, else 0).
* HD (symmetric or directed) and ASSD: both empty -> nan; exactly one empty -> inf (no surface
  to measure to), as MONAI.
* NSD: both empty -> nan; exactly one empty -> 0 (as MONAI).

Per-case, per-class values `[B, C]` are reduced by `reduce_metric` (MONAI's
`do_metric_reduction`, nan-aware).
"""

from collections.abc import Sequence
import functools
import warnings

import numpy as np
from scipy import ndimage


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
  if spacing is None:
    return (1.0,) * ndim
  if np.isscalar(spacing):
    values = (float(spacing),) * ndim
  else:
    values = tuple(float(s) for s in spacing)
  if len(values) != ndim or any(not np.isfinite(s) or s <= 0 for s in values):
    raise ValueError(f"spacing={spacing!r}: expected {ndim} positive voxel sizes (mm).")
  return values


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  pred, gt = np.asarray(pred), np.asarray(gt)
  if pred.shape != gt.shape:
    raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}.")
  return pred.astype(bool), gt.astype(bool)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
  """Dice `2 |P & G| / (|P| + |G|)` of two binary masks; nan when both are empty."""
  pred, gt = _check_pair(pred, gt)
  denom = int(pred.sum()) + int(gt.sum())
  if denom == 0:
    return float("nan")
  return 2.0 * int(np.logical_and(pred, gt).sum()) / denom


def dice_per_class(pred: np.ndarray, label: np.ndarray, *, num_classes: int,
                   ignore_empty: bool | None = None) -> np.ndarray:
  """Dice of each class id `k` (masks `pred == k`, `label == k`) -> float64 `[num_classes]`.

  `dice_k = 2 |P_k & G_k| / (|P_k| + |G_k|)`, computed from one joint histogram (one pass over
  the volume). When the truth `G_k` is empty the value depends on `ignore_empty`:

  * `None` (default, nnU-Net's rule): nan when `P_k` is empty too, else 0.
  * `True` (MONAI DiceMetric's default `ignore_empty=True`): nan, whatever `P_k` is.
  * `False` (MONAI's `ignore_empty=False`): 1 when `P_k` is empty too, else 0.

  A batch of cases gives rows of a `[B, num_classes]` array for `reduce_metric`; MONAI's
  `include_background=False` is the columns `[:, 1:]`.

  Hard labels only; the training step logs `medjax.losses.per_class_dice`, the soft Dice, where a
  class empty in both scores `smooth_nr / smooth_dr` (1), here nan (1 with `ignore_empty=False`).
  """
  if ignore_empty not in (None, True, False):
    raise ValueError(f"ignore_empty={ignore_empty!r}: expected None, True or False.")
  pred, label = np.asarray(pred), np.asarray(label)
  if pred.shape != label.shape:
    raise ValueError(f"prediction shape {pred.shape} differs from label {label.shape}.")
  for name, arr in (("prediction", pred), ("label", label)):
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
      raise ValueError(f"{name} holds values in [{arr.min()}, {arr.max()}]; expected class ids "
                       f"in [0, {num_classes}).")
  joint = np.bincount(pred.astype(np.int64).ravel() * num_classes + label.astype(np.int64).ravel(),
                      minlength=num_classes * num_classes).reshape(num_classes, num_classes)
  inter = np.diag(joint).astype(np.float64)
  n_pred, n_label = joint.sum(1), joint.sum(0)
  denom = n_pred + n_label
  with np.errstate(invalid="ignore", divide="ignore"):
    dices = np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), np.nan)
  if ignore_empty is None:
    return dices
  empty_value = np.full(num_classes, np.nan) if ignore_empty else (n_pred == 0).astype(np.float64)
  return np.where(n_label > 0, dices, empty_value)


REDUCTIONS = ("none", "mean", "sum", "mean_batch", "sum_batch", "mean_channel", "sum_channel")


def reduce_metric(values: np.ndarray, reduction: str = "mean") -> tuple[np.ndarray, np.ndarray]:
  """MONAI's `do_metric_reduction`: reduces per-case, per-class values `[B, C, ...]`, skipping nan.

  With `n` the count of non-nan values and `s` their sum (nan read as 0):

  * `none`: `(values, n)` unchanged (`n` as float 0/1).
  * `mean`: first over classes, `m_b = s_b / n_b` (0 where `n_b = 0`), then over the cases that
    had any value: `sum_b m_b / #{b : n_b > 0}` (0 if none); `not_nans = #{b : n_b > 0}`.
  * `sum`: `s` over cases and classes; `not_nans = n`.
  * `mean_batch` / `sum_batch`: per class over cases, `s_c / n_c` (0 where `n_c = 0`) / `s_c`.
  * `mean_channel` / `sum_channel`: per case over classes, likewise.

  Returns:
    `(value, not_nans)` as float64 arrays (0-d for `mean` and `sum`, `[C]` for `*_batch`, `[B]`
    for `*_channel`). A mean with no value to average is 0, not nan, as MONAI.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction={reduction!r}: expected one of {REDUCTIONS}.")
  values = np.asarray(values, np.float64)
  if values.ndim < 2:
    raise ValueError(f"values has shape {values.shape}: expected [B, C, ...] (batch, class).")
  valid = ~np.isnan(values)
  if reduction == "none":
    return values, valid.astype(np.float64)
  f = np.where(valid, values, 0.0)
  n = valid.astype(np.float64)

  def mean(total, count):
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)

  if reduction == "mean":
    n_b = n.sum(1)
    m_b = mean(f.sum(1), n_b)
    n_cases = (n_b > 0).sum(0).astype(np.float64)
    return mean(m_b.sum(0), n_cases), n_cases
  if reduction == "sum":
    return f.sum((0, 1)), n.sum((0, 1))
  axis = 0 if reduction.endswith("_batch") else 1
  count = n.sum(axis)
  total = f.sum(axis)
  return (mean(total, count) if reduction.startswith("mean") else total), count


def surface(mask: np.ndarray) -> np.ndarray:
  """Boundary voxels of a binary mask: `mask & ~binary_erosion(mask)` (6-connected, outside = 0)."""
  mask = np.asarray(mask, bool)
  return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _crop_to_union(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Crops both masks to the bounding box of their union plus one voxel.

  Surfaces and surface distances are unchanged: every surface voxel lies in the box, and the
  extra voxel keeps the erosion of the box edge equal to the erosion in the full volume.
  """
  coords = np.nonzero(pred | gt)
  box = tuple(slice(max(int(c.min()) - 1, 0), int(c.max()) + 2) for c in coords)
  return pred[box], gt[box]


DISTANCE_METRICS = ("euclidean", "chessboard", "taxicab")


def _distance_sampling(spacing: float | Sequence[float] | None, ndim: int,
                       distance_metric: str) -> tuple[float, ...]:
  """Checks `distance_metric` and `spacing`; the sampling the Euclidean transform uses."""
  if distance_metric not in DISTANCE_METRICS:
    raise ValueError(f"distance_metric={distance_metric!r}: expected one of {DISTANCE_METRICS}.")
  sampling = _spacing(spacing, ndim)
  if distance_metric != "euclidean" and any(s != 1.0 for s in sampling):
    warnings.warn(f"spacing={spacing!r} is ignored with distance_metric={distance_metric!r} "
                  "(distances in voxels, as MONAI).", stacklevel=3)
  return sampling


def surface_distances(pred: np.ndarray, gt: np.ndarray, *,
                      spacing: float | Sequence[float] | None = None,
                      distance_metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
  """Directed surface distances: `(d(pred -> gt), d(gt -> pred))`.

  Args:
    pred, gt: binary masks of the same shape (any number of axes, usually `[D, H, W]`).
    spacing: voxel size in mm per axis (or one number); default 1. Used by `euclidean` only.
    distance_metric: `euclidean` (exact, in mm: `distance_transform_edt`), `chessboard`
      (`max_i |a_i - b_i|`) or `taxicab` (`sum_i |a_i - b_i|`), both in voxels by scipy's
      `distance_transform_cdt`, spacing ignored (MONAI's `get_surface_distance`).

  Returns:
    Two float64 arrays: for each surface voxel of `pred` the distance to the nearest surface voxel
    of `gt`, and the reverse. Both must be non-empty masks.
  """
  pred, gt = _check_pair(pred, gt)
  sampling = _distance_sampling(spacing, pred.ndim, distance_metric)
  if not pred.any() or not gt.any():
    raise ValueError("surface_distances needs two non-empty masks.")
  pred, gt = _crop_to_union(pred, gt)
  pred_surface, gt_surface = surface(pred), surface(gt)
  if distance_metric == "euclidean":
    transform = functools.partial(ndimage.distance_transform_edt, sampling=sampling)
  else:
    transform = functools.partial(ndimage.distance_transform_cdt, metric=distance_metric)
  to_gt = transform(~gt_surface).astype(np.float64)
  to_pred = transform(~pred_surface).astype(np.float64)
  return to_gt[pred_surface], to_pred[gt_surface]


def _empty_case(pred: np.ndarray, gt: np.ndarray, one_empty: float = float("inf")
                ) -> float | None:
  has_pred, has_gt = bool(pred.any()), bool(gt.any())
  if not has_pred and not has_gt:
    return float("nan")
  if not has_pred or not has_gt:
    return one_empty
  return None


def _checked_distances(pred: np.ndarray, gt: np.ndarray, spacing, distance_metric: str, *,
                       one_empty: float = float("inf")
                       ) -> tuple[float | None, tuple[np.ndarray | None, np.ndarray | None]]:
  """`(empty-mask value, (None, None))` when a mask is empty (`_empty_case`), else
  `(None, surface_distances(...))`; checks `spacing` and `distance_metric` first."""
  _distance_sampling(spacing, pred.ndim, distance_metric)
  empty = _empty_case(pred, gt, one_empty)
  if empty is not None:
    return empty, (None, None)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the spacing warning was given by _distance_sampling
    return None, surface_distances(pred, gt, spacing=spacing, distance_metric=distance_metric)


def _check_percentile(percentile: float | None) -> None:
  if percentile is not None and not 0 <= percentile <= 100:
    raise ValueError(f"percentile={percentile}: expected a value in [0, 100] or None.")


def _check_tolerance(tolerance: float) -> float:
  tolerance = float(tolerance)
  if not np.isfinite(tolerance) or tolerance < 0:
    raise ValueError(f"tolerance={tolerance}: expected a finite value >= 0.")
  return tolerance


def _hausdorff(directed_distances: Sequence[np.ndarray], percentile: float | None) -> float:
  """The largest percentile (or maximum) of the given directed distance sets."""
  if percentile is None:
    return float(max(d.max() for d in directed_distances))
  return float(max(np.percentile(d, percentile) for d in directed_distances))


def _average(to_gt: np.ndarray, to_pred: np.ndarray, symmetric: bool) -> float:
  return float((np.concatenate([to_gt, to_pred]) if symmetric else to_gt).mean())


def _surface_dice(to_gt: np.ndarray, to_pred: np.ndarray, tolerance: float) -> float:
  correct = int((to_gt <= tolerance).sum()) + int((to_pred <= tolerance).sum())
  return correct / (to_gt.size + to_pred.size)


def hausdorff_distance(pred: np.ndarray, gt: np.ndarray, *,
                       spacing: float | Sequence[float] | None = None,
                       percentile: float | None = 95.0, directed: bool = False,
                       distance_metric: str = "euclidean") -> float:
  """(Percentile) Hausdorff distance in mm between two binary masks.

  Symmetric: `max(P(d(pred -> gt)), P(d(gt -> pred)))`; `directed=True`: `P(d(pred -> gt))`
  only (MONAI's `directed=True`). `P` is the `percentile`-th percentile (linear interpolation, as
  `torch.quantile`), or the maximum when `percentile` is None. nan if both masks are empty, inf
  if exactly one is. `distance_metric` and `spacing` as in `surface_distances`.

  Note: MONAI reads `percentile=0` as None (the maximum); here it is the 0th percentile (the
  minimum).
  """
  pred, gt = _check_pair(pred, gt)
  _check_percentile(percentile)
  empty, directed_distances = _checked_distances(pred, gt, spacing, distance_metric)
  if empty is not None:
    return empty
  return _hausdorff(directed_distances[:1] if directed else directed_distances, percentile)


def average_surface_distance(pred: np.ndarray, gt: np.ndarray, *,
                             spacing: float | Sequence[float] | None = None,
                             symmetric: bool = True,
                             distance_metric: str = "euclidean") -> float:
  """Average (symmetric) surface distance in mm between two binary masks.

  Symmetric: the mean over both directed distance sets together,
  `(sum d(pred -> gt) + sum d(gt -> pred)) / (n_pred + n_gt)`; otherwise the mean of
  `d(pred -> gt)`. nan if both masks are empty, inf if exactly one is. `distance_metric` and
  `spacing` as in `surface_distances`.
  """
  pred, gt = _check_pair(pred, gt)
  empty, (to_gt, to_pred) = _checked_distances(pred, gt, spacing, distance_metric)
  if empty is not None:
    return empty
  return _average(to_gt, to_pred, symmetric)


def normalized_surface_dice(pred: np.ndarray, gt: np.ndarray, *, tolerance: float,
                            spacing: float | Sequence[float] | None = None,
                            distance_metric: str = "euclidean") -> float:
  """Normalised surface Dice (NSD, Nikolov et al. 2021) of two binary masks at `tolerance`.

  The fraction of both surfaces lying within `tolerance` of the other surface:

    NSD = (#{d(pred -> gt) <= tau} + #{d(gt -> pred) <= tau}) / (n_pred + n_gt),

  with `n_*` the surface voxel counts (MONAI's `compute_surface_dice` with
  `use_subvoxels=False`; sub-voxel surface areas are not supported). `tolerance` is in the units
  of the distances: mm with `spacing` and `euclidean`, voxels otherwise. Empty masks (as MONAI):
  both empty -> nan; exactly one empty -> 0.
  """
  pred, gt = _check_pair(pred, gt)
  tolerance = _check_tolerance(tolerance)
  empty, (to_gt, to_pred) = _checked_distances(pred, gt, spacing, distance_metric,
                                               one_empty=0.0)
  if empty is not None:
    return empty
  return _surface_dice(to_gt, to_pred, tolerance)


def surface_metrics(pred: np.ndarray, gt: np.ndarray, *,
                    spacing: float | Sequence[float] | None = None, percentile: float = 95.0,
                    nsd_tolerance: float | None = None,
                    distance_metric: str = "euclidean") -> dict[str, float]:
  """`hausdorff_distance` (as 'hd95'), `average_surface_distance` ('assd') and, with
  `nsd_tolerance`, `normalized_surface_dice` ('nsd') of two binary masks, from one computation
  of the surface distances (the same values as the three functions, with their empty-mask
  rules)."""
  pred, gt = _check_pair(pred, gt)
  _check_percentile(percentile)
  tolerance = None if nsd_tolerance is None else _check_tolerance(nsd_tolerance)
  empty, (to_gt, to_pred) = _checked_distances(pred, gt, spacing, distance_metric)
  if empty is not None:
    results = {"hd95": empty, "assd": empty}
    if tolerance is not None:  # NSD: nan when both are empty, 0 when one is
      results["nsd"] = 0.0 if np.isinf(empty) else empty
    return results
  results = {"hd95": _hausdorff((to_gt, to_pred), percentile),
             "assd": _average(to_gt, to_pred, symmetric=True)}
  if tolerance is not None:
    results["nsd"] = _surface_dice(to_gt, to_pred, tolerance)
  return results


def segmentation_metrics(pred: np.ndarray, label: np.ndarray, *, num_classes: int,
                         spacing: float | Sequence[float] | None = None,
                         include_background: bool = False,
                         percentile: float = 95.0, nsd_tolerance: float | None = None,
                         distance_metric: str = "euclidean") -> dict[int, dict[str, float]]:
  """Dice, HD95 (mm) and ASSD (mm) of each class of two label maps of class ids `[D, H, W]`.

  Returns:
    `{class_id: {'dice': ..., 'hd95': ..., 'assd': ...}}` for classes 1..K-1 (0..K-1 with
    `include_background`), with 'nsd' too when `nsd_tolerance` is given (`surface_metrics`).
    Empty-mask values as in the module docstring; `distance_metric` as in `surface_distances`.
  """
  pred, label = np.asarray(pred), np.asarray(label)
  dices = dice_per_class(pred, label, num_classes=num_classes)
  results = {}
  for k in range(0 if include_background else 1, num_classes):
    p, g = pred == k, label == k
    results[k] = {"dice": float(dices[k]),
                  **surface_metrics(p, g, spacing=spacing, percentile=percentile,
                                    nsd_tolerance=nsd_tolerance, distance_metric=distance_metric)}
  return results
