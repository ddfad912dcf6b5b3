"""Model registry: config name -> Flax linen module class, and the model a config describes.

Every model takes NDHWC input `[B, D, H, W, C]` and returns logits `[B, d, h, w, num_classes]`
(d, h, w may be smaller than D, H, W for models with valid convolutions).
"""

import dataclasses
from typing import Callable

from absl import logging
import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from medjax import outputs
from medjax.models.densenet import DualPathDenseNet, DualSingleDenseNet, SinglePathDenseNet
from medjax.models.hyperdensenet import HyperDenseNet
from medjax.models.unet3d import UNet3D
from medjax.models.vnet import VNet, VNetLight

MODELS: dict[str, Callable[..., nn.Module]] = {
    "UNET3D": UNet3D,
    "VNET": VNet,
    "VNET2": VNetLight,
    "DENSENET1": SinglePathDenseNet,
    "DENSENET2": DualPathDenseNet,
    "DENSENET3": DualSingleDenseNet,
    "HYPERDENSENET": HyperDenseNet,
}

# Keys the experiment configs set for every model; a model without such a field ignores it.
SHARED_MODEL_KEYS = ("base_features", "dtype", "param_dtype")


def model_class(name: str) -> Callable[..., nn.Module]:
  """The module class registered as `name` (case-insensitive)."""
  key = name.upper()
  if key not in MODELS:
    raise ValueError(f"Unknown model name {name!r}; expected one of {sorted(MODELS)}.")
  return MODELS[key]


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The model named by `config.model.name`, its other `config.model` keys as fields, with
  `outputs.num_outputs(config)` output channels.

  Keys set to None take the model's own default. A shared key (`SHARED_MODEL_KEYS`) that the
  model has no field for is ignored with a warning, so `--config.model.name=DENSENET1` works on
  any experiment; any other unknown key is an error.
  """
  kwargs = {k: v for k, v in config.model.to_dict().items() if v is not None}
  name = kwargs.pop("name")
  cls = model_class(name)
  for key in ("dtype", "param_dtype"):
    if key in kwargs:
      kwargs[key] = jnp.dtype(kwargs[key])
  if dataclasses.is_dataclass(cls):
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name", "num_classes"}
    unknown = sorted(set(kwargs) - fields - set(SHARED_MODEL_KEYS))
    if unknown:
      # E.g. the quickstart recipe's deep_supervision with --config.model.name=VNET2.
      raise ValueError(f"config.model has keys {unknown} that model {name!r} does not take; "
                       f"it takes {sorted(fields)}. Leave them out: "
                       + " ".join(f"--config.model.{k}=None" for k in unknown) + ".")
    for key in sorted(set(kwargs) - fields):
      logging.warning("config.model.%s=%s is ignored: model %s has no such field.", key,
                      kwargs.pop(key), name)
  return cls(num_classes=outputs.num_outputs(config), **kwargs)
