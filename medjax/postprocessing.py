"""Post-processing of predicted label maps: nnU-Net's largest-connected-component filter.

A network that segments one compact structure (an organ, the brain's tissues around one
ventricle system) sometimes adds small islands of a class far from the rest. nnU-Net removes
them when it helps: for each foreground class it keeps only the largest connected component of
that class, the other voxels of the class becoming background, and it applies this to a class
only if doing so raised that class's mean Dice on the cross-validation folds
(`choose_classes`, used by `python -m medjax.crossval`, which writes `postprocessing.json`).

Because the filter turns voxels of class k into background and nothing else, it changes class
k's score alone, so each class is decided on its own.

Connectivity is the full 3-D neighbourhood (26 neighbours; `connectivity=1` for the 6 face
neighbours), as `scipy.ndimage.generate_binary_structure(3, 3)`.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Sequence

import numpy as np
from scipy import ndimage

FILENAME = "postprocessing.json"


def keep_largest_component(classes: np.ndarray, class_ids: Sequence[int], *,
                           connectivity: int = 3) -> np.ndarray:
  """For each class in `class_ids`, keeps its largest connected component; the rest -> 0.

  Args:
    classes: label map of class ids `[D, H, W]` (any integer dtype; 0 = background).
    class_ids: the foreground classes to filter.
    connectivity: 1 (faces), 2 (faces and edges) or 3 (also corners: 26 neighbours).

  Returns:
    A filtered copy with the dtype of `classes`. Ties between equally large components keep the
    one found first in C order (`scipy.ndimage.label`'s numbering).
  """
  classes = np.asarray(classes)
  if classes.ndim != 3:
    raise ValueError(f"label map has shape {classes.shape}: expected [D, H, W].")
  if connectivity not in (1, 2, 3):
    raise ValueError(f"connectivity={connectivity}: expected 1, 2 or 3.")
  structure = ndimage.generate_binary_structure(3, connectivity)
  out = classes.copy()
  for k in class_ids:
    k = int(k)
    if k == 0:
      raise ValueError("class 0 is the background; the filter applies to foreground classes.")
    components, num = ndimage.label(classes == k, structure=structure)
    if num <= 1:
      continue
    sizes = np.bincount(components.ravel())[1:]
    out[(components > 0) & (components != 1 + int(np.argmax(sizes)))] = 0
  return out


def choose_classes(dice_without: dict[int, Sequence[float]],
                   dice_with: dict[int, Sequence[float]]) -> list[int]:
  """The classes whose mean Dice over the validation cases rises with the filter (nnU-Net's rule).

  Args:
    dice_without, dice_with: per class id, the Dice of every validation case without and with
      the filter on that class (NaN for a case where the class is absent from both the truth and
      the prediction, left out of the mean).

  Returns:
    The sorted class ids to filter: those whose mean Dice is strictly higher with the filter.
  """
  chosen = []
  for k in sorted(dice_without):
    before, after = np.asarray(dice_without[k], float), np.asarray(dice_with[k], float)
    if before.shape != after.shape:
      raise ValueError(f"class {k}: {before.size} cases without the filter, {after.size} with.")
    if np.all(np.isnan(before)):
      continue
    if np.nanmean(after) > np.nanmean(before):
      chosen.append(int(k))
  return chosen


def save(directory: str | os.PathLike, class_ids: Sequence[int], *, details: dict | None = None
         ) -> str:
  """Writes `<directory>/postprocessing.json` atomically; returns its path."""
  path = pathlib.Path(directory) / FILENAME
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps({"keep_largest_component": [int(k) for k in class_ids],
                             **(details or {})}, indent=2) + "\n")
  os.replace(tmp, path)
  return str(path)


def load(path: str | os.PathLike) -> list[int]:
  """The classes to filter from a `postprocessing.json` (or the folder holding one)."""
  path = pathlib.Path(os.path.expanduser(os.fspath(path)))
  if path.is_dir():
    path = path / FILENAME
  try:
    data = json.loads(path.read_text())
    class_ids = [int(k) for k in data["keep_largest_component"]]
  except FileNotFoundError:
    raise FileNotFoundError(f"{path} not found: expected the postprocessing.json written by "
                            "`python -m medjax.crossval`.") from None
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path}: expected JSON with a 'keep_largest_component' list of class "
                     f"ids ({e}).") from None
  return class_ids
