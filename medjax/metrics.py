"""Segmentation metrics in numpy/scipy: Dice, 95th-percentile Hausdorff distance, ASSD (in mm).

Conventions follow MONAI's `compute_hausdorff_distance(percentile=95)` and
`compute_average_surface_distance(symmetric=True)`:

* The surface of a binary mask is its boundary voxels: `mask XOR binary_erosion(mask)` with
  scipy's default 6-connected structuring element; voxels outside the volume count as
  background, so a mask touching the volume border has a surface there.
* The distance from a surface voxel of A to B is the Euclidean distance in millimetres to the
  nearest surface voxel of B: `distance_transform_edt(~surface(B), sampling=spacing)` read at
  the surface voxels of A (voxel spacing honoured, so anisotropic voxels are handled).
* HD95 = `max(P95(d(A->B)), P95(d(B->A)))`, each percentile linearly interpolated
  (`numpy.percentile`'s default, as `torch.quantile`).
* ASSD = mean of the union of both directed distance sets:
  `(sum d(A->B) + sum d(B->A)) / (|surface(A)| + |surface(B)|)`.

Empty masks (documented choice; MONAI warns and returns nan/inf in a mix of ways):
* Dice: both empty -> nan (undefined, skipped by `nanmean`); exactly one empty -> 0.
* HD95 and ASSD: both empty -> nan; exactly one empty -> inf (no surface to measure to).
"""

from collections.abc import Sequence

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


def dice_per_class(pred: np.ndarray, label: np.ndarray, *, num_classes: int) -> np.ndarray:
  """Dice of each class id `k` (masks `pred == k`, `label == k`) -> float64 `[num_classes]`.

  Computed from one joint histogram (one pass over the volume). nan for a class absent from both.
  """
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
  denom = joint.sum(1) + joint.sum(0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), np.nan)


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


def surface_distances(pred: np.ndarray, gt: np.ndarray, *,
                      spacing: float | Sequence[float] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Directed surface distances in mm: `(d(pred -> gt), d(gt -> pred))`.

  Args:
    pred, gt: binary masks of the same shape (any number of axes, usually `[D, H, W]`).
    spacing: voxel size in mm per axis (or one number); default 1.

  Returns:
    Two float64 arrays: for each surface voxel of `pred` the distance to the nearest surface voxel
    of `gt`, and the reverse. Both must be non-empty masks.
  """
  pred, gt = _check_pair(pred, gt)
  sampling = _spacing(spacing, pred.ndim)
  if not pred.any() or not gt.any():
    raise ValueError("surface_distances needs two non-empty masks.")
  pred, gt = _crop_to_union(pred, gt)
  pred_surface, gt_surface = surface(pred), surface(gt)
  to_gt = ndimage.distance_transform_edt(~gt_surface, sampling=sampling)
  to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)
  return to_gt[pred_surface], to_pred[gt_surface]


def _empty_case(pred: np.ndarray, gt: np.ndarray) -> float | None:
  has_pred, has_gt = bool(pred.any()), bool(gt.any())
  if not has_pred and not has_gt:
    return float("nan")
  if not has_pred or not has_gt:
    return float("inf")
  return None


def hausdorff_distance(pred: np.ndarray, gt: np.ndarray, *,
                       spacing: float | Sequence[float] | None = None,
                       percentile: float | None = 95.0) -> float:
  """Symmetric (percentile) Hausdorff distance in mm between two binary masks.

  `max(P(d(pred -> gt)), P(d(gt -> pred)))` with `P` the `percentile`-th percentile (linear
  interpolation), or the maximum when `percentile` is None. nan if both masks are empty, inf if
  exactly one is.
  """
  pred, gt = _check_pair(pred, gt)
  if percentile is not None and not 0 <= percentile <= 100:
    raise ValueError(f"percentile={percentile}: expected a value in [0, 100] or None.")
  empty = _empty_case(pred, gt)
  if empty is not None:
    return empty
  directed = surface_distances(pred, gt, spacing=spacing)
  if percentile is None:
    return float(max(d.max() for d in directed))
  return float(max(np.percentile(d, percentile) for d in directed))


def average_surface_distance(pred: np.ndarray, gt: np.ndarray, *,
                             spacing: float | Sequence[float] | None = None,
                             symmetric: bool = True) -> float:
  """Average (symmetric) surface distance in mm between two binary masks.

  Symmetric: the mean over both directed distance sets together,
  `(sum d(pred -> gt) + sum d(gt -> pred)) / (n_pred + n_gt)`; otherwise the mean of
  `d(pred -> gt)`. nan if both masks are empty, inf if exactly one is.
  """
  pred, gt = _check_pair(pred, gt)
  empty = _empty_case(pred, gt)
  if empty is not None:
    return empty
  to_gt, to_pred = surface_distances(pred, gt, spacing=spacing)
  distances = np.concatenate([to_gt, to_pred]) if symmetric else to_gt
  return float(distances.mean())


def segmentation_metrics(pred: np.ndarray, label: np.ndarray, *, num_classes: int,
                         spacing: float | Sequence[float] | None = None,
                         include_background: bool = False,
                         percentile: float = 95.0) -> dict[int, dict[str, float]]:
  """Dice, HD95 (mm) and ASSD (mm) of each class of two label maps of class ids `[D, H, W]`.

  Returns:
    `{class_id: {'dice': ..., 'hd95': ..., 'assd': ...}}` for classes 1..K-1 (0..K-1 with
    `include_background`). Empty-mask values as in the module docstring.
  """
  pred, label = np.asarray(pred), np.asarray(label)
  dices = dice_per_class(pred, label, num_classes=num_classes)
  results = {}
  for k in range(0 if include_background else 1, num_classes):
    p, g = pred == k, label == k
    results[k] = {
        "dice": float(dices[k]),
        "hd95": hausdorff_distance(p, g, spacing=spacing, percentile=percentile),
        "assd": average_surface_distance(p, g, spacing=spacing),
    }
  return results
