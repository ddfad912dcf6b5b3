"""K-fold cross-validation by case, as nnU-Net runs it: train every fold, segment each fold's
validation cases with its model, score them, choose the post-processing on all folds together.

`run(config, root)` trains fold k in `<root>/fold_k` (`config.dataset.fold = k` of
`config.dataset.num_folds`), resuming a fold that was interrupted and skipping one whose
validation is already written, so rerunning the same command continues where it stopped. Per
fold it writes:

  fold_k/validation/<case>.nii.gz   the predicted class ids on the case's own grid
  fold_k/validation.json            Dice, HD95 and ASSD (mm) per case and class, without and
                                    with the largest-connected-component filter

and, once every fold is done, in `<root>`:

  postprocessing.json   the classes whose mean validation Dice over all folds rises with the
                        filter (`medjax.postprocessing.choose_classes`; nnU-Net's rule)
  crossval.json         per class: each fold's mean Dice / HD95 / ASSD (with the chosen
                        post-processing) and their mean and standard deviation over the folds

`python -m medjax.predict --workdir <root>/fold_0 ... --workdir <root>/fold_{K-1}
--postprocessing <root>` then segments new scans with the ensemble of the folds.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
from typing import Any, Sequence

import ml_collections
import numpy as np

from medjax import checkpoint
from medjax import input_pipeline
from medjax import io
from medjax import labels as labels_lib
from medjax import metrics as metrics_lib
from medjax import outputs
from medjax import postprocessing
from medjax.evaluation import report
from medjax import prediction

VALIDATION_FILENAME = "validation.json"
SUMMARY_FILENAME = "crossval.json"


def fold_dir(root: str | os.PathLike, fold: int) -> pathlib.Path:
  return pathlib.Path(root) / f"fold_{fold}"


def fold_config(config: ml_collections.ConfigDict, fold: int) -> ml_collections.ConfigDict:
  """`config` with `dataset.fold = fold` (checked against `dataset.num_folds`)."""
  num_folds = int(config.dataset.num_folds)
  if not 0 <= fold < num_folds:
    raise ValueError(f"fold {fold}: expected 0..{num_folds - 1} (config.dataset.num_folds="
                     f"{num_folds}).")
  config = copy.deepcopy(config)
  with config.unlocked():
    config.dataset.fold = fold
  return config


def is_trained(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> bool:
  """Whether `workdir` holds a complete checkpoint at `config.num_train_steps`."""
  steps = checkpoint.complete_steps(pathlib.Path(workdir) / checkpoint.CHECKPOINT_DIRNAME)
  return bool(steps) and steps[-1] >= int(config.num_train_steps)


def validate_fold(workdir: str | os.PathLike, *, which: str = "best", tta: bool = False
                  ) -> dict[str, Any]:
  """Segments the validation cases of the fold trained in `workdir`; writes and returns its
  `validation.json` (see the module docstring)."""
  workdir = pathlib.Path(checkpoint.resolve_workdir(os.fspath(workdir)))
  model, variables, config = checkpoint.restore_model(os.fspath(workdir), which=which)
  preprocessing = prediction.preprocessing_of(os.fspath(workdir), config)
  subjects = input_pipeline.load_eval_subjects(config, split=config.eval.split,
                                               preprocessing=preprocessing)
  num_classes = int(config.dataset.num_classes)
  foreground = list(range(1, num_classes))
  cases = {}
  for subject in subjects:
    if subject["label"] is None:
      raise ValueError(f"validation case {subject['case_id']} of {workdir} has no label.")
    probs = prediction.segment(model, variables, config, subject["raw_image"],
                                affine=subject["affine"], preprocessing=preprocessing, tta=tta)
    classes = outputs.output_classes(probs, config)
    # The filter changes class k's voxels (to background) and no other class's, so one map
    # filtered on every class gives each class's "with the filter" score.
    filtered = postprocessing.keep_largest_component(classes, foreground)
    scores = {}
    for variant, pred in (("raw", classes), ("largest_component", filtered)):
      scores[variant] = {str(k): {m: report.json_value(v) for m, v in row.items()}
                         for k, row in metrics_lib.segmentation_metrics(
                             pred, subject["label"], num_classes=num_classes,
                             spacing=subject["spacing"]).items()}
    out = workdir / "validation" / f"{subject['case_id']}.nii.gz"
    io.save_image(out, classes, subject["affine"], dtype=np.uint8 if num_classes < 256 else
                  np.int16)
    cases[subject["case_id"]] = {"prediction": str(out), **scores}
  names = tuple(preprocessing.names.class_names)
  if len(names) != num_classes:
    names = labels_lib.default_class_names(num_classes)
  document = {"fold": config.dataset.fold, "which": which, "tta": tta,
              "class_names": list(names), "cases": cases}
  io.write_text(workdir / VALIDATION_FILENAME, json.dumps(document, indent=2) + "\n")
  return document


def _value(v: Any) -> float:
  """A metric from validation.json (null = nan, "inf" = inf) as a float."""
  return float("nan") if v is None else float(v)


def summarize(validations: dict[int, dict[str, Any]]) -> tuple[list[int], dict[str, Any]]:
  """The post-processing chosen on all folds and the per-class summary (module docstring).

  Args:
    validations: fold -> its `validation.json` document.

  Returns:
    `(classes to filter, summary document)`.
  """
  folds = sorted(validations)
  class_ids = sorted({int(k) for doc in validations.values() for case in doc["cases"].values()
                      for k in case["raw"]})
  names = validations[folds[0]]["class_names"]

  def values(fold: int, variant: str, k: int, metric: str) -> list[float]:
    return [_value(case[variant][str(k)][metric])
            for case in validations[fold]["cases"].values()]

  dice_raw = {k: sum((values(f, "raw", k, "dice") for f in folds), []) for k in class_ids}
  dice_lcc = {k: sum((values(f, "largest_component", k, "dice") for f in folds), [])
              for k in class_ids}
  chosen = postprocessing.choose_classes(dice_raw, dice_lcc)
  per_class = {}
  for k in class_ids:
    variant = "largest_component" if k in chosen else "raw"
    row = {"postprocessing": variant, "mean_dice_without_filter": _nanmean(dice_raw[k]),
           "mean_dice_with_filter": _nanmean(dice_lcc[k])}
    for metric in report.METRIC_NAMES:
      by_fold = [_nanmean(values(f, variant, k, metric)) for f in folds]
      row[metric] = {"folds": {str(f): report.json_value(v) for f, v in zip(folds, by_fold)},
                     "mean": report.json_value(_nanmean(by_fold)),
                     "std": report.json_value(_nanstd(by_fold))}
    per_class[names[k] if k < len(names) else str(k)] = row
  return chosen, {"folds": folds, "keep_largest_component": chosen, "classes": per_class}


def _nanmean(values: Sequence[float]) -> float:
  v = np.asarray(values, np.float64)
  v = v[~np.isnan(v)]
  return float(v.mean()) if v.size else float("nan")


def _nanstd(values: Sequence[float]) -> float:
  """Population standard deviation over the folds (numpy's default, as nnU-Net's summary);
  nan when a fold's mean is infinite (an empty prediction's HD95)."""
  v = np.asarray(values, np.float64)
  v = v[~np.isnan(v)]
  return float(v.std()) if v.size and np.all(np.isfinite(v)) else float("nan")


def format_summary(summary: dict[str, Any]) -> str:
  """A text table: per class, mean ± std over the folds of Dice, HD95 and ASSD."""
  lines = [f"{'class':<14}{'Dice':>18}{'HD95 (mm)':>20}{'ASSD (mm)':>20}  post-processing"]
  for name, row in summary["classes"].items():
    cells = []
    for metric, width, digits in (("dice", 18, 4), ("hd95", 20, 2), ("assd", 20, 2)):
      mean, std = (_value(row[metric]["mean"]), _value(row[metric]["std"]))
      cells.append(f"{f'{mean:.{digits}f} ± {std:.{digits}f}':>{width}}")
    post = ("largest component" if row["postprocessing"] == "largest_component" else "none")
    lines.append(f"{name:<14}{''.join(cells)}  {post}")
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, root: str | os.PathLike, *,
        folds: Sequence[int] | None = None, which: str = "best", tta: bool = False,
        train_fn: Any = None, log: Any = print) -> dict[str, Any]:
  """Trains and validates the folds of `config` under `root`; returns the summary document.

  Args:
    config: the training config (its `dataset.fold` is replaced by each fold).
    root: the cross-validation folder (`fold_k/`, `postprocessing.json`, `crossval.json`).
    folds: the folds to run (default all `config.dataset.num_folds`). The summary and the
      post-processing are written only when every fold of the config is validated.
    which: checkpoint each fold validates with: 'best', 'latest' or a step.
    tta: validate with mirroring test-time augmentation.
    train_fn: `(config, workdir) -> metrics`, default `training.loop.train_and_evaluate`.
    log: where progress lines go.
  """
  if train_fn is None:
    from medjax.training import loop  # pylint: disable=g-import-not-at-top
    train_fn = loop.train_and_evaluate
  num_folds = int(config.dataset.num_folds)
  if num_folds < 2:
    raise ValueError(f"config.dataset.num_folds={num_folds}: cross-validation needs >= 2 folds.")
  folds = list(range(num_folds)) if folds is None else [int(f) for f in folds]
  configs = {f: fold_config(config, f) for f in folds}  # checks every fold before training
  root = pathlib.Path(os.path.expanduser(os.fspath(root)))
  for f in folds:
    workdir = fold_dir(root, f)
    if (workdir / VALIDATION_FILENAME).exists():
      log(f"fold {f}: validated already ({workdir / VALIDATION_FILENAME}).")
      continue
    if is_trained(workdir, configs[f]):
      log(f"fold {f}: trained already; validating.")
    else:
      log(f"fold {f} of {num_folds}: training in {workdir}.")
      train_fn(configs[f], os.fspath(workdir))
    validate_fold(workdir, which=which, tta=tta)
    log(f"fold {f}: wrote {workdir / VALIDATION_FILENAME}.")
  done = {f: json.loads((fold_dir(root, f) / VALIDATION_FILENAME).read_text())
          for f in range(num_folds) if (fold_dir(root, f) / VALIDATION_FILENAME).exists()}
  if len(done) < num_folds:
    missing = sorted(set(range(num_folds)) - set(done))
    log(f"folds {missing} not validated yet: rerun with them for the summary.")
    return {"folds": sorted(done), "missing": missing}
  chosen, summary = summarize(done)
  postprocessing.save(root, chosen, details={
      "chosen_on": "mean Dice per class over the validation cases of all folds"})
  io.write_text(root / SUMMARY_FILENAME, json.dumps(summary, indent=2) + "\n")
  log(format_summary(summary))
  log(f"wrote {root / SUMMARY_FILENAME} and {root / postprocessing.FILENAME}")
  return summary
