"""Tiny training settings for tests: the real experiment configs, shrunk to run in seconds."""

import copy

import ml_collections

# `--config.key=value` overrides that shrink an experiment (used in-process and on the CLI).
TINY_OVERRIDES = {
    "model.base_features": 2,
    "optimizer": "sgd",
    "learning_rate": 0.1,
    "momentum": 0.5,
    "weight_decay": 1e-8,
    "batch_size": 2,
    "num_train_steps": 4,
    "log_every_steps": 1,
    "eval_every_steps": 4,
    "checkpoint_every_steps": 2,
    "dataset.crop_size": (16, 16, 16),
    "eval.roi_size": (16, 16, 16),
    "eval.sw_batch_size": 2,
    # The seed experiment's plain recipe, also on top of the quickstart's (recipes.py): these
    # tests check the pipeline, and the deep-supervision heads and Dice + CE would only add
    # compile time (tests/test_deep_supervision.py and test_losses.py cover them).
    "loss.name": "dice",
    "loss.include_background": None,
    "model.deep_supervision": None,
    "lr_schedule": "constant",
    "dataset.foreground_oversampling": 0.0,
    "augmentation.enabled": False,
}


# The smallest UNet that trains (one level, XLA's convolution, 8^3 crops): it compiles in about
# a second, for tests of the step's logic rather than of the network.
FAST_COMPILE = {"model__num_levels": 1, "model__conv_method": "xla",
                "dataset__crop_size": (8, 8, 8), "eval__roi_size": (8, 8, 8)}


def shrink(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """A copy of `config` with TINY_OVERRIDES, then `overrides` ('.' in keys written as '__')."""
  config = copy.deepcopy(config)
  config.update_from_flattened_dict(dict(TINY_OVERRIDES))
  config.update_from_flattened_dict({k.replace("__", "."): v for k, v in overrides.items()})
  return config


def cli_overrides(**overrides) -> list[str]:
  """TINY_OVERRIDES (+ overrides) as `--config.key=value` command-line flags."""
  flat = dict(TINY_OVERRIDES, **{k.replace("__", "."): v for k, v in overrides.items()})
  return [f"--config.{k}={v}" for k, v in flat.items()]


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  """The seed experiment config, shrunk (no data: for tests of the step alone)."""
  from conftest import load_experiment_config  # pylint: disable=g-import-not-at-top
  return shrink(load_experiment_config(), **overrides)
