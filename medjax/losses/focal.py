"""MONAI's focal loss (softmax or per-channel sigmoid)."""

import warnings
from typing import Sequence

import jax
import jax.numpy as jnp

from medjax.losses._targets import (ArrayLike, _check_reduction, _class_weights,
                                    _keeps_background, _reduce, _target)

def _focal_elements(logits, labels, fn_name, *, gamma, alpha, class_weights, softmax, sigmoid,
                    include_background) -> jax.Array:
  """MONAI's per-element focal losses `[B, ..., K']`."""
  if softmax == sigmoid:
    raise ValueError(f"{fn_name}: exactly one of softmax (MONAI's use_softmax=True) and sigmoid "
                     f"(use_softmax=False) must be True; got softmax={softmax}, "
                     f"sigmoid={sigmoid}.")
  target, _, _ = _target(logits, labels, fn_name)
  x = jnp.asarray(logits, jnp.float32)
  num_classes = x.shape[-1]
  include_background = _keeps_background(include_background, num_classes)
  if not include_background:
    # MONAI drops the background channel from the logits BEFORE the softmax.
    x, target = x[..., 1:], target[..., 1:]
  kept = x.shape[-1]
  alpha_vec = None
  if alpha is not None:
    alpha_vec = jnp.asarray(alpha, jnp.float32)
    if alpha_vec.ndim == 1 and alpha_vec.shape[0] != kept:
      raise ValueError(f"{fn_name}: alpha must be one number or one per kept class (length "
                       f"{kept}); got length {alpha_vec.shape[0]}.")
    if alpha_vec.ndim > 1:
      raise ValueError(f"{fn_name}: alpha must be one number or a vector; got shape "
                       f"{tuple(alpha_vec.shape)}.")
  if softmax:
    if kept == 1:
      warnings.warn(f"{fn_name}: a softmax over one channel is 1, so the softmax focal loss is 0 "
                    f"with no gradient (as in MONAI); use sigmoid=True.", stacklevel=3)
    log_p = jax.nn.log_softmax(x, axis=-1)
    loss = -((1.0 - jnp.exp(log_p)) ** gamma) * log_p * target
    if alpha_vec is not None:
      if alpha_vec.ndim == 0:
        if not include_background:
          warnings.warn("`include_background=False`, scalar `alpha` ignored when using softmax.",
                        stacklevel=3)
        else:
          loss = loss * jnp.concatenate([1.0 - alpha_vec[None],
                                         jnp.full((kept - 1,), alpha_vec)])
      else:
        loss = loss * alpha_vec
  else:
    bce = x - x * target - jax.nn.log_sigmoid(x)
    # (1 - p_t)^gamma as exp(gamma log sigmoid(-x (2t - 1))), MONAI's overflow-safe form.
    loss = jnp.exp(gamma * jax.nn.log_sigmoid(-x * (2.0 * target - 1.0))) * bce
    if alpha_vec is not None:
      if alpha_vec.ndim == 0:
        loss = loss * (target * alpha_vec + (1.0 - target) * (1.0 - alpha_vec))
      else:
        loss = loss * jnp.where(target == 1.0, alpha_vec, 1.0)
  w = _class_weights(class_weights, num_classes, include_background, fn_name)
  if w is not None:
    loss = loss * w
  return loss


def _focal_reduce(loss: jax.Array, reduction: str) -> jax.Array:
  if reduction == "sum":
    # MONAI's 'sum': the mean over the voxels, summed over samples and classes.
    return jnp.sum(jnp.mean(loss, axis=tuple(range(1, loss.ndim - 1))))
  return _reduce(loss, reduction)


def focal_loss(logits: jax.Array, labels: jax.Array, *, gamma: float = 2.0,
               alpha: float | Sequence[float] | None = None,
               class_weights: ArrayLike | None = None, softmax: bool = True,
               sigmoid: bool = False, include_background: bool = True,
               reduction: str = "mean") -> jax.Array:
  r"""Focal loss (Lin et al. 2017), MONAI's `FocalLoss`.

  `softmax=True` is `FocalLoss(use_softmax=True)`: with `log p = log_softmax(logits)` over the
  kept channels (MONAI drops the background channel BEFORE the softmax when
  `include_background=False`) and the target `t`, every element (voxel i, class c) has

    l_ic = -a_c (1 - p_ic)^gamma t_ic log p_ic,   a = (1 - alpha, alpha, ..., alpha)

  `sigmoid=True` (with `softmax=False`) is `FocalLoss(use_softmax=False)`, per-channel:

    bce_ic = x - x t - log sigmoid(x),   l_ic = a_ic sigmoid(-x (2t - 1))^gamma bce_ic
    a_ic = alpha t + (1 - alpha)(1 - t)

  (`(1 - p_t)^gamma` for binary targets; `gamma = 0`, `alpha = None` is BCE-with-logits).
  `alpha` may also be one value per kept class (MONAI 1.6): softmax `a_c = alpha_c`; sigmoid
  `a_ic = alpha_c` where `t = 1`, else 1. A scalar `alpha` is ignored, with MONAI's warning, for
  the softmax without the background. `class_weights` (one number, K, or K - 1 without the
  background) multiply l_ic. Reductions as MONAI: 'mean' over every element (B, voxels and K'),
  'sum' = the mean over the voxels summed over (b, c), 'none' the `[B, ..., K']` elements.

  A softmax over one kept channel (K = 1, or K = 2 without the background) is 1, so the loss is
  0 as in MONAI; medjax warns.

  Returns:
    The scalar loss (float32), or the `[B, ..., K']` losses with `reduction='none'`.
  """
  _check_reduction(reduction, "focal_loss")
  loss = _focal_elements(logits, labels, "focal_loss", gamma=gamma, alpha=alpha,
                         class_weights=class_weights, softmax=softmax, sigmoid=sigmoid,
                         include_background=include_background)
  return _focal_reduce(loss, reduction)
