"""Where a run's classes come from: a training workdir, a dataset.json, or `--num_classes`."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

from medjax.labels.spec import default_labels
from medjax.labels.spec import LabelSpec

PREPROCESSING_FILENAME = "preprocessing.json"  # medjax.data.preprocessing.FILENAME
CONFIG_FILENAME = "config.json"  # medjax.checkpoint.CONFIG_FILENAME


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
