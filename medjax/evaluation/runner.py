"""`run`: match, score, print and save (the library call behind `python -m medjax.evaluate`)."""

from __future__ import annotations

import pathlib

import numpy as np

from medjax import labels as labels_lib
from medjax.evaluation import matching
from medjax.evaluation import report
from medjax.evaluation import scoring


def run(pred: str, label: str, *, output_dir: str | None = None, num_classes: int | None = None,
        include_background: bool = False, percentile: float = 95.0,
        workdir: str | None = None, dataset_json: str | None = None, values: str = "auto",
        nsd_tolerance: float | None = None) -> dict[str, dict[int | str, dict[str, float]]]:
  """Matches, scores, prints and saves.

  Args:
    pred, label: two label-map files or two folders (see `medjax.evaluate`'s docstring).
    output_dir: where metrics.csv/json go (default: beside the predictions).
    num_classes: classes, background included, without `workdir`/`dataset_json` (default 4).
    include_background: also score class 0.
    percentile: the Hausdorff distance percentile.
    workdir: a training workdir to take class names, label values and regions from.
    dataset_json: an nnU-Net v2 or Decathlon dataset.json (or its folder), the same.
    values: how the predictions hold their classes: 'auto', 'class_ids' or 'dataset'.
    nsd_tolerance: also the normalised surface Dice at this tolerance (mm).

  Returns:
    `{subject key: {class id: metrics, ..., region name: metrics, ...}}`.
  """
  if values not in labels_lib.VALUES:
    raise ValueError(f"--values {values!r}: expected one of {labels_lib.VALUES}.")
  if nsd_tolerance is not None and not (np.isfinite(nsd_tolerance) and nsd_tolerance >= 0):
    raise ValueError(f"--nsd_tolerance {nsd_tolerance}: expected a distance >= 0 in mm.")
  labels = labels_lib.resolve_labels(num_classes=num_classes, workdir=workdir,
                                     dataset_json=dataset_json)
  pairs = matching.match_files(pred, label)
  results = {key: scoring.evaluate_pair(p, l, include_background=include_background,
                                        percentile=percentile, labels=labels, values=values,
                                        nsd_tolerance=nsd_tolerance)
             for key, p, l in pairs}
  if output_dir is None:
    pred_path = pathlib.Path(pred).expanduser()
    output_dir = str(pred_path if pred_path.is_dir() else pred_path.parent)
  csv_path, json_path = report.save_results(output_dir, results, labels, pairs=pairs)
  print(report.format_table(results, labels))
  print(f"\nSaved {csv_path} and {json_path}")
  return results
