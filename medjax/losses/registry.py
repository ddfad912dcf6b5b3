"""Losses by name, for configs: `LOSSES` and `get_loss(name, **options)`."""

import functools
import inspect
from typing import Any, Callable

import jax
import numpy as np

from medjax.losses.compound import dice_ce_loss, dice_focal_loss
from medjax.losses.cross_entropy import binary_cross_entropy_loss, cross_entropy_loss
from medjax.losses.dice import dice_loss, generalized_dice_loss, tversky_loss
from medjax.losses.focal import focal_loss

LOSSES: dict[str, Callable[..., jax.Array]] = {
    "binary_cross_entropy": binary_cross_entropy_loss,
    "cross_entropy": cross_entropy_loss,
    "dice": dice_loss,
    "dice_ce": dice_ce_loss,
    "dice_focal": dice_focal_loss,
    "focal": focal_loss,
    "generalized_dice": generalized_dice_loss,
    "tversky": tversky_loss,
}


def loss_options(name: str) -> set[str] | None:
  """The keyword options loss `name` takes (None for an unknown name)."""
  fn = LOSSES.get(name.lower()) if isinstance(name, str) else None
  if fn is None:
    return None
  return {p.name for p in inspect.signature(fn).parameters.values()
          if p.kind is inspect.Parameter.KEYWORD_ONLY}


def get_loss(name: str, **kwargs: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`loss(logits, labels) -> scalar` for the loss registered as `name`, options bound.

  Args:
    name: one of `LOSSES` (`binary_cross_entropy`, `cross_entropy`, `dice`, `dice_ce`,
      `dice_focal`, `focal`, `generalized_dice`, `tversky`; any case).
    **kwargs: the loss's keyword options (e.g. `include_background=False`); sequences such as
      `class_weights`, `pos_weight` or `alpha` from a config are turned into arrays.

  Raises:
    ValueError: for an unknown name or an option the loss does not take.
  """
  options = loss_options(name)
  if options is None:
    raise ValueError(f"Unknown loss name {name!r}; expected one of {sorted(LOSSES)}.")
  fn = LOSSES[name.lower()]
  unknown = sorted(set(kwargs) - options)
  if unknown:
    raise ValueError(f"Loss {name!r} does not take option(s) {unknown}; it takes "
                     f"{sorted(options)}.")
  kwargs = {k: (np.asarray(v, np.float32) if isinstance(v, (list, tuple)) else v)
            for k, v in kwargs.items()}
  return functools.partial(fn, **kwargs)
