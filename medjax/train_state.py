"""The training state and how to build a model and its state from a config."""

import dataclasses
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.training import train_state

from medjax import models
from medjax import optim
from medjax import regions as regions_lib


class TrainState(train_state.TrainState):
  """`flax.training.train_state.TrainState` plus BatchNorm running statistics."""
  batch_stats: Any = None


# Keys the experiment configs set for every model; a model without such a field ignores it.
SHARED_MODEL_KEYS = ("base_features", "dtype", "param_dtype")


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The model named by `config.model.name`, its other `config.model` keys as fields.

  Keys set to None take the model's own default. A shared key (`SHARED_MODEL_KEYS`) that the
  model has no field for is ignored with a warning, so `--config.model.name=DENSENET1` works on
  any experiment; any other unknown key is an error.
  """
  kwargs = {k: v for k, v in config.model.to_dict().items() if v is not None}
  name = kwargs.pop("name")
  for key in ("dtype", "param_dtype"):
    if key in kwargs:
      kwargs[key] = jnp.dtype(kwargs[key])
  cls = models.MODELS.get(name.upper())
  if cls is not None and dataclasses.is_dataclass(cls):
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name", "num_classes"}
    unknown = sorted(set(kwargs) - fields - set(SHARED_MODEL_KEYS))
    if unknown:
      raise ValueError(f"config.model has keys {unknown} that model {name!r} does not take; "
                       f"it takes {sorted(fields)}.")
    for key in sorted(set(kwargs) - fields):
      logging.warning("config.model.%s=%s is ignored: model %s has no such field.", key,
                      kwargs.pop(key), name)
  return models.create_model(name, num_classes=num_outputs(config), **kwargs)


def num_outputs(config: ml_collections.ConfigDict) -> int | None:
  """The network's output channels: one per region with `dataset.regions`, else per class."""
  if config.dataset.regions is not None:
    return len(config.dataset.regions)
  return config.dataset.num_classes


def input_shape(config: ml_collections.ConfigDict, batch_size: int = 1) -> tuple[int, ...]:
  """NDHWC shape of one training input batch: `[B, *crop_size, num_modalities]`."""
  return (batch_size, *config.dataset.crop_size, config.dataset.num_modalities)


def create_train_state(config: ml_collections.ConfigDict, model: nn.Module,
                       rng: jax.Array) -> TrainState:
  """Initialises parameters, BatchNorm statistics and the optimiser state."""
  variables = model.init(rng, jnp.zeros(input_shape(config), jnp.float32), train=False)
  return TrainState.create(
      apply_fn=model.apply, params=variables["params"],
      batch_stats=variables.get("batch_stats", {}), tx=optim.create_optimizer(config))


def model_variables(state: TrainState) -> dict[str, Any]:
  """The variables `model.apply` takes for inference."""
  variables = {"params": state.params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  return variables


def output_activation(config: ml_collections.ConfigDict) -> str:
  """'sigmoid' when the outputs are trained with per-channel sigmoids (a sigmoid loss, as
  region-based training needs), else 'softmax': the probabilities inference blends."""
  sigmoid = config.loss.sigmoid or config.loss.name == "binary_cross_entropy"
  return "sigmoid" if sigmoid else "softmax"


def output_classes(probs: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
  """Class ids `[...]` (uint8) from output probabilities `[..., K]`: the argmax, or with
  `dataset.regions` the regions above `regions.THRESHOLD` painted into classes."""
  if config.dataset.regions is None:
    return np.asarray(probs).argmax(-1).astype(np.uint8)
  return regions_lib.masks_to_classes(np.asarray(probs) > regions_lib.THRESHOLD,
                                      config.dataset.regions)
