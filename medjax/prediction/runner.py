"""`run`: restore a workdir's model, segment scans, write their outputs.

The library call behind `python -m medjax.predict`.
"""

from __future__ import annotations

from typing import Any

import tqdm

from medjax import checkpoint
from medjax import metrics
from medjax import outputs
from medjax.data import iseg
from medjax.prediction import cases as cases_lib
from medjax.prediction import segment as segment_lib
from medjax.prediction import writing


def run(workdir: str, *, output_dir: str, t1: str | None = None, t2: str | None = None,
        label: str | None = None, input_dir: str | None = None,
        subjects: list[str] | None = None, fmt: str = "nii.gz", values: str = "class_ids",
        save_probabilities: bool = False, which: str = "best", png: bool = True,
        overlap: float | None = None, mode: str | None = None,
        sw_batch_size: int | None = None, tta: bool = False,
        images: list[str] | None = None) -> list[dict[str, Any]]:
  """Restores the model of `workdir`, segments the given scans and writes their outputs.

  Give one of: `t1` (and `t2`) for an iSeg-style pair, `images` (one file per channel, or one
  4-D file) for one case of any dataset, or `input_dir` for every case of a folder.

  Returns:
    One dict per case: `name`, the written `files`, and `dice` per class when a label is known.
  """
  if fmt not in writing.FORMATS:
    raise ValueError(f"--format {fmt!r}: expected one of {writing.FORMATS}.")
  if values not in writing.VALUES:
    raise ValueError(f"--values {values!r}: expected one of {writing.VALUES}.")
  if sum(x is not None and x != [] for x in (t1, input_dir, images)) != 1:
    raise ValueError("Give either --t1 (with --t2 for two-modality models), --images (the "
                     "channel files of one case) or --input_dir.")
  if t1 is None and t2 is not None:
    raise ValueError("--t2 goes with --t1.")
  if input_dir is not None and label is not None:
    raise ValueError("--label goes with --t1 or --images, not with --input_dir.")
  # Check single inputs before the (slow) restore; folders are loaded lazily.
  if t1 is not None:
    case = cases_lib.load_case(t1, t2, label)
  workdir_path = checkpoint.resolve_workdir(workdir)
  config = checkpoint.load_config(workdir_path)
  preprocessing = segment_lib.preprocessing_of(workdir_path, config)
  names = preprocessing.names
  if t1 is not None:
    loaders = [lambda: case]
  elif images:
    case = cases_lib.load_images_case(list(images), label, names=names)
    loaders = [lambda: case]
  else:
    loaders = cases_lib.select_cases(input_dir, subjects, names)
  model, variables, config = checkpoint.restore_model(workdir_path, which=which)
  num_classes = int(config.dataset.num_classes)
  if values == "iseg" and names.label_values != iseg.LABEL_VALUES:
    raise ValueError(f"--values iseg needs an iSeg-2017 model (label values "
                     f"{iseg.LABEL_VALUES}); the checkpoint in {workdir} has label values "
                     f"{names.label_values}: use --values dataset.")
  results = []  # output_dir is created by the first write, so a failed run leaves no folder
  bar = tqdm.tqdm(loaders, desc="cases", unit="case", disable=len(loaders) < 2)
  for load in bar:
    case = load()
    image = cases_lib.check_modalities(case, config, workdir)
    probs = segment_lib.segment(model, variables, config, image, affine=case.affine,
                                preprocessing=preprocessing, overlap=overlap, mode=mode,
                                sw_batch_size=sw_batch_size, tta=tta, progress=len(loaders) < 2)
    classes = outputs.output_classes(probs, config)
    files = writing.write_outputs(case, probs, output_dir, fmt=fmt, values=values,
                                  save_probabilities=save_probabilities, png=png,
                                  label_values=names.label_values, classes=classes)
    result = {"name": case.name, "files": files}
    if case.label is not None:
      dice = metrics.dice_per_class(classes, case.label, num_classes=num_classes)
      result["dice"] = dice.tolist()
    results.append(result)
    bar.write(_summary_line(result, names.class_names))
  return results


def _summary_line(result: dict[str, Any], class_names: tuple[str, ...]) -> str:
  line = f"{result['name']}: wrote {', '.join(result['files'].values())}"
  if "dice" in result:
    line += "\n  Dice " + ", ".join(f"{n} {d:.4f}" for n, d in
                                   zip(class_names[1:], result["dice"][1:]))
  return line
