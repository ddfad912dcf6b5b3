"""Reading the fields of an nnU-Net v2 or Decathlon `dataset.json`, each with an error naming the
file, the key and what was expected."""

from __future__ import annotations

import json
import pathlib
from typing import Any


def load(spec_path: pathlib.Path) -> dict:
  """The JSON object of `spec_path`.

  Raises:
    ValueError: not valid JSON, or not a JSON object.
  """
  try:
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{spec_path}: not valid JSON ({e}).") from e
  if not isinstance(spec, dict):
    raise ValueError(f"{spec_path}: expected a JSON object, got {type(spec).__name__}.")
  return spec


def field(spec: dict, key: str, types: type | tuple[type, ...], spec_path: pathlib.Path,
          expected: str) -> Any:
  """`spec[key]`, checked to be one of `types` (never a bool)."""
  if key not in spec:
    raise ValueError(f"{spec_path}: missing key {key!r}; expected {expected}.")
  value = spec[key]
  if not isinstance(value, types) or isinstance(value, bool):
    raise ValueError(f"{spec_path}: {key!r} must be {expected}, got {value!r}.")
  return value


def index_names(spec: dict, key: str, spec_path: pathlib.Path, expected: str
                ) -> dict[int, str]:
  """A dataset.json dict {"0": name, "1": name, ...} as {0: name, 1: name, ...}."""
  value = field(spec, key, dict, spec_path, expected)
  out = {}
  for k, name in value.items():
    if not (isinstance(k, str) and k.isdigit()) or not isinstance(name, str) or not name:
      raise ValueError(
          f"{spec_path}: {key!r} entry {k!r}: {name!r} is not valid; expected {expected}.")
    out[int(k)] = name
  if not out:
    raise ValueError(f"{spec_path}: {key!r} is empty; expected {expected}.")
  return out


def channel_names(spec: dict, key: str, spec_path: pathlib.Path) -> tuple[str, ...]:
  expected = 'a dict of channel index -> name, e.g. {"0": "T1", "1": "T2"}'
  names = index_names(spec, key, spec_path, expected)
  if sorted(names) != list(range(len(names))):
    raise ValueError(
        f"{spec_path}: {key!r} indices {sorted(names)} must be 0..{len(names) - 1}.")
  return tuple(names[c] for c in range(len(names)))


def num_training(spec: dict, spec_path: pathlib.Path) -> int:
  n = field(spec, "numTraining", int, spec_path, "the number of training cases (an integer)")
  if n < 1:
    raise ValueError(f"{spec_path}: numTraining must be >= 1, got {n}.")
  return n


def dataset_name(spec: dict, spec_path: pathlib.Path, root: pathlib.Path) -> str:
  if "name" not in spec:
    return root.name
  return field(spec, "name", str, spec_path, "a string")


def check_count(spec_path: pathlib.Path, num_training: int, found: int, where: str) -> None:
  if num_training != found:
    raise ValueError(
        f"{spec_path}: numTraining is {num_training}, but {where} {found} training case(s).")


def nnunet_labels(spec: dict, spec_path: pathlib.Path) -> tuple[str, ...]:
  """Class names of nnU-Net v2's `labels` (name -> id), whose ids must be 0..K-1."""
  expected = 'a dict of class name -> integer id, e.g. {"background": 0, "tumour": 1}'
  labels = field(spec, "labels", dict, spec_path, expected)
  ids: dict[int, str] = {}
  for name, value in labels.items():
    if isinstance(value, (list, tuple)):
      raise ValueError(
          f"{spec_path}: label {name!r} is a region {value}; region-based labels are not "
          "supported by medjax, give each class one integer id.")
    if not isinstance(value, int) or isinstance(value, bool):
      raise ValueError(f"{spec_path}: label {name!r}: {value!r} is not an integer id; expected "
                       f"{expected}.")
    if value in ids:
      raise ValueError(f"{spec_path}: labels {ids[value]!r} and {name!r} share the id {value}.")
    ids[value] = name
  if sorted(ids) != list(range(len(ids))) or len(ids) < 2:
    raise ValueError(
        f"{spec_path}: label ids {sorted(ids)} must be consecutive 0..K-1 with K >= 2 and 0 the "
        "background (nnU-Net requires this).")
  return tuple(ids[k] for k in range(len(ids)))


def decathlon_labels(spec: dict, spec_path: pathlib.Path
                     ) -> tuple[tuple[str, ...], tuple[int, ...]]:
  """Class names and label values of the Decathlon's `labels` (value -> name), in value order."""
  expected = 'a dict of label value -> class name, e.g. {"0": "background", "1": "tumour"}'
  names = index_names(spec, "labels", spec_path, expected)
  values = tuple(sorted(names))
  if values[0] != 0 or len(values) < 2:
    raise ValueError(
        f"{spec_path}: 'labels' values {list(values)} must include 0 (background) and at least "
        "one other class.")
  if len(values) > 256:
    raise ValueError(f"{spec_path}: {len(values)} labels; at most 256 are supported.")
  return tuple(names[v] for v in values), values
