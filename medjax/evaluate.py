r"""Scores predicted label maps against ground truth: Dice, HD95 and ASSD (mm) per class.

  python -m medjax.evaluate --pred predictions/ --label iSeg-2017-Training/ [--output_dir O]
  python -m medjax.evaluate --pred subject-9-label.nii.gz --label subject-9-label.hdr

`--pred` and `--label` are two files, or two folders whose label maps are matched by subject
(`subject-N` in the file name, else the file name without `-label`/`-seg`/`-pred` suffixes).
In a folder (and its iSeg-2017-Training/Testing subfolders, if any), the label maps are the
image files whose names contain `label`, `seg` or `pred` (so T1/T2 and `-probabilities` files
beside them are skipped). Label maps may hold class ids 0..K-1 or iSeg values 0/10/150/250.
Distances use the ground truth's voxel spacing. The table is printed and saved as `metrics.csv`
and `metrics.json` in `--output_dir` (default: the prediction folder, or the folder of the
prediction file). Metric conventions (surfaces, percentile, empty masks) are in
`medjax/metrics.py`; in the JSON file nan is written as null and inf as "inf".
"""

import csv
from io import StringIO
import json
import os
import pathlib
import re
import sys
import tempfile
from typing import Any

from absl import app
from absl import flags
import numpy as np

from medjax import io
from medjax import metrics
from medjax.data import iseg

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".hdr")
_LABEL_WORDS = re.compile(r"label|seg|pred", re.IGNORECASE)
_SUBJECT_RE = re.compile(r"subject[-_]?(\d+)", re.IGNORECASE)
_SUFFIX_RE = re.compile(r"([-_.](label|labels|seg|segmentation|pred|prediction))+$", re.IGNORECASE)
METRIC_NAMES = ("dice", "hd95", "assd")


def to_class_ids(data: np.ndarray, *, num_classes: int, source: str) -> np.ndarray:
  """Label map of class ids 0..K-1 or of iSeg values 0/10/150/250 -> uint8 class ids `[D, H, W]`.

  Raises:
    ValueError: values that are neither (the message names `source`).
  """
  data = np.asarray(data)
  values = np.unique(data)
  if np.all((values >= 0) & (values < num_classes) & (values == np.round(values))):
    return data.astype(np.uint8)
  if num_classes == len(iseg.LABEL_VALUES) and np.all(np.isin(values, iseg.LABEL_VALUES)):
    return iseg.values_to_classes(data, source=source)
  raise ValueError(f"{source}: label values {values[:8].tolist()} are neither class ids "
                   f"0..{num_classes - 1} nor iSeg values {iseg.LABEL_VALUES}.")


def load_label_map(path: str | os.PathLike, *, num_classes: int = 4
                   ) -> tuple[np.ndarray, io.Image]:
  """Reads a label map file -> (uint8 class ids `[D, H, W]`, the `io.Image`)."""
  image = io.load_image(path)
  return to_class_ids(image.data, num_classes=num_classes, source=str(path)), image


def _is_image(path: pathlib.Path) -> bool:
  return path.is_file() and path.name.lower().endswith(_IMAGE_SUFFIXES)


def _stem(path: pathlib.Path) -> str:
  name = path.name
  for suffix in _IMAGE_SUFFIXES:
    if name.lower().endswith(suffix):
      return name[:-len(suffix)]
  return name


def subject_key(path: pathlib.Path) -> str:
  """Matching key of a label-map file: `subject-N` when present, else the stem sans suffixes."""
  m = _SUBJECT_RE.search(path.name)
  if m:
    return f"subject-{int(m.group(1))}"
  return _SUFFIX_RE.sub("", _stem(path))


def _label_maps(folder: pathlib.Path) -> dict[str, pathlib.Path]:
  # An iSeg-2017 download keeps its files in two subfolders; look into those too.
  folders = [folder] + [folder / f for f in (iseg.TRAINING_FOLDER, iseg.TESTING_FOLDER)
                        if (folder / f).is_dir()]
  files = [p for d in folders for p in sorted(d.iterdir()) if _is_image(p)
           and _LABEL_WORDS.search(_stem(p)) and "probabilit" not in p.name.lower()]
  found: dict[str, pathlib.Path] = {}
  for path in files:
    key = subject_key(path)
    if key in found:
      raise ValueError(f"{path} and {found[key]} both match subject {key!r}; keep one label map "
                       "per subject in the folder.")
    found[key] = path
  return found


def match_files(pred: str | os.PathLike, label: str | os.PathLike
                ) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
  """Pairs prediction and ground-truth files: `[(subject key, pred path, label path)]`.

  Raises:
    FileNotFoundError: a path is missing, or two folders share no subject.
    ValueError: a file paired with a folder.
  """
  pred, label = pathlib.Path(pred).expanduser(), pathlib.Path(label).expanduser()
  for name, path in (("--pred", pred), ("--label", label)):
    if not path.exists():
      raise FileNotFoundError(f"{name} {path} does not exist; expected a label-map file or a "
                              "folder of them.")
  if pred.is_dir() != label.is_dir():
    raise ValueError(f"--pred {pred} and --label {label}: expected two files or two folders.")
  if not pred.is_dir():
    return [(subject_key(label), pred, label)]
  preds, labels = _label_maps(pred), _label_maps(label)
  keys = sorted(set(preds) & set(labels), key=_natural_key)
  if not keys:
    raise FileNotFoundError(
        f"No subject has both a prediction in {pred} ({sorted(preds) or 'no label maps'}) and a "
        f"ground truth in {label} ({sorted(labels) or 'no label maps'}); label maps are image "
        "files named like subject-N-label.nii.gz.")
  return [(k, preds[k], labels[k]) for k in keys]


def _natural_key(key: str) -> tuple[Any, ...]:
  return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key))


def evaluate_pair(pred_path: pathlib.Path, label_path: pathlib.Path, *, num_classes: int = 4,
                  include_background: bool = False, percentile: float = 95.0
                  ) -> dict[int, dict[str, float]]:
  """Metrics of one prediction file against its ground truth (spacing from the ground truth)."""
  pred, pred_image = load_label_map(pred_path, num_classes=num_classes)
  label, label_image = load_label_map(label_path, num_classes=num_classes)
  if pred.shape != label.shape:
    raise ValueError(f"{pred_path}: shape {pred.shape} differs from the ground truth "
                     f"{label_path} {label.shape}.")
  if not np.allclose(pred_image.spacing, label_image.spacing, rtol=1e-4, atol=1e-5):
    raise ValueError(f"{pred_path}: voxel size {pred_image.spacing} differs from the ground "
                     f"truth {label_path} {label_image.spacing}.")
  return metrics.segmentation_metrics(pred, label, num_classes=num_classes,
                                      spacing=label_image.spacing,
                                      include_background=include_background,
                                      percentile=percentile)


def class_names(num_classes: int) -> tuple[str, ...]:
  if num_classes == len(iseg.CLASS_NAMES):
    return tuple(iseg.CLASS_NAMES)
  return tuple(f"class{k}" for k in range(num_classes))


def summarize(results: dict[str, dict[int, dict[str, float]]], num_classes: int
              ) -> dict[str, dict[str, float]]:
  """Per-class mean over subjects (nan-skipping; inf kept) -> `{class name: {metric: value}}`."""
  names = class_names(num_classes)
  classes = sorted({k for r in results.values() for k in r})
  summary = {}
  for k in classes:
    summary[names[k]] = {}
    for m in METRIC_NAMES:
      values = np.array([r[k][m] for r in results.values()], np.float64)
      finite = values[~np.isnan(values)]
      summary[names[k]][m] = float(finite.mean()) if finite.size else float("nan")
  return summary


def format_table(results: dict[str, dict[int, dict[str, float]]], num_classes: int) -> str:
  """A text table: one row per subject and class, then the means."""
  names = class_names(num_classes)
  lines = [f"{'subject':<14}{'class':<12}{'Dice':>8}{'HD95 (mm)':>12}{'ASSD (mm)':>12}"]
  for key, per_class in results.items():
    for k, row in per_class.items():
      lines.append(f"{key:<14}{names[k]:<12}{row['dice']:>8.4f}{row['hd95']:>12.3f}"
                   f"{row['assd']:>12.3f}")
  for name, row in summarize(results, num_classes).items():
    lines.append(f"{'mean':<14}{name:<12}{row['dice']:>8.4f}{row['hd95']:>12.3f}"
                 f"{row['assd']:>12.3f}")
  return "\n".join(lines)


def _atomic_write(path: pathlib.Path, text: str) -> None:
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "w", newline="") as f:
      f.write(text)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; give the usual permissions
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _json_value(value: float) -> float | str | None:
  # JSON has no nan/inf: write them as null / "inf" so any JSON reader accepts the file.
  if np.isnan(value):
    return None
  if np.isinf(value):
    return "inf" if value > 0 else "-inf"
  return value


def save_results(output_dir: str | os.PathLike, results: dict[str, dict[int, dict[str, float]]],
                 num_classes: int, *, pairs: list[tuple[str, pathlib.Path, pathlib.Path]]
                 ) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes `metrics.csv` (subject, class, dice, hd95_mm, assd_mm) and `metrics.json`."""
  output_dir = pathlib.Path(output_dir).expanduser()
  output_dir.mkdir(parents=True, exist_ok=True)
  names = class_names(num_classes)
  summary = summarize(results, num_classes)
  rows = [["subject", "class", "dice", "hd95_mm", "assd_mm"]]
  for key, per_class in results.items():
    rows += [[key, names[k], *(repr(float(r[m])) for m in METRIC_NAMES)]
             for k, r in per_class.items()]
  rows += [["mean", name, *(repr(float(r[m])) for m in METRIC_NAMES)]
           for name, r in summary.items()]
  csv_path, json_path = output_dir / "metrics.csv", output_dir / "metrics.json"
  buf = StringIO()
  csv.writer(buf).writerows(rows)
  _atomic_write(csv_path, buf.getvalue())
  files = {key: {"prediction": str(p), "label": str(l)} for key, p, l in pairs}
  document = {
      "units": {"dice": "fraction", "hd95": "mm", "assd": "mm"},
      "subjects": {key: {"files": files.get(key, {}),
                         **{names[k]: {m: _json_value(r[m]) for m in METRIC_NAMES}
                            for k, r in per_class.items()}}
                   for key, per_class in results.items()},
      "mean": {name: {m: _json_value(v) for m, v in row.items()} for name, row in summary.items()},
  }
  _atomic_write(json_path, json.dumps(document, indent=2) + "\n")
  return csv_path, json_path


def run(pred: str, label: str, *, output_dir: str | None = None, num_classes: int = 4,
        include_background: bool = False, percentile: float = 95.0
        ) -> dict[str, dict[int, dict[str, float]]]:
  """Matches, scores, prints and saves; returns `{subject key: {class id: metrics}}`."""
  pairs = match_files(pred, label)
  results = {key: evaluate_pair(p, l, num_classes=num_classes,
                                include_background=include_background, percentile=percentile)
             for key, p, l in pairs}
  if output_dir is None:
    pred_path = pathlib.Path(pred).expanduser()
    output_dir = str(pred_path if pred_path.is_dir() else pred_path.parent)
  csv_path, json_path = save_results(output_dir, results, num_classes, pairs=pairs)
  print(format_table(results, num_classes))
  print(f"\nSaved {csv_path} and {json_path}")
  return results


def define_flags() -> None:
  """Defines the command-line flags (only when run as a script, so that importing this module
  beside other entry points defines no global flags)."""
  flags.DEFINE_string("pred", None, "Predicted label map, or a folder of them.")
  flags.DEFINE_string("label", None, "Ground-truth label map, or a folder of them.")
  flags.DEFINE_string("output_dir", None,
                      "Where metrics.csv and metrics.json go (default: beside the predictions).")
  flags.DEFINE_integer("num_classes", 4, "Number of classes, background included.")
  flags.DEFINE_bool("include_background", False, "Also score class 0 (background).")
  flags.DEFINE_float("percentile", 95.0, "Hausdorff distance percentile.")


def main(argv: list[str]) -> None:
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    run(FLAGS.pred, FLAGS.label, output_dir=FLAGS.output_dir, num_classes=FLAGS.num_classes,
        include_background=FLAGS.include_background, percentile=FLAGS.percentile)
  except (ValueError, FileNotFoundError) as e:
    print(f"medjax.evaluate: error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["pred", "label"])
  app.run(main)
