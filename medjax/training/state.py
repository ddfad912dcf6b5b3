"""The training state: parameters, BatchNorm statistics and optimiser state, built from a config."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax.training import train_state

from medjax import optim


class TrainState(train_state.TrainState):
  """`flax.training.train_state.TrainState` plus BatchNorm running statistics."""
  batch_stats: Any = None


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
