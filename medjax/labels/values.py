"""Label maps and label values: on-disk values <-> class ids, and reading a label-map file.

A dataset stores class k of a label map as its label value `label_values[k]` (iSeg-2017
0/10/150/250, BraTS 0/1/2/4, nnU-Net 0..K-1); medjax works on class ids 0..K-1 (uint8).
`values_to_classes` and `classes_to_values` are the one map between the two, for every dataset;
`to_class_ids` also tells which of the two a map holds (`medjax.evaluate --values`).
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import logging
import numpy as np

from medjax import io
from medjax.labels import spec as spec_lib

# How a label map holds its classes: `medjax.evaluate --values`.
VALUES = ("auto", "class_ids", "dataset")


def _check_label_values(label_values: Sequence[int], source: str) -> np.ndarray:
  values = list(label_values)
  if (not values or len(values) > 256 or len(set(values)) != len(values) or
      not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)):
    raise ValueError(
        f"{source}: label_values must be 1 to 256 distinct integers, got {label_values!r}.")
  return np.asarray(values, dtype=np.int64)


def values_to_classes(values: np.ndarray, label_values: Sequence[int] | None = None, *,
                      source: str = "label") -> np.ndarray:
  """Maps on-disk label values to class ids (uint8): value `label_values[k]` -> class k.

  Args:
    values: label voxels, any integer or integral float dtype.
    label_values: the on-disk value of each class; None means the values are class ids 0..255.
    source: what to name in errors (the label file).

  Raises:
    ValueError: a non-integral value, or a value not in `label_values`; the message names
      `source`, the values found and the values expected.
  """
  values = np.asarray(values)
  if not np.issubdtype(values.dtype, np.integer):
    if values.dtype == np.bool_:
      values = values.astype(np.uint8)
    else:
      integral = np.isfinite(values) & (values == np.round(values))
      if not np.all(integral):
        bad = np.unique(values[~integral])[:8]
        raise ValueError(f"{source}: label values must be integers, found {bad.tolist()}.")
      values = values.astype(np.int64)
  if label_values is None:
    expected = np.arange(256, dtype=np.int64)
    expected_text = "class ids 0..255"
  else:
    expected = _check_label_values(label_values, source)
    expected_text = f"the declared values {expected.tolist()}"
  if values.size == 0:
    return values.astype(np.uint8)
  lo, hi = min(int(values.min()), 0), int(values.max())
  if hi - lo < (1 << 22):
    lut = np.full(hi - lo + 1, -1, dtype=np.int16)
    inside = (expected >= lo) & (expected <= hi)
    lut[expected[inside] - lo] = np.nonzero(inside)[0]
    # Non-negative values (the usual uint8/int16 labels) index the table as they are.
    classes = np.take(lut, values if lo == 0 else values.astype(np.int64) - lo)
  else:  # A huge value range (e.g. one stray value): map through the sorted unique values.
    uniq, inverse = np.unique(values.ravel(), return_inverse=True)
    order = np.argsort(expected)
    pos = np.clip(np.searchsorted(expected[order], uniq), 0, len(expected) - 1)
    found = expected[order][pos] == uniq
    classes = np.where(found, order[pos], -1)[inverse.reshape(values.shape)]
  if np.any(classes < 0):
    bad = np.unique(values[classes < 0])[:8]
    raise ValueError(
        f"{source}: label values {bad.tolist()} are not declared; expected {expected_text} "
        f"(found {np.unique(values).tolist()[:16]}).")
  return classes.astype(np.uint8)


def classes_to_values(classes: np.ndarray, label_values: Sequence[int]) -> np.ndarray:
  """Maps class ids back to on-disk label values: class k -> `label_values[k]` (int64).

  Raises:
    ValueError: a class id outside 0..len(label_values) - 1.
  """
  values = _check_label_values(label_values, "classes_to_values")
  classes = np.asarray(classes)
  if classes.size and (classes.min() < 0 or classes.max() >= len(values)):
    raise ValueError(
        f"class ids must be in 0..{len(values) - 1}, got range [{classes.min()}, "
        f"{classes.max()}].")
  return values[classes.astype(np.int64)]


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
    values: 'class_ids', 'dataset' or 'auto' (dataset values when every value is a dataset
      value and some value is not a class id, else class ids; `medjax.evaluate`'s docstring).
    prefer: in 'auto', the reading of a map that is valid both ways ('class_ids' for
      predictions, 'dataset' for ground truth).

  Raises:
    ValueError: values that fit neither convention (or not the one `values` asks for); the
      message names `source`.
  """
  if values not in VALUES:
    raise ValueError(f"--values {values!r}: expected one of {VALUES}.")
  if label_values is None:
    label_values = spec_lib.default_labels(num_classes).label_values
  dataset = tuple(int(v) for v in label_values)
  data = np.asarray(data)
  found = np.unique(data)
  integral = bool(np.all(found == np.round(found))) if found.size else True
  is_ids = integral and bool(np.all((found >= 0) & (found < num_classes)))
  is_dataset = integral and bool(np.all(np.isin(found, dataset)))
  iseg = spec_lib.ISEG2017.label_values
  dataset_text = (f"iSeg values {iseg}" if num_classes == len(iseg) and dataset == iseg
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
    return values_to_classes(data, dataset, source=source)
  return data.astype(np.uint8)


def load_label_map(path: str | os.PathLike, *, num_classes: int = 4,
                   label_values: Sequence[int] | None = None, values: str = "auto",
                   prefer: str = "class_ids") -> tuple[np.ndarray, io.Image]:
  """Reads a label map file -> (uint8 class ids `[D, H, W]`, the `io.Image`); see `to_class_ids`."""
  image = io.load_image(path)
  return to_class_ids(image.data, num_classes=num_classes, source=str(path),
                      label_values=label_values, values=values, prefer=prefer), image
