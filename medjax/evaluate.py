r"""Scores predicted label maps against ground truth: Dice, HD95 and ASSD (mm) per class and region.

  python -m medjax.evaluate --pred predictions/ --label iSeg-2017-Training/ [--output_dir O]
  python -m medjax.evaluate --pred subject-9-label.nii.gz --label subject-9-label.hdr
  python -m medjax.evaluate --pred O --label Dataset001_Brain/labelsTr --workdir W
  python -m medjax.evaluate --pred O --label Task01_BrainTumour/labelsTr \
      --dataset_json Task01_BrainTumour/dataset.json [--values class_ids|dataset|auto]

Matching. `--pred` and `--label` are two files, or two folders whose label maps are matched by
case: `subject-N` in the file name, else the file name without its ending and without
`-label`/`-seg`/`-pred` suffixes (so `{case}.nii.gz` pairs with `{case}.nii.gz`, and
`subject-1-label.hdr` with `subject-1.nii.gz`). Which image files (`.nii`, `.nii.gz`, `.hdr`) of a
folder (and of its iSeg-2017-Training/Testing subfolders, if any) are label maps:

* iSeg style: when some file names contain `label`, `seg` or `pred`, only those files (so the
  T1/T2 images beside them are skipped);
* nnU-Net / Decathlon style: in a `labelsTr/` or `labelsTs/` folder, or when no file name carries
  those words (`medjax.predict`'s `{case}.nii.gz`), every image file.

Always skipped: `-probabilities` files, hidden files (macOS `._*`) and iSeg's
`subject-N-T1`/`-T2` images.

Classes. The class names, the on-disk value of each class and the evaluation regions come from
`--workdir` (its `preprocessing.json`, written by medjax.train; an older workdir's `config.json`
gives only `dataset.num_classes`), or from `--dataset_json` (an nnU-Net v2 or Decathlon
dataset.json; nnU-Net's region-based labels such as `"whole tumor": [1, 2, 3]` become regions),
else from `--num_classes` (4 classes: iSeg's names and values 0/10/150/250).

Label values. A label map may hold class ids 0..K-1 or the dataset's label values (BraTS
0/1/2/4, iSeg 0/10/150/250), each file read on its own. `--values` says how the predictions hold
them (as `medjax.predict --values` wrote them):

* `class_ids`: every value must be a class id; `dataset`: every value must be a dataset value;
* `auto` (default): dataset values when every value is a dataset value and some value is not a
  class id (BraTS 4, iSeg 10), else class ids. A map whose values are all both, e.g. a BraTS
  prediction holding only {0, 1, 2}, is read as class ids; the two readings of it differ only
  when the dataset's values are not 0, 1, 2, ... in order (Decathlon labels such as
  {"0", "2", "5"}), and then a warning says which one was taken.

The ground truth is always read as `auto`, except that a map valid both ways is read as dataset
values (how dataset folders store labels). A map fitting neither convention is an error.

Regions. Each region (a union of classes, e.g. BraTS's whole tumour WT = (1, 2, 3), tumour core
TC = (1, 3), enhancing tumour ET = (3,) as class ids) is scored as one binary mask with the same
metrics, in rows named after the region (`NAME (region)` if a class has that name) after the class
rows.

Distances use the ground truth's voxel spacing. The table is printed and saved as `metrics.csv`
and `metrics.json` in `--output_dir` (default: the prediction folder, or the folder of the
prediction file). Metric conventions (surfaces, percentile, empty masks) are in
`medjax/metrics.py`; in the JSON file nan is written as null and inf as "inf".
"""

from __future__ import annotations

import csv
import dataclasses
from io import StringIO
import json
import os
import pathlib
import re
import sys
import tempfile
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from medjax import io
from medjax import metrics
from medjax.data import iseg
from medjax.data import layouts

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".hdr")
_LABEL_WORDS = re.compile(r"label|seg|pred", re.IGNORECASE)
_SUBJECT_RE = re.compile(r"subject[-_]?(\d+)", re.IGNORECASE)
_SUFFIX_RE = re.compile(r"([-_.](label|labels|seg|segmentation|pred|prediction))+$", re.IGNORECASE)
# iSeg's image files beside its label maps: never label maps.
_ISEG_IMAGE_RE = re.compile(r"^subject-\d+-(T1|T2)$", re.IGNORECASE)
# Folders whose every image file is a label map (nnU-Net v2 and the Decathlon).
_LABEL_FOLDERS = ("labelsTr", "labelsTs")
METRIC_NAMES = ("dice", "hd95", "assd")
# With a surface tolerance (`--nsd_tolerance`, mm) also the normalised surface Dice, under the
# key `metrics.surface_metrics` gives it.
NSD = "nsd"
UNITS = {"dice": "fraction", "hd95": "mm", "assd": "mm", NSD: "fraction"}
VALUES = ("auto", "class_ids", "dataset")
PREPROCESSING_FILENAME = "preprocessing.json"  # medjax.data.preprocessing.FILENAME
CONFIG_FILENAME = "config.json"  # medjax.checkpoint.CONFIG_FILENAME


# ---------------------------------------------------------------------------------------------
# Classes, label values and regions.


@dataclasses.dataclass(frozen=True)
class LabelSpec:
  """What the classes of the label maps are.

  Attributes:
    class_names: class id k's name; class 0 is the background.
    label_values: the on-disk label value of class k (e.g. BraTS (0, 1, 2, 4)).
    regions: region name -> the class ids it unites, e.g. {"WT": (1, 2, 3)}; may be empty.
    source: where this came from (a file, or `--num_classes`), for messages.
  """
  class_names: tuple[str, ...]
  label_values: tuple[int, ...]
  regions: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
  source: str = "--num_classes"

  def __post_init__(self):
    k = len(self.class_names)
    if not 2 <= k <= 256:
      raise ValueError(f"{self.source}: {k} classes {list(self.class_names)[:8]}; expected 2 to "
                       "256 (background included).")
    if len(self.label_values) != k or len(set(self.label_values)) != k:
      raise ValueError(f"{self.source}: label values {list(self.label_values)} must be {k} "
                       f"distinct integers, one per class {list(self.class_names)}.")
    for name, ids in self.regions.items():
      if not ids or any(not 0 <= i < k for i in ids):
        raise ValueError(f"{self.source}: region {name!r} = {list(ids)}; expected class ids in "
                         f"0..{k - 1}.")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def class_names(num_classes: int) -> tuple[str, ...]:
  """Default class names: iSeg's for 4 classes, else `class0`, `class1`, ..."""
  if num_classes == len(iseg.CLASS_NAMES):
    return tuple(iseg.CLASS_NAMES)
  return tuple(f"class{k}" for k in range(num_classes))


def default_labels(num_classes: int) -> LabelSpec:
  """Today's convention without a workdir or dataset.json: iSeg for 4 classes, else class ids."""
  if num_classes == len(iseg.LABEL_VALUES):
    values = tuple(iseg.LABEL_VALUES)
  else:
    values = tuple(range(num_classes))
  return LabelSpec(class_names=class_names(num_classes), label_values=values,
                   source=f"--num_classes={num_classes}")


def labels_from_workdir(workdir: str | os.PathLike) -> LabelSpec:
  """Class names, label values and regions of a training workdir (or its `checkpoints/`).

  From its `preprocessing.json`; a workdir from before that file existed gives only
  `dataset.num_classes` of its `config.json` (then named as `default_labels`).

  Raises:
    FileNotFoundError: no such folder, or neither file in it.
    ValueError: a file that cannot be read.
  """
  path = pathlib.Path(workdir).expanduser()
  if not path.is_dir():
    raise FileNotFoundError(f"--workdir {path} does not exist; expected a medjax training workdir "
                            f"(holding {PREPROCESSING_FILENAME} or {CONFIG_FILENAME}).")
  if (path.name == "checkpoints" and not (path / PREPROCESSING_FILENAME).exists()
      and not (path / CONFIG_FILENAME).exists()):
    path = path.parent
  if (path / PREPROCESSING_FILENAME).is_file():
    # Imported here: it loads tensorflow_datasets, which scoring files alone never needs.
    from medjax.data import preprocessing  # pylint: disable=g-import-not-at-top
    names = preprocessing.load(path).names
    return LabelSpec(class_names=names.class_names, label_values=names.label_values,
                     regions=dict(names.regions), source=str(path / PREPROCESSING_FILENAME))
  config_path = path / CONFIG_FILENAME
  if not config_path.is_file():
    raise FileNotFoundError(f"--workdir {path}: holds neither {PREPROCESSING_FILENAME} nor "
                            f"{CONFIG_FILENAME}; expected a medjax training workdir.")
  try:
    config = json.loads(config_path.read_text())
    num_classes = config["dataset"]["num_classes"]
  except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
    raise ValueError(f"{config_path}: cannot read dataset.num_classes ({type(e).__name__}: {e}); "
                     "expected the config a medjax training run saved.") from e
  if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
    raise ValueError(f"{config_path}: dataset.num_classes is {num_classes!r}; expected an "
                     "integer >= 2.")
  return dataclasses.replace(default_labels(num_classes), source=str(config_path))


def labels_from_dataset_json(path: str | os.PathLike) -> LabelSpec:
  """Class names, label values and regions from the `labels` of an nnU-Net v2 or Decathlon
  dataset.json (the file, or the folder holding it; the images are not looked at).

  * Decathlon: `{"0": "background", "1": "edema", ...}` (value -> name); classes in value order.
  * nnU-Net v2: `{"background": 0, "CSF": 1, ...}` (name -> value); classes in value order, so
    nnU-Net's consecutive ids are the class ids (as `layouts.read_dataset` gives them).
  * nnU-Net v2 region-based labels: `{"background": 0, "whole tumor": [1, 2, 3],
    "tumor core": [2, 3], "enhancing tumor": 3}`; each entry but the background is a region,
    the classes are the values the regions use (named `label_<value>`).

  Raises:
    FileNotFoundError: no such file.
    ValueError: not JSON, or no valid `labels`; the message names the file.
  """
  path = pathlib.Path(path).expanduser()
  if path.is_dir():
    path = path / "dataset.json"
  if not path.is_file():
    raise FileNotFoundError(f"--dataset_json {path} does not exist; expected an nnU-Net v2 or "
                            "Decathlon dataset.json.")
  try:
    spec = json.loads(path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON ({e}).") from e
  labels = spec.get("labels") if isinstance(spec, dict) else None
  if not isinstance(labels, dict) or not labels:
    raise ValueError(f"{path}: no 'labels' object; expected nnU-Net's {{\"background\": 0, ...}} "
                     "or the Decathlon's {\"0\": \"background\", ...}.")
  source = str(path)
  if all(isinstance(k, str) and k.isdigit() and isinstance(v, str) for k, v in labels.items()):
    by_value = {int(k): v for k, v in labels.items()}
    values = tuple(sorted(by_value))
    if values[0] != 0:
      raise ValueError(f"{path}: 'labels' values {list(values)} must include 0 (background).")
    return LabelSpec(class_names=tuple(by_value[v] for v in values), label_values=values,
                     source=source)

  def ints(name: str, value: Any) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                            for v in items):
      raise ValueError(f"{path}: label {name!r}: {value!r} is not a non-negative integer or a "
                       "list of them; expected {\"background\": 0, \"tumour\": 1, ...} (nnU-Net) "
                       "or {\"0\": \"background\", ...} (Decathlon).")
    return tuple(items)

  parsed = {str(name): ints(name, value) for name, value in labels.items()}
  if not any(isinstance(v, list) for v in labels.values()):
    by_value: dict[int, str] = {}
    for name, (value,) in parsed.items():
      if value in by_value:
        raise ValueError(f"{path}: labels {by_value[value]!r} and {name!r} share the value "
                         f"{value}.")
      by_value[value] = name
    values = tuple(sorted(by_value))
    if values[0] != 0:
      raise ValueError(f"{path}: label values {list(values)} must include 0 (background).")
    return LabelSpec(class_names=tuple(by_value[v] for v in values), label_values=values,
                     source=source)
  background = [name for name, v in parsed.items() if v == (0,)]
  if len(background) != 1:
    raise ValueError(f"{path}: region-based labels need one background entry with the value 0, "
                     f"got {background or 'none'}.")
  regions = {name: v for name, v in parsed.items() if name != background[0]}
  for name, v in regions.items():
    if 0 in v:
      raise ValueError(f"{path}: region {name!r} {list(v)} includes the background value 0.")
  values = tuple(sorted({0} | {v for r in regions.values() for v in r}))
  index = {v: k for k, v in enumerate(values)}
  return LabelSpec(
      class_names=(background[0],) + tuple(f"label_{v}" for v in values[1:]),
      label_values=values,
      regions={name: tuple(sorted(index[v] for v in set(r))) for name, r in regions.items()},
      source=source)


def resolve_labels(*, num_classes: int | None = None, workdir: str | os.PathLike | None = None,
                   dataset_json: str | os.PathLike | None = None) -> LabelSpec:
  """The `LabelSpec` of a run: from `workdir`, `dataset_json` or `num_classes` (default 4).

  Raises:
    ValueError: both `workdir` and `dataset_json`, or a `num_classes` they contradict.
  """
  if workdir is not None and dataset_json is not None:
    raise ValueError(f"--workdir {workdir} and --dataset_json {dataset_json}: give one of them.")
  if workdir is None and dataset_json is None:
    return default_labels(4 if num_classes is None else int(num_classes))
  spec = (labels_from_workdir(workdir) if workdir is not None
          else labels_from_dataset_json(dataset_json))
  if num_classes is not None and int(num_classes) != spec.num_classes:
    raise ValueError(f"--num_classes={num_classes}, but {spec.source} has {spec.num_classes} "
                     f"classes {list(spec.class_names)}; leave --num_classes out.")
  return spec


# ---------------------------------------------------------------------------------------------
# Label maps.


def to_class_ids(data: np.ndarray, *, num_classes: int, source: str,
                 label_values: Sequence[int] | None = None, values: str = "auto",
                 prefer: str = "class_ids") -> np.ndarray:
  """Label map of class ids 0..K-1 or of dataset label values -> uint8 class ids `[D, H, W]`.

  Args:
    data: the label map, any integer or integral float dtype.
    num_classes: K.
    source: what to name in errors (the file).
    label_values: the on-disk value of class k; None: iSeg's 0/10/150/250 when K is 4, else
      only class ids are accepted.
    values: 'class_ids', 'dataset' or 'auto' (see the module docstring).
    prefer: in 'auto', the reading of a map that is valid both ways ('class_ids' for
      predictions, 'dataset' for ground truth).

  Raises:
    ValueError: values that fit neither convention (or not the one `values` asks for); the
      message names `source`.
  """
  if values not in VALUES:
    raise ValueError(f"--values {values!r}: expected one of {VALUES}.")
  if label_values is None:
    label_values = default_labels(num_classes).label_values
  dataset = tuple(int(v) for v in label_values)
  data = np.asarray(data)
  found = np.unique(data)
  integral = bool(np.all(found == np.round(found))) if found.size else True
  is_ids = integral and bool(np.all((found >= 0) & (found < num_classes)))
  is_dataset = integral and bool(np.all(np.isin(found, dataset)))
  iseg_values = num_classes == len(iseg.LABEL_VALUES) and dataset == tuple(iseg.LABEL_VALUES)
  dataset_text = (f"iSeg values {iseg.LABEL_VALUES}" if iseg_values
                  else f"the dataset's label values {dataset}")
  shown = found[:8].tolist()
  if values == "class_ids" and not is_ids:
    raise ValueError(f"{source}: label values {shown} are not class ids 0..{num_classes - 1} "
                     "(--values class_ids).")
  if values == "dataset" and not is_dataset:
    raise ValueError(f"{source}: label values {shown} are not {dataset_text} (--values dataset).")
  if not is_ids and not is_dataset:
    raise ValueError(f"{source}: label values {shown} are neither class ids "
                     f"0..{num_classes - 1} nor {dataset_text}.")
  if values == "auto":
    if is_ids and is_dataset:
      differs = [int(v) for v in found if dataset.index(int(v)) != int(v)]
      use_dataset = prefer == "dataset" and bool(differs)
      if differs:
        logging.warning("%s: label values %s are both class ids and dataset values %s; read as "
                        "%s (pass --values to choose).", source, shown, dataset,
                        "dataset values" if use_dataset else "class ids")
    else:
      use_dataset = is_dataset
  else:
    use_dataset = values == "dataset"
  if use_dataset:
    return layouts.values_to_classes(data, dataset, source=source)
  return data.astype(np.uint8)


def load_label_map(path: str | os.PathLike, *, num_classes: int = 4,
                   label_values: Sequence[int] | None = None, values: str = "auto",
                   prefer: str = "class_ids") -> tuple[np.ndarray, io.Image]:
  """Reads a label map file -> (uint8 class ids `[D, H, W]`, the `io.Image`); see `to_class_ids`."""
  image = io.load_image(path)
  return to_class_ids(image.data, num_classes=num_classes, source=str(path),
                      label_values=label_values, values=values, prefer=prefer), image


# ---------------------------------------------------------------------------------------------
# Matching files.


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
  images = [p for d in folders for p in sorted(d.iterdir())
            if _is_image(p) and not p.name.startswith(".")
            and "probabilit" not in p.name.lower() and not _ISEG_IMAGE_RE.match(_stem(p))]
  named = [p for p in images if _LABEL_WORDS.search(_stem(p))]
  # nnU-Net / Decathlon naming: {case}.nii.gz, with no word saying it is a label map.
  files = images if folder.name in _LABEL_FOLDERS or not named else named
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
        "files named like subject-N-label.nii.gz, or {case}.nii.gz in both folders (nnU-Net's "
        "labelsTr/).")
  return [(k, preds[k], labels[k]) for k in keys]


def _natural_key(key: str) -> tuple[Any, ...]:
  return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key))


# ---------------------------------------------------------------------------------------------
# Scoring.


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
                  labels: LabelSpec | None = None, values: str = "auto",
                  nsd_tolerance: float | None = None) -> dict[int | str, dict[str, float]]:
  """Metrics of one prediction file against its ground truth (spacing from the ground truth).

  Returns:
    `{class id: metrics}` (classes 1..K-1, or 0..K-1 with `include_background`), then
    `{region name: metrics}` for the regions of `labels`. `labels` (default:
    `default_labels(num_classes)`) replaces `num_classes`. With `nsd_tolerance` (mm) each
    also has the normalised surface Dice 'nsd' (`metrics.surface_metrics`).
  """
  labels = default_labels(num_classes) if labels is None else labels
  k = labels.num_classes
  pred, pred_image = load_label_map(pred_path, num_classes=k, label_values=labels.label_values,
                                    values=values, prefer="class_ids")
  label, label_image = load_label_map(label_path, num_classes=k,
                                      label_values=labels.label_values, prefer="dataset")
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


def metric_names(results: dict[str, dict[int | str, dict[str, float]]]) -> tuple[str, ...]:
  """The metrics the results hold: dice, hd95, assd, and nsd when it was computed."""
  rows = [row for per_key in results.values() for row in per_key.values()]
  return METRIC_NAMES + ((NSD,) if rows and NSD in rows[0] else ())


def _as_labels(labels: LabelSpec | int) -> LabelSpec:
  return labels if isinstance(labels, LabelSpec) else default_labels(int(labels))


def row_names(labels: LabelSpec | int) -> dict[int | str, str]:
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


def summarize(results: dict[str, dict[int | str, dict[str, float]]], labels: LabelSpec | int
              ) -> dict[str, dict[str, float]]:
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
                 labels: LabelSpec | int) -> str:
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


def save_results(output_dir: str | os.PathLike,
                 results: dict[str, dict[int | str, dict[str, float]]], labels: LabelSpec | int,
                 *, pairs: list[tuple[str, pathlib.Path, pathlib.Path]]
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
  _atomic_write(csv_path, buf.getvalue())
  files = {key: {"prediction": str(p), "label": str(l)} for key, p, l in pairs}
  document: dict[str, Any] = {
      "units": {m: UNITS[m] for m in measured},
      "subjects": {key: {"files": files.get(key, {}),
                         **{names[k]: {m: _json_value(r[m]) for m in measured}
                            for k, r in per_key.items()}}
                   for key, per_key in results.items()},
      "mean": {name: {m: _json_value(v) for m, v in row.items()} for name, row in summary.items()},
  }
  if labels.regions:
    document["regions"] = {names[r]: [labels.class_names[i] for i in ids]
                           for r, ids in labels.regions.items()}
  _atomic_write(json_path, json.dumps(document, indent=2) + "\n")
  return csv_path, json_path


def run(pred: str, label: str, *, output_dir: str | None = None, num_classes: int | None = None,
        include_background: bool = False, percentile: float = 95.0,
        workdir: str | None = None, dataset_json: str | None = None, values: str = "auto",
        nsd_tolerance: float | None = None) -> dict[str, dict[int | str, dict[str, float]]]:
  """Matches, scores, prints and saves.

  Args:
    pred, label: two label-map files or two folders (see the module docstring).
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
  if values not in VALUES:
    raise ValueError(f"--values {values!r}: expected one of {VALUES}.")
  if nsd_tolerance is not None and not (np.isfinite(nsd_tolerance) and nsd_tolerance >= 0):
    raise ValueError(f"--nsd_tolerance {nsd_tolerance}: expected a distance >= 0 in mm.")
  labels = resolve_labels(num_classes=num_classes, workdir=workdir, dataset_json=dataset_json)
  pairs = match_files(pred, label)
  results = {key: evaluate_pair(p, l, include_background=include_background,
                                percentile=percentile, labels=labels, values=values,
                                nsd_tolerance=nsd_tolerance)
             for key, p, l in pairs}
  if output_dir is None:
    pred_path = pathlib.Path(pred).expanduser()
    output_dir = str(pred_path if pred_path.is_dir() else pred_path.parent)
  csv_path, json_path = save_results(output_dir, results, labels, pairs=pairs)
  print(format_table(results, labels))
  print(f"\nSaved {csv_path} and {json_path}")
  return results


def define_flags() -> None:
  """Defines the command-line flags (only when run as a script, so that importing this module
  beside other entry points defines no global flags)."""
  flags.DEFINE_string("pred", None, "Predicted label map, or a folder of them.")
  flags.DEFINE_string("label", None, "Ground-truth label map, or a folder of them.")
  flags.DEFINE_string("output_dir", None,
                      "Where metrics.csv and metrics.json go (default: beside the predictions).")
  flags.DEFINE_integer("num_classes", 4, "Number of classes, background included (without "
                       "--workdir or --dataset_json).")
  flags.DEFINE_bool("include_background", False, "Also score class 0 (background).")
  flags.DEFINE_float("percentile", 95.0, "Hausdorff distance percentile.")
  flags.DEFINE_float("nsd_tolerance", None, "Also the normalised surface Dice (Nikolov et al.): "
                     "the fraction of both surfaces within this distance (mm) of the other.")
  flags.DEFINE_string("workdir", None, "Training workdir: class names, label values and regions "
                      "from its preprocessing.json (or config.json's dataset.num_classes).")
  flags.DEFINE_string("dataset_json", None, "An nnU-Net v2 or Decathlon dataset.json (or its "
                      "folder): class names, label values and regions from its labels.")
  flags.DEFINE_enum("values", "auto", list(VALUES),
                    "How the predictions hold their classes: class ids, the dataset's label "
                    "values, or auto (dataset values when some value is not a class id).")


def main(argv: list[str]) -> None:
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  num_classes = FLAGS.num_classes if FLAGS["num_classes"].present else None
  try:
    run(FLAGS.pred, FLAGS.label, output_dir=FLAGS.output_dir, num_classes=num_classes,
        include_background=FLAGS.include_background, percentile=FLAGS.percentile,
        workdir=FLAGS.workdir, dataset_json=FLAGS.dataset_json, values=FLAGS.values,
        nsd_tolerance=FLAGS.nsd_tolerance)
  except (ValueError, FileNotFoundError) as e:
    print(f"medjax.evaluate: error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["pred", "label"])
  app.run(main)
