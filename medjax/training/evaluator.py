"""Whole-volume validation during training: sliding-window segmentation of each validation case.

`evaluate` scores given cases (pure apart from running the model); `Evaluator` is what the loop
calls at each evaluation step: it loads the validation cases on first use and writes the
metrics and comparison images to TensorBoard and `<workdir>/eval/`.

In a job of several processes every process evaluates every case (replicated, not sharded) on
its own copy of the parameters; their metrics agree, and only the chief has a `writer`. Within a
process, each case's window batches are spread over all its devices (`inference`).
"""

import functools
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from medjax import inference
from medjax import input_pipeline
from medjax import labels
from medjax import metrics as metrics_lib
from medjax import outputs
from medjax import regions as regions_lib
from medjax.data import preprocessing as preprocessing_lib
from medjax.training import mesh as mesh_lib
from medjax.training import multihost
from medjax.training import state as state_lib
from medjax.training import step as step_lib


def evaluate(model: Any, variables: dict[str, Any], subjects: list[dict[str, Any]],
             config: ml_collections.ConfigDict,
             predictor: Callable[..., jax.Array] | None = None, *,
             preprocessing: preprocessing_lib.Preprocessing | None = None,
             names: Sequence[str] | None = None,
             devices: Sequence[jax.Device] | None = None) -> tuple[dict[str, float], list]:
  """Sliding-window segmentation of each case; Dice per class and the training loss.

  Each case (`input_pipeline.load_eval_subjects`) is segmented on the prepared grid; with
  `preprocessing`, its class probabilities are taken back to the file's grid
  (`Preprocessing.restore`) and scored there against the stored label, as a user would score
  the written prediction.

  `val_loss` is `config.loss` (the loss training minimises, with its options) of the blended
  probabilities against the label, so train and validation losses are the same quantity.

  With `config.dataset.regions` the outputs are region probabilities: each region is its
  probability > 0.5, scored with its own Dice (`val_dice_<region>`, `names` naming the
  regions), and the predicted class ids are painted from the regions (`regions.masks_to_classes`).

  The window batches are spread over `devices` (default: every device of this process,
  `inference.sliding_window_inference`), which changes the probabilities by float rounding only.

  Returns:
    `(metrics, predictions)`: metrics averaged over cases (`val_loss`, `val_dice_<class>`,
    `val_dice_mean` over the foreground classes or the regions), and the predicted class ids
    `[D, H, W]` per case, on the file's grid.
  """
  predictor = predictor or inference.make_predictor(
      model, outputs.output_activation(config))
  loss_fn = step_lib.loss_fn_from_config(config)
  num_classes = config.dataset.num_classes
  regions = config.dataset.regions
  if names is None:
    names = (labels.default_class_names(num_classes) if regions is None else
             regions_lib.region_names(regions, {}))
  names = tuple(names)
  # One copy on each device for all the cases, rather than one per case.
  variables = jax.device_put(variables, mesh_lib.replicated(mesh_lib.local_mesh(devices)))
  per_subject, predictions = [], []
  for subject in subjects:
    probs = inference.sliding_window_inference(
        jnp.asarray(subject["image"])[None], roi_size=tuple(config.eval.roi_size),
        sw_batch_size=config.eval.sw_batch_size,
        predictor=functools.partial(predictor, variables), overlap=config.eval.overlap,
        mode=config.eval.mode, devices=devices)
    probs = np.asarray(probs[0])
    if preprocessing is not None and "record" in subject:
      probs = preprocessing.restore(probs, subject["record"],
                                    class0_is_background=regions is None)
    label = np.asarray(subject["label"])
    pred = outputs.output_classes(probs, config).astype(np.int32)
    if regions is None:
      dice = metrics_lib.dice_per_class(pred, label, num_classes=num_classes)
      foreground = dice[1:]
      target = jnp.asarray(label)[None]
    else:
      masks = probs > regions_lib.THRESHOLD
      truth = regions_lib.region_masks(label, regions)
      dice = np.array([metrics_lib.dice(masks[..., r], truth[..., r])
                       for r in range(len(regions))])
      foreground = dice
      target = jnp.asarray(truth, jnp.float32)[None]
    row = {f"val_dice_{n}": float(d) for n, d in zip(names, dice)}
    row["val_dice_mean"] = float(np.nanmean(foreground))
    row["val_loss"] = float(loss_fn(outputs.probabilities_as_logits(probs, config)[None], target))
    per_subject.append(row)
    predictions.append(pred)
  metrics = {k: float(np.nanmean([r[k] for r in per_subject])) for k in per_subject[0]}
  return metrics, predictions


class Evaluator:
  """`evaluator(state, step)`: the validation metrics of `state`, logged at `step`.

  The validation cases (`config.eval.split`, or a fold of the training cases) are loaded and
  prepared on the first call and kept. With a `writer`, each metric `val_x` is written as the
  scalar `val/x` and each case's comparison image as `val/<case_id>`, also saved as
  `<workdir>/eval/<case_id>_step-<step>.png`.
  """

  def __init__(self, config: ml_collections.ConfigDict, model: Any, *,
               preprocessing: preprocessing_lib.Preprocessing, names: Sequence[str],
               writer: Any | None = None, workdir: str | None = None):
    self.config = config
    self.model = model
    self.preprocessing = preprocessing
    self.names = tuple(names)
    self.writer = writer
    self.workdir = workdir
    self.predictor = inference.make_predictor(model, outputs.output_activation(config))
    self.subjects: list[dict[str, Any]] | None = None

  def __call__(self, state: state_lib.TrainState, step: int) -> dict[str, float]:
    config = self.config
    if self.subjects is None:
      self.subjects = input_pipeline.load_eval_subjects(config, split=config.eval.split,
                                                        preprocessing=self.preprocessing)
    variables = state_lib.model_variables(state)
    if jax.process_count() > 1:
      # Each process evaluates every case alone, on its own copy of the replicated variables:
      # no collective with processes that are not running the same computation.
      variables = multihost.local_copy(variables)
    # `evaluate` looked up at call time, so that a test can wrap it.
    metrics, predictions = evaluate(
        self.model, variables, self.subjects, config, self.predictor,
        preprocessing=self.preprocessing, names=self.names)
    if self.writer is not None:
      for k, v in metrics.items():
        self.writer.add_scalar(k.replace("val_", "val/"), v, step)
      log_eval_images(self.writer, self.workdir, step, self.subjects, predictions)
    return metrics


def log_eval_images(writer: Any, workdir: str, step: int, subjects: list[dict[str, Any]],
                    predictions: list[np.ndarray]) -> None:
  """Each case's image, label and prediction side by side: to TensorBoard and to a PNG file."""
  from medjax import viz  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  for subject, pred in zip(subjects, predictions):
    case_id = subject["case_id"]
    image = viz.comparison_figure_array(subject["raw_image"], subject["label"], pred)
    writer.add_image(f"val/{case_id}", image, step, dataformats="HWC")
    viz.save_comparison_png(os.path.join(workdir, "eval", f"{case_id}_step-{step}.png"),
                            subject["raw_image"], subject["label"], pred)
