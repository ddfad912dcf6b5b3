"""Writing the outputs of one segmented case: its label map, probabilities and a PNG, each with
exactly the input file's shape and affine, each written atomically (`medjax.io.save_image`)."""

from __future__ import annotations

import pathlib

import numpy as np

from medjax import io
from medjax import labels
from medjax import viz
from medjax.data import iseg
from medjax.prediction import cases as cases_lib

FORMATS = ("nii.gz", "nii", "hdr")
# 'iseg' is the older name of 'dataset' for iSeg-2017 models.
VALUES = ("class_ids", "dataset", "iseg")


def write_outputs(case: cases_lib.Case, probs: np.ndarray, output_dir: str, *,
                  fmt: str = "nii.gz", values: str = "class_ids", save_probabilities: bool = False,
                  png: bool = True, label_values: tuple[int, ...] = iseg.LABEL_VALUES,
                  classes: np.ndarray | None = None,
                  uncertainty: np.ndarray | None = None) -> dict[str, str]:
  """Writes the label map (and probabilities, PNG) of one case; returns their paths.

  `classes`: the class ids `[D, H, W]` (default: the argmax of `probs`; region models pass
  `outputs.output_classes`). `values='dataset'` (or 'iseg') writes `label_values[k]` for
  class k instead of k. `uncertainty` `[D, H, W]` is written as `<name>-uncertainty.<fmt>`.
  """
  out = pathlib.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  if classes is None:
    classes = probs.argmax(-1)
  classes = np.asarray(classes).astype(np.uint8)
  label_map = classes
  if values in ("dataset", "iseg"):
    label_map = labels.classes_to_values(classes, label_values)
  dtype = np.uint8 if int(np.max(label_values)) < 256 else np.int16
  # Keep the input file's own shape (iSeg stores [D, H, W, 1]) so the output overlays it exactly.
  extra = case.disk_shape[3:]
  written = {}
  path = out / f"{case.label_name or case.name + '-label'}.{fmt}"
  io.save_image(path, label_map.reshape(label_map.shape + extra), case.affine, dtype=dtype)
  written["label"] = str(path)
  if save_probabilities:
    path = out / f"{case.name}-probabilities.{fmt}"
    io.save_image(path, probs.astype(np.float32), case.affine)
    written["probabilities"] = str(path)
  if uncertainty is not None:
    path = out / f"{case.name}-uncertainty.{fmt}"
    spread = np.asarray(uncertainty, np.float32)
    io.save_image(path, spread.reshape(spread.shape + extra), case.affine)
    written["uncertainty"] = str(path)
  if png:
    path = out / f"{case.name}.png"
    viz.save_comparison_png(str(path), case.image, case.label, classes, affine=case.affine,
                            spacing=case.spacing, title=case.name)
    written["png"] = str(path)
  return written
