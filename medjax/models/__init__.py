"""Model registry: config name -> Flax linen module class.

Every model takes NDHWC input `[B, D, H, W, C]` and returns logits `[B, d, h, w, num_classes]`
(d, h, w may be smaller than D, H, W for models with valid convolutions).
"""

from typing import Any, Callable

import flax.linen as nn

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


def create_model(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds the model registered as `name` (case-insensitive) with `num_classes` outputs."""
  key = name.upper()
  if key not in MODELS:
    raise ValueError(f"Unknown model name {name!r}; expected one of {sorted(MODELS)}.")
  return MODELS[key](num_classes=num_classes, **kwargs)
