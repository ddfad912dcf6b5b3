"""Config checks that fail before training starts: names, sizes, the split, the saved run.

Each check is cheap (no compilation: the model is traced for shapes only) and runs before
anything is written to the workdir, so a config that cannot train leaves nothing behind.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from medjax import input_pipeline
from medjax import models
from medjax import optim
from medjax import outputs
from medjax import regions as regions_lib
from medjax.data import preprocessing as preprocessing_lib
from medjax.training import step as step_lib

NONFINITE_MODES = ("stop", "skip")


def check_config(config: ml_collections.ConfigDict) -> None:
  """The batch against the devices, the step counts, and the model, loss and optimiser names."""
  num_devices = jax.device_count()
  if config.batch_size % num_devices:
    where = (f" of the {jax.process_count()} processes" if jax.process_count() > 1 else "")
    raise ValueError(f"config.batch_size={config.batch_size} is not divisible by the "
                     f"{num_devices} devices{where}; use a multiple of {num_devices} (the "
                     "global batch, split over every device).")
  if config.nonfinite not in NONFINITE_MODES:
    raise ValueError(f"config.nonfinite={config.nonfinite!r}; expected one of {NONFINITE_MODES}.")
  for key in ("num_train_steps", "log_every_steps", "eval_every_steps",
              "checkpoint_every_steps"):
    if config[key] <= 0:
      raise ValueError(f"config.{key}={config[key]}: expected a positive integer.")
  # Unknown names and input shapes the network cannot take fail here, before anything is
  # written to the workdir or the dataset is built. When the channels or classes come from the
  # dataset, the model checks wait for it (`check_model`).
  if not 0.0 <= config.dataset.foreground_oversampling <= 1.0:
    raise ValueError(f"config.dataset.foreground_oversampling="
                     f"{config.dataset.foreground_oversampling}: expected a fraction of the "
                     "crops in [0, 1] (nnU-Net: 0.33).")
  if config.plan.enabled:
    check_plan_settings(config)
  models.create_model(config)  # the name and keys (num_classes may still be None)
  step_lib.loss_fn_from_config(config)
  optim.create_optimizer(config)
  if config.dataset.num_classes is not None and config.dataset.num_modalities is not None:
    check_model(config)


def check_plan_settings(config: ml_collections.ConfigDict) -> None:
  """`config.plan` (when enabled): a UNET3D, a positive budget, batch and depth, a fraction."""
  p = config.plan
  if config.model.name != "UNET3D":
    raise ValueError(f"config.plan plans UNET3D (its memory estimate), but "
                     f"config.model.name={config.model.name!r}; use UNET3D, or train without "
                     "planning (--config.plan.enabled=False).")
  for key in ("memory_budget_mb", "min_batch_size", "max_num_levels", "max_dataset_fraction"):
    if not p[key] > 0:
      raise ValueError(f"config.plan.{key}={p[key]}: expected a positive number.")


def check_model(config: ml_collections.ConfigDict) -> None:
  """The model's fields, the regions, and the crop and ROI sizes it can take (shapes only)."""
  if config.dataset.regions is not None:
    regions_lib.check_regions(config.dataset.regions, config.dataset.num_classes)
    if outputs.output_activation(config) != "sigmoid":
      raise ValueError(
          "config.dataset.regions trains one sigmoid output per region, but config.loss "
          f"{config.loss.name!r} uses a softmax: set --config.loss.sigmoid=True "
          "--config.loss.softmax=False (or --config.loss.name=binary_cross_entropy).")
  model = models.create_model(config)
  check_input_shape(config, model, "dataset.crop_size", config.dataset.crop_size)
  check_input_shape(config, model, "eval.roi_size", config.eval.roi_size)


def check_input_shape(config: ml_collections.ConfigDict, model: Any, key: str,
                      spatial: Any) -> None:
  """Traces `model.init` on `[1, *spatial, num_modalities]` (shapes only) to catch sizes the
  network cannot take, e.g. not divisible by its down-sampling factor."""
  spatial = tuple(spatial)
  if len(spatial) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in spatial):
    raise ValueError(f"config.{key}={spatial}: expected 3 positive integers (D, H, W).")
  x = jax.ShapeDtypeStruct((1, *spatial, config.dataset.num_modalities), jnp.float32)
  try:
    jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  except ValueError as e:
    raise ValueError(f"config.{key}={spatial} does not fit model {config.model.name!r}: "
                     f"{e}") from e


def check_eval_split(config: ml_collections.ConfigDict, builder: Any) -> None:
  """Validation needs labelled cases: refuse an unlabelled or missing split before training."""
  if input_pipeline.validates_on_training_cases(config.dataset):
    return  # validation cases chosen from the labelled training cases
  split = config.eval.split
  if split not in builder.info.splits:
    raise ValueError(f"config.eval.split={split!r} is not a split of {builder.name} at "
                     f"{builder.data_dir} (it has {sorted(builder.info.splits)}); or set "
                     "config.dataset.fold to validate on a fold of the training cases.")
  if split == "test":
    raise ValueError("config.eval.split='test': the test split has no labels to validate "
                     "against; use 'validation' or config.dataset.fold.")


def check_saved_preprocessing(saved: preprocessing_lib.Preprocessing,
                              wanted: dict[str, Any], workdir: str) -> None:
  """A resumed run's saved `Preprocessing` must agree with what the config decides (`wanted`,
  `preprocessing.config_choices`) without looking at the data."""
  for field, value in wanted.items():
    if getattr(saved, field) != value:
      raise ValueError(
          f"{workdir}/{preprocessing_lib.FILENAME} was written with {field}="
          f"{getattr(saved, field)!r}, but the config asks for {value!r}; use the run's own "
          "config or a new --workdir.")
