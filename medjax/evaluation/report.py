"""Evaluation results as a table and as files: per-subject rows, means, metrics.csv/json.

`results` everywhere is `{subject key: {class id or region name: {metric: value}}}`, as
`medjax.evaluation.run` returns it; `labels` is a `LabelSpec` or a number of classes.
"""

from __future__ import annotations

import csv
from io import StringIO
import json
import os
import pathlib
from typing import Any

import numpy as np

from medjax import io as io_lib
from medjax import labels as labels_lib

METRIC_NAMES = ("dice", "hd95", "assd")
# With a surface tolerance (`--nsd_tolerance`, mm) also the normalised surface Dice, under the
# key `metrics.surface_metrics` gives it.
NSD = "nsd"
UNITS = {"dice": "fraction", "hd95": "mm", "assd": "mm", NSD: "fraction"}


def metric_names(results: dict[str, dict[int | str, dict[str, float]]]) -> tuple[str, ...]:
  """The metrics the results hold: dice, hd95, assd, and nsd when it was computed."""
  rows = [row for per_key in results.values() for row in per_key.values()]
  return METRIC_NAMES + ((NSD,) if rows and NSD in rows[0] else ())


def _as_labels(labels: labels_lib.LabelSpec | int) -> labels_lib.LabelSpec:
  return (labels if isinstance(labels, labels_lib.LabelSpec)
          else labels_lib.default_labels(int(labels)))


def row_names(labels: labels_lib.LabelSpec | int) -> dict[int | str, str]:
  """Row name of each result key: class id -> class name, region -> its name (`NAME (region)`
  when a class has the same name)."""
  labels = _as_labels(labels)
  names: dict[int | str, str] = dict(enumerate(labels.class_names))
  for region in labels.regions:
    names[region] = f"{region} (region)" if region in labels.class_names else region
  return names


def _keys(results: dict[str, dict[int | str, dict[str, float]]]) -> list[int | str]:
  keys: list[int | str] = []
  for per_key in results.values():
    keys += [k for k in per_key if k not in keys]
  classes = sorted(k for k in keys if isinstance(k, int))
  return classes + [k for k in keys if not isinstance(k, int)]


def summarize(results: dict[str, dict[int | str, dict[str, float]]],
              labels: labels_lib.LabelSpec | int) -> dict[str, dict[str, float]]:
  """Per-class and per-region mean over subjects (nan-skipping; inf kept) ->
  `{row name: {metric: value}}`. `labels` is a `LabelSpec` or a number of classes."""
  names = row_names(labels)
  summary = {}
  for k in _keys(results):
    summary[names[k]] = {}
    for m in metric_names(results):
      values = np.array([r[k][m] for r in results.values() if k in r], np.float64)
      finite = values[~np.isnan(values)]
      summary[names[k]][m] = float(finite.mean()) if finite.size else float("nan")
  return summary


def format_table(results: dict[str, dict[int | str, dict[str, float]]],
                 labels: labels_lib.LabelSpec | int) -> str:
  """A text table: one row per subject and class (then region), then the means."""
  names = row_names(labels)
  summary = summarize(results, labels)
  sw = max([14] + [len(k) + 2 for k in results])
  cw = max([12] + [len(n) + 2 for n in summary])
  nsd = NSD in metric_names(results)

  def line(key: str, name: str, row: dict[str, float]) -> str:
    text = (f"{key:<{sw}}{name:<{cw}}{row['dice']:>8.4f}{row['hd95']:>12.3f}"
            f"{row['assd']:>12.3f}")
    return text + (f"{row[NSD]:>8.4f}" if nsd else "")

  lines = [f"{'subject':<{sw}}{'class':<{cw}}{'Dice':>8}{'HD95 (mm)':>12}{'ASSD (mm)':>12}"
           + (f"{'NSD':>8}" if nsd else "")]
  for key, per_key in results.items():
    for k, row in per_key.items():
      lines.append(line(key, names[k], row))
  for name, row in summary.items():
    lines.append(line("mean", name, row))
  return "\n".join(lines)


def json_value(value: float) -> float | str | None:
  """A metric for JSON, which has no nan/inf: null / "inf", so any JSON reader accepts it."""
  if np.isnan(value):
    return None
  if np.isinf(value):
    return "inf" if value > 0 else "-inf"
  return value


def save_results(output_dir: str | os.PathLike,
                 results: dict[str, dict[int | str, dict[str, float]]],
                 labels: labels_lib.LabelSpec | int, *,
                 pairs: list[tuple[str, pathlib.Path, pathlib.Path]]
                 ) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes `metrics.csv` (subject, class, dice, hd95_mm, assd_mm[, nsd]) and `metrics.json`.

  Region rows follow the class rows of each subject under the region's name; `metrics.json`
  also lists each region's classes under "regions" when there are regions.
  """
  labels = _as_labels(labels)
  output_dir = pathlib.Path(output_dir).expanduser()
  output_dir.mkdir(parents=True, exist_ok=True)
  names = row_names(labels)
  summary = summarize(results, labels)
  measured = metric_names(results)
  rows = [["subject", "class", "dice", "hd95_mm", "assd_mm"] + ([NSD] if NSD in measured else [])]
  for key, per_key in results.items():
    rows += [[key, names[k], *(repr(float(r[m])) for m in measured)]
             for k, r in per_key.items()]
  rows += [["mean", name, *(repr(float(r[m])) for m in measured)]
           for name, r in summary.items()]
  csv_path, json_path = output_dir / "metrics.csv", output_dir / "metrics.json"
  buf = StringIO()
  csv.writer(buf).writerows(rows)
  io_lib.write_text(csv_path, buf.getvalue())
  files = {key: {"prediction": str(p), "label": str(l)} for key, p, l in pairs}
  document: dict[str, Any] = {
      "units": {m: UNITS[m] for m in measured},
      "subjects": {key: {"files": files.get(key, {}),
                         **{names[k]: {m: json_value(r[m]) for m in measured}
                            for k, r in per_key.items()}}
                   for key, per_key in results.items()},
      "mean": {name: {m: json_value(v) for m, v in row.items()} for name, row in summary.items()},
  }
  if labels.regions:
    document["regions"] = {names[r]: [labels.class_names[i] for i in ids]
                           for r, ids in labels.regions.items()}
  io_lib.write_text(json_path, json.dumps(document, indent=2) + "\n")
  return csv_path, json_path
