"""Scoring one prediction file against its ground truth: per class and per region."""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

from medjax import labels as labels_lib
from medjax import metrics


def region_metrics(pred: np.ndarray, label: np.ndarray, regions: dict[str, tuple[int, ...]], *,
                   spacing: Sequence[float] | None = None, percentile: float = 95.0,
                   nsd_tolerance: float | None = None) -> dict[str, dict[str, float]]:
  """Dice, HD95 (mm) and ASSD (mm) of each region: the binary masks `isin(map, class ids)`.

  Args:
    pred, label: class-id label maps `[D, H, W]`.
    regions: region name -> class ids.
    nsd_tolerance: also the normalised surface Dice at this tolerance (mm), as 'nsd'.
  """
  results = {}
  for name, ids in regions.items():
    p, g = np.isin(pred, ids), np.isin(label, ids)
    results[name] = {"dice": metrics.dice(p, g),
                     **metrics.surface_metrics(p, g, spacing=spacing, percentile=percentile,
                                               nsd_tolerance=nsd_tolerance)}
  return results


def evaluate_pair(pred_path: pathlib.Path, label_path: pathlib.Path, *, num_classes: int = 4,
                  include_background: bool = False, percentile: float = 95.0,
                  labels: labels_lib.LabelSpec | None = None, values: str = "auto",
                  nsd_tolerance: float | None = None) -> dict[int | str, dict[str, float]]:
  """Metrics of one prediction file against its ground truth (spacing from the ground truth).

  Returns:
    `{class id: metrics}` (classes 1..K-1, or 0..K-1 with `include_background`), then
    `{region name: metrics}` for the regions of `labels`. `labels` (default:
    `default_labels(num_classes)`) replaces `num_classes`. With `nsd_tolerance` (mm) each
    also has the normalised surface Dice 'nsd' (`metrics.surface_metrics`).
  """
  labels = labels_lib.default_labels(num_classes) if labels is None else labels
  k = labels.num_classes
  pred, pred_image = labels_lib.load_label_map(
      pred_path, num_classes=k, label_values=labels.label_values, values=values,
      prefer="class_ids")
  label, label_image = labels_lib.load_label_map(
      label_path, num_classes=k, label_values=labels.label_values, prefer="dataset")
  if pred.shape != label.shape:
    raise ValueError(f"{pred_path}: shape {pred.shape} differs from the ground truth "
                     f"{label_path} {label.shape}.")
  if not np.allclose(pred_image.spacing, label_image.spacing, rtol=1e-4, atol=1e-5):
    raise ValueError(f"{pred_path}: voxel size {pred_image.spacing} differs from the ground "
                     f"truth {label_path} {label_image.spacing}.")
  results: dict[int | str, dict[str, float]] = dict(metrics.segmentation_metrics(
      pred, label, num_classes=k, spacing=label_image.spacing,
      include_background=include_background, percentile=percentile,
      nsd_tolerance=nsd_tolerance))
  results.update(region_metrics(pred, label, labels.regions, spacing=label_image.spacing,
                                percentile=percentile, nsd_tolerance=nsd_tolerance))
  return results
