r"""Training recipes: named sets of config values that go together, applied on top of a config.

A recipe is a flat mapping of dotted config keys to values, the same keys as the command line's
`--config.<key>=<value>`, so an experiment applies one with `apply(config, NNUNET)` and
`benchmarks/recipe.py` passes the same values as flags to the real command line. The experiments
take a recipe's name after their path (config_flags' `path:argument`):

  python -m medjax.train --config experiments/decathlon_unet3d.py:nnunet

- `NNUNET`: nnU-Net v2's training recipe (nnUNetTrainer): Dice + cross-entropy with the Dice
  term over the foreground classes, deep supervision, SGD with Nesterov momentum 0.99 at
  1e-2 and weight decay 3e-5, the poly learning-rate decay (exponent 0.9), a third of the crops
  centred on a foreground voxel, nnU-Net's augmentation. Crop, batch and network size are not
  part of it: they come from the experiment or from planning (`config.plan`).
- `NNUNET_ADAM`: the same with Adam at 3e-3 and no weight decay, which converges within the
  short budgets a CPU allows where SGD at momentum 0.99 does not yet.
- `NNUNET_ADAM_NOAUG`: `NNUNET_ADAM` without augmentation: the best of these on the built-in
  brains within the quickstart's 600 steps, and the quickstart's recipe.
`python benchmarks/recipe.py` measures them; README, "Training recipes", has the figures.
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

NNUNET: Mapping[str, Any] = {
    "loss.name": "dice_ce",  # DC_and_CE_loss: weight_ce 1, weight_dice 1
    "loss.include_background": False,  # its soft Dice has do_bg=False
    "model.deep_supervision": True,  # weights 1/2^i over the decoder levels, the lowest 0
    "optimizer": "sgd",
    "learning_rate": 1e-2,
    "momentum": 0.99,
    "nesterov": True,
    "weight_decay": 3e-5,
    "lr_schedule": "poly",  # PolyLRScheduler, exponent 0.9
    "dataset.foreground_oversampling": 0.33,  # oversample_foreground_percent
    "augmentation.enabled": True,
    "augmentation.preset": "nnunet",
}

NNUNET_ADAM: Mapping[str, Any] = {
    **NNUNET, "optimizer": "adam", "learning_rate": 3e-3, "weight_decay": 0.0,
    "nesterov": False,
}

NNUNET_ADAM_NOAUG: Mapping[str, Any] = {**NNUNET_ADAM, "augmentation.enabled": False}


# The names `--config experiments/<name>.py:<recipe>` takes ('' = the experiment as it is).
RECIPES: Mapping[str, Mapping[str, Any]] = {
    "nnunet": NNUNET, "nnunet_adam": NNUNET_ADAM, "nnunet_adam_noaug": NNUNET_ADAM_NOAUG}


def apply_named(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """`apply(config, RECIPES[name])`; '' leaves `config` as it is."""
  if not name:
    return config
  if name not in RECIPES:
    raise ValueError(f"Unknown recipe {name!r} after the config file's ':'; expected one of "
                     f"{sorted(RECIPES)} (or nothing).")
  return apply(config, RECIPES[name])


def apply(config: ml_collections.ConfigDict, recipe: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Sets each dotted key of `recipe` in `config` (in place; returns it).

  Every key must already be declared (medjax/configs/default.py): a misspelt recipe fails here
  instead of adding a key nothing reads.
  """
  for dotted, value in recipe.items():
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
      node = node[name]
    if leaf not in node:
      raise KeyError(f"recipe key {dotted!r} is not a config key")
    node[leaf] = value
  return config


def as_flags(recipe: Mapping[str, Any]) -> list[str]:
  """The recipe as command-line overrides, `--config.<key>=<value>`."""
  return [f"--config.{key}={value}" for key, value in recipe.items()]
