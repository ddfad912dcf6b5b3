"""Cross-entropy losses: torch's softmax `CrossEntropyLoss` and per-channel `BCEWithLogitsLoss`."""

import jax
import jax.numpy as jnp

from medjax.losses._targets import (ArrayLike, _check_ids, _check_inputs,
                                    _check_no_ignore_index, _check_reduction, _class_weights,
                                    _reduce, _target)

def _check_label_smoothing(label_smoothing: float, fn_name: str) -> None:
  if not 0.0 <= label_smoothing <= 1.0:
    raise ValueError(f"{fn_name}: label_smoothing must be in [0, 1]; got {label_smoothing}.")


def _cross_entropy_terms(logits, labels, fn_name, *, class_weights, ignore_index,
                         label_smoothing) -> tuple[jax.Array, jax.Array]:
  """`(per_voxel [B, ...], normaliser)`: torch's 'mean' is `sum(per_voxel) / normaliser`."""
  _check_label_smoothing(label_smoothing, fn_name)
  logits, labels, is_ids = _check_inputs(logits, labels, fn_name)
  num_classes = logits.shape[-1]
  if num_classes < 2:
    raise ValueError(f"{fn_name}: a softmax cross-entropy needs at least 2 classes; logits have "
                     f"shape {tuple(logits.shape)} (for one channel use "
                     f"binary_cross_entropy_loss).")
  log_p = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  w = _class_weights(class_weights, num_classes, True, fn_name)
  eps = label_smoothing
  if not is_ids:
    # torch's probability targets: smoothed as t (1 - eps) + eps / K, and the mean is over the
    # voxels whatever the weights.
    _check_no_ignore_index(ignore_index, labels, fn_name)
    target = labels * (1.0 - eps) + eps / num_classes if eps > 0 else labels
    weighted = log_p * target if w is None else log_p * target * w
    per_voxel = -jnp.sum(weighted, axis=-1)
    return per_voxel, jnp.asarray(per_voxel.size, jnp.float32)
  _check_ids(labels, num_classes, fn_name, ignore_index)
  valid = (labels >= 0) & (labels < num_classes)
  if ignore_index is not None:
    valid &= labels != ignore_index
  onehot = jax.nn.one_hot(jnp.where(valid, labels, -1), num_classes, dtype=jnp.float32)
  nll = -jnp.sum(onehot * log_p, axis=-1)  # 0 at dropped voxels
  voxel_w = valid.astype(jnp.float32) if w is None else onehot @ w
  per_voxel = voxel_w * nll
  if eps > 0:
    smooth = -jnp.sum(log_p if w is None else log_p * w, axis=-1)
    per_voxel = (1.0 - eps) * per_voxel + (eps / num_classes) * jnp.where(valid, smooth, 0.0)
  return per_voxel, jnp.sum(voxel_w)


def cross_entropy_loss(logits: jax.Array, labels: jax.Array, *,
                       class_weights: ArrayLike | None = None, ignore_index: int | None = None,
                       label_smoothing: float = 0.0, reduction: str = "mean") -> jax.Array:
  r"""Softmax cross-entropy, torch's `nn.CrossEntropyLoss(weight=class_weights, ignore_index,
  label_smoothing, reduction)` (the class axis last instead of second).

  With `log p = log_softmax(logits)`, voxels i with ids y_i, `eps = label_smoothing` and
  `w_c = 1` without `class_weights`, the per-voxel loss is

    l_i = (1 - eps) w_{y_i} (-log p_{i, y_i}) + (eps / K) sum_c w_c (-log p_{ic})

  and 'mean' is `sum_i l_i / sum_i w_{y_i}` (torch's weighted mean; the plain mean without
  weights), 'sum' is `sum_i l_i`, 'none' the `[B, ...]` array of `l_i`. Voxels labelled
  `ignore_index` (and, under `jit`, ids outside `[0, K)`) are dropped: `l_i = 0` and they leave
  the normaliser. If every voxel is dropped, 'mean' is NaN, as in torch.

  A float target `t` `[B, ..., K]` is torch's probability target: `t' = (1 - eps) t + eps / K`,
  `l_i = -sum_c w_c t'_ic log p_ic`, and 'mean' divides by the number of voxels whatever the
  weights (torch's rule; so a one-hot float target with `class_weights` differs from its integer
  ids). `ignore_index` needs integer ids.

  Returns:
    The scalar loss (float32), or the per-voxel losses `[B, ...]` with `reduction='none'`.
  """
  _check_reduction(reduction, "cross_entropy_loss")
  per_voxel, normaliser = _cross_entropy_terms(
      logits, labels, "cross_entropy_loss", class_weights=class_weights,
      ignore_index=ignore_index, label_smoothing=label_smoothing)
  if reduction == "mean":
    return jnp.sum(per_voxel) / normaliser
  return _reduce(per_voxel, reduction)


def _bce_elements(logits, labels, fn_name, *, pos_weight, class_weights,
                  ignore_index=None) -> tuple[jax.Array, jax.Array | None]:
  """`(per-element losses [B, ..., K], valid [B, ...] or None)`."""
  target, valid, _ = _target(logits, labels, fn_name, ignore_index=ignore_index)
  x = jnp.asarray(logits, jnp.float32)
  num_classes = x.shape[-1]
  # -[pw y log s(x) + (1 - y) log(1 - s(x))] = (1 - y) x + (1 + (pw - 1) y) softplus(-x)
  log_weight = 1.0
  pw = _class_weights(pos_weight, num_classes, True, fn_name, "pos_weight")
  if pw is not None:
    log_weight = 1.0 + (pw - 1.0) * target
  loss = (1.0 - target) * x + log_weight * jax.nn.softplus(-x)
  w = _class_weights(class_weights, num_classes, True, fn_name)
  if w is not None:
    loss = loss * w
  if valid is not None:
    loss = loss * valid[..., None]
  return loss, valid


def binary_cross_entropy_loss(logits: jax.Array, labels: jax.Array, *,
                              pos_weight: ArrayLike | None = None,
                              class_weights: ArrayLike | None = None,
                              reduction: str = "mean") -> jax.Array:
  r"""Per-channel sigmoid cross-entropy (multi-label), torch's
  `nn.BCEWithLogitsLoss(weight=class_weights, pos_weight=pos_weight, reduction)`.

  With `x` the logits `[B, ..., K]`, `y` the target (one-hot ids -- with one channel
  `labels == 1` -- or a float/multi-hot target such as `region_targets`), `s` the sigmoid,
  `w_c` = class_weights and `pw_c` = pos_weight (1 when None), every element has

    l = -w_c [pw_c y log s(x) + (1 - y) log(1 - s(x))]
      = w_c [(1 - y) x + (1 + (pw_c - 1) y) softplus(-x)]     (the stable form torch uses)

  reduced over all elements by `reduction` ('mean', 'sum', or 'none': `[B, ..., K]`).
  `pos_weight` and `class_weights` are one number or one per channel (length K); in medjax's
  channels-last layout they broadcast over the class axis, as torch's do over the last axis.
  Under `jit`, ids outside the range one-hot to all zeros (a negative for every channel).

  Returns:
    The scalar loss (float32), or the `[B, ..., K]` losses with `reduction='none'`.
  """
  _check_reduction(reduction, "binary_cross_entropy_loss")
  loss, _ = _bce_elements(logits, labels, "binary_cross_entropy_loss", pos_weight=pos_weight,
                          class_weights=class_weights)
  return _reduce(loss, reduction)
