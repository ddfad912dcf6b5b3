"""Segmentation losses and per-class Dice scores, as plain `jnp` functions.

Conventions (channels-last, as everywhere in medjax):
* `logits` `[B, ..., K]`: one score per class K at every voxel (`[B, D, H, W, K]` for volumes).
* `labels`, either
  - integer class ids `[B, ...]` in `[0, K)`, the shape of `logits` without its last axis; they
    are one-hot encoded inside (MONAI's `to_onehot_y=True`). With ONE channel (`K = 1`, a binary
    task) the target is the mask `labels == 1` (ids in `[0, 2)`); or
  - a float target `[B, ..., K]` of the logits' shape: one-hot, soft (probabilities) or
    multi-hot (overlapping regions, see `region_targets`), used as given.
* Integer ids outside the range: when the labels are concrete (not traced) every loss raises a
  ValueError naming the range (`ignore_index`, where a loss takes one, is allowed). Under `jit`
  they cannot be checked: they one-hot to all zeros (no class), and the cross-entropy terms drop
  those voxels from their mean, with or without `class_weights` (so `class_weights=[1] * K` is
  the same as no weights), as torch does for `ignore_index`.
* Every loss is computed in float32 whatever the logits' dtype, and returns a float32 scalar for
  `reduction='mean'` or `'sum'`.

Names follow MONAI and torch, so a MONAI user can read a medjax config. With MONAI's tensors
`[B, K, ...]` (channels-first) moved to medjax's channels-last layout:

  medjax                      MONAI / torch
  dice_loss                   monai.losses.DiceLoss(to_onehot_y=True, softmax=True, ...)
  tversky_loss                monai.losses.TverskyLoss
  generalized_dice_loss       monai.losses.GeneralizedDiceLoss
  cross_entropy_loss          torch.nn.CrossEntropyLoss(weight, ignore_index, label_smoothing)
  binary_cross_entropy_loss   torch.nn.BCEWithLogitsLoss(weight, pos_weight)
  focal_loss                  monai.losses.FocalLoss(use_softmax=softmax)
  dice_ce_loss                monai.losses.DiceCELoss
  dice_focal_loss             monai.losses.DiceFocalLoss

  class_weights  = MONAI's `weight` (torch's `weight`); include_background, squared_pred,
  jaccard, smooth_nr, smooth_dr, batch, reduction, gamma, alpha, lambda_* as in MONAI.

Differences: medjax's Dice-family losses default to `softmax=True` (MONAI: False); MONAI options
that a JAX function does not need (`to_onehot_y`, `other_act`) are absent. A softmax over ONE
channel is skipped with MONAI's warning ("single channel prediction, `softmax=True` ignored."),
and `include_background=False` with one channel is ignored with MONAI's warning. As MONAI's
DiceLoss, the Dice family ignores `class_weights` when a single channel is left (K = 1, or K = 2
without the background): one weight would only scale the loss. Where medjax departs from
MONAI 1.6.1 on purpose:
* `dice_ce_loss(sigmoid=True)` uses the BCE term for any number of channels (multi-label and
  region outputs, as nnU-Net's region-based training); MONAI's DiceCELoss uses it only for one
  channel (a softmax cross-entropy otherwise, whatever `sigmoid`), which mixes a sigmoid Dice
  with a softmax cross-entropy.
* MONAI's FocalLoss refuses a per-class weight for one channel; medjax applies it.

`class_weights` has one weight per class id (length K), or one number for every class. With
`include_background=False` a Dice or focal loss also takes MONAI's length-(K-1) form, without the
background weight. `get_loss(name, **options)` builds a `loss(logits, labels) -> scalar` from a
config.
"""

import functools
import inspect
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = Any

# BraTS sub-regions on medjax's class ids (0 background, 1 NCR/NET, 2 ED, 3 ET): whole tumour,
# tumour core, enhancing tumour -- the `regions` argument of `region_targets`.
BRATS_REGIONS: tuple[tuple[int, ...], ...] = ((1, 2, 3), (1, 3), (3,))

_REDUCTIONS = ("mean", "sum", "none")


def _concrete(x: jax.Array) -> np.ndarray | None:
  """`x` as a numpy array, or None when it is traced (under `jit`, `grad`, `vmap`)."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _check_reduction(reduction: str, fn_name: str,
                     allowed: tuple[str, ...] = _REDUCTIONS) -> None:
  if reduction not in allowed:
    raise ValueError(f"{fn_name}: reduction must be one of {list(allowed)}; got {reduction!r}.")


def _check_inputs(logits: ArrayLike, labels: ArrayLike,
                  fn_name: str) -> tuple[jax.Array, jax.Array, bool]:
  """`(logits, labels, is_ids)`: integer ids `[B, ...]`, or a float target of logits' shape."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  if logits.ndim < 2:
    raise ValueError(f"{fn_name}: logits must be [B, ..., K]; got shape {logits.shape}.")
  if tuple(labels.shape) == tuple(logits.shape[:-1]):
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise ValueError(f"{fn_name}: labels of shape logits.shape[:-1] = "
                       f"{tuple(logits.shape[:-1])} must hold integer class ids; got dtype "
                       f"{labels.dtype} (a float target must have the logits' shape "
                       f"{tuple(logits.shape)}).")
    return logits, labels, True
  if tuple(labels.shape) == tuple(logits.shape):
    return logits, labels.astype(jnp.float32), False
  raise ValueError(f"{fn_name}: labels must have shape logits.shape[:-1] = "
                   f"{tuple(logits.shape[:-1])} (integer class ids) or logits.shape = "
                   f"{tuple(logits.shape)} (a float target); got labels shape "
                   f"{tuple(labels.shape)} for logits shape {tuple(logits.shape)}.")


def _check_ids(labels: jax.Array, num_ids: int, fn_name: str,
               ignore_index: int | None = None, one_channel: bool = False) -> None:
  """Raises for ids outside `[0, num_ids)` (other than `ignore_index`) when `labels` are
  concrete; traced labels cannot be checked (see the module docstring)."""
  values = _concrete(labels)
  if values is None:
    return
  bad = (values < 0) | (values >= num_ids)
  if ignore_index is not None:
    bad &= values != ignore_index
  if np.any(bad):
    allowed = f"[0, {num_ids})"
    if ignore_index is not None:
      allowed += f" or ignore_index={ignore_index}"
    if one_channel:
      allowed += " (one channel: the target is labels == 1)"
    raise ValueError(f"{fn_name}: labels must be class ids in {allowed}; got "
                     f"values {np.unique(values[bad])[:8].tolist()}.")


def _check_no_ignore_index(ignore_index: int | None, target: jax.Array, fn_name: str) -> None:
  if ignore_index is not None:
    raise ValueError(f"{fn_name}: ignore_index={ignore_index} needs integer class ids as labels; "
                     f"got a float target of shape {tuple(target.shape)} (as torch, which does "
                     f"not support ignore_index with probability targets).")


def _target(logits: jax.Array, labels: ArrayLike, fn_name: str, *,
            ignore_index: int | None = None) -> tuple[jax.Array, jax.Array | None, bool]:
  """`(target [B, ..., K] float32, valid [B, ...] float32 or None, is_ids)`.

  Integer ids are one-hot encoded (with one channel: `labels == 1`); `valid` is 0 where the id is
  `ignore_index` (None without one). A float target is returned as given.
  """
  logits, labels, is_ids = _check_inputs(logits, labels, fn_name)
  num_classes = logits.shape[-1]
  if not is_ids:
    _check_no_ignore_index(ignore_index, labels, fn_name)
    return labels, None, False
  _check_ids(labels, 2 if num_classes == 1 else num_classes, fn_name, ignore_index,
             one_channel=num_classes == 1)
  valid = None
  if ignore_index is not None:
    keep = labels != ignore_index
    valid = keep.astype(jnp.float32)
    labels = jnp.where(keep, labels, -1)
  if num_classes == 1:
    target = (labels == 1)[..., None].astype(jnp.float32)
  else:
    target = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return target, valid, True


def _probabilities(logits: jax.Array, *, softmax: bool, sigmoid: bool,
                   fn_name: str) -> jax.Array:
  if softmax and sigmoid:
    raise ValueError(f"{fn_name}: softmax=True and sigmoid=True are not compatible.")
  x = jnp.asarray(logits, jnp.float32)
  if sigmoid:
    return jax.nn.sigmoid(x)
  if softmax:
    if x.shape[-1] == 1:
      # MONAI's rule and message: a softmax over one channel would be 1 everywhere (no gradient).
      warnings.warn("single channel prediction, `softmax=True` ignored.", stacklevel=3)
      return x
    return jax.nn.softmax(x, axis=-1)
  return x


def _class_weights(class_weights: ArrayLike | None, num_classes: int, include_background: bool,
                   fn_name: str, arg: str = "class_weights") -> jax.Array | None:
  """Weights for the classes a loss keeps: `[K]`, or `[K - 1]` without the background.

  One number is the same weight for every kept class (MONAI's scalar `weight`).
  """
  if class_weights is None:
    return None
  w = jnp.asarray(class_weights, jnp.float32)
  kept = num_classes if include_background else num_classes - 1
  if w.ndim == 0:
    w = jnp.full((kept,), w)
  if w.ndim != 1 or w.shape[0] not in (num_classes, kept):
    expected = (f"{num_classes}" if include_background
                else f"{num_classes} (one per class id) or {kept} (without the background)")
    raise ValueError(f"{fn_name}: {arg} must be a vector of length {expected}; got shape "
                     f"{tuple(w.shape)}.")
  values = _concrete(w)
  if values is not None and np.any(values < 0):
    raise ValueError(f"{fn_name}: {arg} must be >= 0; got {values.tolist()}.")
  if w.shape[0] == num_classes and not include_background:
    w = w[1:]
  return w


def _keeps_background(include_background: bool, num_classes: int) -> bool:
  """MONAI: `include_background=False` with one channel is ignored, with a warning."""
  if not include_background and num_classes == 1:
    warnings.warn("single channel prediction, `include_background=False` ignored.", stacklevel=3)
    return True
  return include_background


def _reduce_axes(ndim: int, batch: bool) -> tuple[int, ...]:
  """Axes summed over: the spatial ones, plus the batch axis when `batch`."""
  return tuple(range(0 if batch else 1, ndim - 1))


def _reduce(values: jax.Array, reduction: str) -> jax.Array:
  if reduction == "mean":
    return jnp.mean(values)
  if reduction == "sum":
    return jnp.sum(values)
  return values


def _overlap_terms(logits: jax.Array, labels: ArrayLike, fn_name: str, *,
                   include_background: bool, softmax: bool, sigmoid: bool, batch: bool,
                   ignore_index: int | None = None):
  """Probabilities and targets of the kept classes, masked, and the axes to sum over.

  Returns `(probs, target, axes, include_background)` where `include_background` is the
  effective one (True with one channel).
  """
  target, valid, _ = _target(logits, labels, fn_name, ignore_index=ignore_index)
  probs = _probabilities(logits, softmax=softmax, sigmoid=sigmoid, fn_name=fn_name)
  if valid is not None:
    # Masked voxels leave both the prediction and the target (MONAI 1.6's ignore_index,
    # nnU-Net's ignore label).
    probs = probs * valid[..., None]
    target = target * valid[..., None]
  include_background = _keeps_background(include_background, probs.shape[-1])
  if not include_background:
    probs, target = probs[..., 1:], target[..., 1:]
  return probs, target, _reduce_axes(probs.ndim, batch), include_background


def _dice_per_class(logits, labels, fn_name, *, include_background, softmax, sigmoid,
                    squared_pred, jaccard, smooth_nr, smooth_dr, class_weights, batch,
                    ignore_index=None) -> jax.Array:
  """`[B, K']` (or `[K']` with `batch`) weighted Dice (or Jaccard) losses."""
  probs, target, axes, include_background = _overlap_terms(
      logits, labels, fn_name, include_background=include_background, softmax=softmax,
      sigmoid=sigmoid, batch=batch, ignore_index=ignore_index)
  w = _class_weights(class_weights, logits.shape[-1], include_background, fn_name)
  intersection = jnp.sum(probs * target, axis=axes)
  if squared_pred:
    total = jnp.sum(probs * probs, axis=axes) + jnp.sum(target * target, axis=axes)
  else:
    total = jnp.sum(probs, axis=axes) + jnp.sum(target, axis=axes)
  denominator = 2.0 * (total - intersection) if jaccard else total
  loss = 1.0 - (2.0 * intersection + smooth_nr) / (denominator + smooth_dr)
  if w is not None and loss.shape[-1] > 1:
    # As MONAI: with a single channel left the weight is ignored (it would only scale the loss).
    loss = loss * w
  return loss


def dice_loss(logits: jax.Array, labels: jax.Array, *, include_background: bool = True,
              softmax: bool = True, sigmoid: bool = False, squared_pred: bool = False,
              jaccard: bool = False, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
              class_weights: ArrayLike | None = None, batch: bool = False,
              reduction: str = "mean") -> jax.Array:
  r"""Multi-class soft Dice loss (Milletari et al. 2016), MONAI's `DiceLoss`.

  With probabilities `p = softmax(logits)` `[B, ..., K]` and the target `t` (one-hot ids, or the
  float target), for each sample b and class c (sums over the spatial axes; with `batch=True`
  also over the batch, so there is one value per class, as MedicalZoo pools them):

    I_bc = sum p t,   S_bc = sum p + sum t   (squared_pred: sum p^2 + sum t^2)
    Dice_bc = (2 I_bc + smooth_nr) / (S_bc + smooth_dr)
    jaccard:   (2 I_bc + smooth_nr) / (2 (S_bc - I_bc) + smooth_dr)
    loss_bc = w_c (1 - Dice_bc)

  reduced by `reduction` over (b, c): 'mean' (MONAI's default), 'sum', or 'none' (the `[B, K']`
  array, `[K']` with `batch=True`; K' = K, or K - 1 without the background). `w_c = 1` without
  `class_weights`. (Weights multiply the per-class loss, as in MONAI and
  `optax.losses.dice_loss`, so a perfect prediction has loss ~0 whatever the weights.)

  MONAI: `DiceLoss(include_background, to_onehot_y=True (integer labels), softmax, sigmoid,
  squared_pred, jaccard, reduction, smooth_nr, smooth_dr, batch, weight=class_weights)` on
  channels-first tensors; `soft_label=False` (with `squared_pred=False` its terms are the ones
  above for soft targets too).

  Args:
    logits: `[B, ..., K]` class scores (probabilities when `softmax=sigmoid=False`).
    labels: `[B, ...]` integer class ids, or a float target `[B, ..., K]`.
    include_background: if False, class 0 is left out.
    softmax: apply a softmax over the class axis (the default; skipped, with a warning, for one
      channel).
    sigmoid: apply a per-channel sigmoid instead (MedicalZoo's default); exclusive with softmax.
    squared_pred: use squared terms in the denominator (V-Net).
    jaccard: the soft Jaccard (IoU) loss instead of Dice.
    smooth_nr: added to the numerator; keeps the gradient alive for an absent class.
    smooth_dr: added to the denominator; avoids 0/0.
    class_weights: optional per-class weights (see the module docstring for lengths).
    batch: pool the sums over the batch before the ratio.
    reduction: 'mean', 'sum' or 'none'.

  Returns:
    The scalar loss (float32), or the `[B, K']` / `[K']` losses with `reduction='none'`.
  """
  _check_reduction(reduction, "dice_loss")
  loss = _dice_per_class(logits, labels, "dice_loss", include_background=include_background,
                         softmax=softmax, sigmoid=sigmoid, squared_pred=squared_pred,
                         jaccard=jaccard, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                         class_weights=class_weights, batch=batch)
  return _reduce(loss, reduction)


def tversky_loss(logits: jax.Array, labels: jax.Array, *, alpha: float = 0.5, beta: float = 0.5,
                 include_background: bool = True, softmax: bool = True, sigmoid: bool = False,
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, batch: bool = False,
                 reduction: str = "mean") -> jax.Array:
  r"""Tversky loss (Salehi et al. 2017), MONAI's `TverskyLoss`.

  With `p`, `t` as in `dice_loss` and sums over the spatial axes (and the batch when `batch`):

    TP_bc = sum p t,   FP_bc = sum p (1 - t),   FN_bc = sum (1 - p) t
    T_bc = (TP + smooth_nr) / (TP + alpha FP + beta FN + smooth_dr)
    loss_bc = 1 - T_bc,  reduced over (b, c) by `reduction` ('none': `[B, K']`, `[K']` with batch)

  `alpha` weighs false positives, `beta` false negatives. With `alpha = beta = 0.5` the ratio is
  `(2 TP + 2 smooth_nr) / (sum p + sum t + 2 smooth_dr)`: the Dice loss with doubled smoothing.
  MONAI: `TverskyLoss(..., to_onehot_y=True (integer labels), alpha, beta, reduction)`.

  Returns:
    The scalar loss (float32), or the unreduced `[B, K']` / `[K']` losses.
  """
  _check_reduction(reduction, "tversky_loss")
  probs, target, axes, _ = _overlap_terms(
      logits, labels, "tversky_loss", include_background=include_background, softmax=softmax,
      sigmoid=sigmoid, batch=batch)
  tp = jnp.sum(probs * target, axis=axes)
  fp = jnp.sum(probs * (1.0 - target), axis=axes)
  fn = jnp.sum((1.0 - probs) * target, axis=axes)
  score = (tp + smooth_nr) / (tp + alpha * fp + beta * fn + smooth_dr)
  return _reduce(1.0 - score, reduction)


def generalized_dice_loss(logits: jax.Array, labels: jax.Array, *,
                          include_background: bool = True, softmax: bool = True,
                          sigmoid: bool = False, w_type: str = "square",
                          smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                          batch: bool = False, reduction: str = "mean") -> jax.Array:
  r"""Generalised Dice loss (Sudre et al. 2017), MONAI's `GeneralizedDiceLoss`.

  With `p`, `t` as in `dice_loss`, per sample b (one pooled term with `batch=True`):

    T_bc = sum t,   I_bc = sum p t,   S_bc = sum p + sum t
    w_bc = 1 / T_bc^2  ('square'),  1 / T_bc  ('simple'),  1  ('uniform')
    loss_b = 1 - (2 sum_c w_bc I_bc + smooth_nr) / (sum_c w_bc S_bc + smooth_dr)

  reduced over b by `reduction` ('none': the `[B]` losses, `[1]` with `batch=True`, which are
  MONAI's `[B, 1, 1, ...]` / `[1, 1, ...]` without their unit axes).

  A class absent from the labels has an infinite weight; as in MONAI it is replaced by the
  largest finite weight of the sample (of the whole batch with `batch=True`), or 0 if every
  class is absent. The weights depend on the labels only, so they carry no gradient.

  Returns:
    The scalar loss (float32), or the unreduced losses.
  """
  _check_reduction(reduction, "generalized_dice_loss")
  if w_type not in ("square", "simple", "uniform"):
    raise ValueError(f"generalized_dice_loss: w_type must be 'square', 'simple' or 'uniform'; "
                     f"got {w_type!r}.")
  probs, target, axes, _ = _overlap_terms(
      logits, labels, "generalized_dice_loss", include_background=include_background,
      softmax=softmax, sigmoid=sigmoid, batch=batch)
  intersection = jnp.sum(probs * target, axis=axes)  # [B, K'] or [K']
  target_sum = jnp.sum(target, axis=axes)
  denominator = jnp.sum(probs, axis=axes) + target_sum
  if w_type == "square":
    w = 1.0 / (target_sum * target_sum)
  elif w_type == "simple":
    w = 1.0 / target_sum
  else:
    w = jnp.ones_like(target_sum)
  infinite = jnp.isinf(w)
  w = jnp.where(infinite, 0.0, w)
  w = jnp.where(infinite, jnp.max(w, axis=-1, keepdims=True), w)
  w = jax.lax.stop_gradient(w)
  numerator = 2.0 * jnp.sum(w * intersection, axis=-1) + smooth_nr
  loss = 1.0 - numerator / (jnp.sum(w * denominator, axis=-1) + smooth_dr)
  return _reduce(jnp.reshape(loss, (-1,)), reduction)


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


def _check_lambdas(fn_name: str, **lambdas: float) -> None:
  bad = {k: v for k, v in lambdas.items() if v < 0}
  if bad:
    raise ValueError(f"{fn_name}: {' and '.join(lambdas)} must be >= 0; got "
                     f"{', '.join(f'{k}={v}' for k, v in lambdas.items())}.")


def dice_ce_loss(logits: jax.Array, labels: jax.Array, *, lambda_dice: float = 1.0,
                 lambda_ce: float = 1.0, include_background: bool = True, softmax: bool = True,
                 sigmoid: bool = False, squared_pred: bool = False, jaccard: bool = False,
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                 class_weights: ArrayLike | None = None, batch: bool = False,
                 ignore_index: int | None = None, label_smoothing: float = 0.0,
                 reduction: str = "mean") -> jax.Array:
  r"""Soft Dice plus cross-entropy, MONAI's `DiceCELoss`:

    loss = lambda_dice * dice_loss(...) + lambda_ce * CE

  * `softmax=True` (default): CE = `cross_entropy_loss(class_weights, label_smoothing)`.
  * `sigmoid=True`: the Dice term on per-channel sigmoids, and CE = BCE-with-logits
    (`binary_cross_entropy_loss(pos_weight=class_weights)`, MONAI's `BCEWithLogitsLoss(
    pos_weight=weight)`): multi-label / region training (nnU-Net's regions, BraTS). MONAI's
    DiceCELoss uses the BCE only for ONE channel and a softmax CE for more, whatever `sigmoid`;
    medjax uses the BCE with `sigmoid=True` for any K (the same for K = 1).
  * One channel: the BCE term, as in MONAI (the softmax is skipped, with a warning).

  `include_background`, `squared_pred`, `jaccard`, the smoothing and `batch` are the Dice
  term's; `class_weights` (length K) weigh both terms (the Dice term drops the background weight
  without the background) and the cross-entropy always covers every class. `label_smoothing`
  is the softmax CE's (torch's formula); the BCE has none (ValueError).

  `ignore_index` (integer labels only): voxels with that id leave both terms, as nnU-Net's ignore
  label -- the Dice sums see neither their prediction nor their target, the CE drops them from
  its mean (torch's `ignore_index`). If every voxel is dropped the CE term is 0 (nnU-Net), not
  NaN.

  `reduction`: 'mean' or 'sum' (MONAI's DiceCEReduction): each term reduced so, then combined.

  Returns:
    The scalar loss (float32).
  """
  fn_name = "dice_ce_loss"
  _check_lambdas(fn_name, lambda_dice=lambda_dice, lambda_ce=lambda_ce)
  _check_reduction(reduction, fn_name, ("mean", "sum"))
  _check_label_smoothing(label_smoothing, fn_name)
  dice = _reduce(_dice_per_class(
      logits, labels, fn_name, include_background=include_background, softmax=softmax,
      sigmoid=sigmoid, squared_pred=squared_pred, jaccard=jaccard, smooth_nr=smooth_nr,
      smooth_dr=smooth_dr, class_weights=class_weights, batch=batch,
      ignore_index=ignore_index), reduction)
  num_classes = jnp.shape(logits)[-1]
  if sigmoid or num_classes == 1:
    if label_smoothing > 0:
      raise ValueError(f"{fn_name}: label_smoothing={label_smoothing} applies to the softmax "
                       f"cross-entropy only; the binary cross-entropy (sigmoid=True or one "
                       f"channel) has none.")
    elements, valid = _bce_elements(logits, labels, fn_name, pos_weight=class_weights,
                                    class_weights=None, ignore_index=ignore_index)
    total = jnp.sum(elements)
    normaliser = (jnp.asarray(elements.size, jnp.float32) if valid is None
                  else jnp.sum(valid) * num_classes)
  else:
    per_voxel, normaliser = _cross_entropy_terms(
        logits, labels, fn_name, class_weights=class_weights, ignore_index=ignore_index,
        label_smoothing=label_smoothing)
    total = jnp.sum(per_voxel)
  if reduction == "sum":
    ce = total
  else:
    ce = jnp.where(normaliser > 0, total / jnp.maximum(normaliser, 1e-12), 0.0)
  return lambda_dice * dice + lambda_ce * ce


def dice_focal_loss(logits: jax.Array, labels: jax.Array, *, lambda_dice: float = 1.0,
                    lambda_focal: float = 1.0, gamma: float = 2.0, alpha: float | None = None,
                    include_background: bool = True, softmax: bool = True, sigmoid: bool = False,
                    squared_pred: bool = False, jaccard: bool = False, smooth_nr: float = 1e-5,
                    smooth_dr: float = 1e-5, class_weights: ArrayLike | None = None,
                    batch: bool = False, focal_softmax: bool = False,
                    reduction: str = "mean") -> jax.Array:
  r"""Soft Dice plus focal loss, MONAI's `DiceFocalLoss`:

    loss = lambda_dice * dice_loss(softmax, sigmoid, ...) + lambda_focal * focal_loss(...)

  As in MONAI, `softmax` / `sigmoid` are the Dice term's activation only: the focal term is
  MONAI's `FocalLoss(use_softmax=False)`, the per-channel sigmoid focal loss on the logits,
  unless `focal_softmax=True` (the softmax focal loss; a medjax option, MONAI has none).
  `include_background`, `class_weights` (MONAI's `weight`: K, or K - 1 without the background)
  and `reduction` ('mean' or 'sum') are both terms'; `gamma`, `alpha` the focal term's;
  `squared_pred`, `jaccard`, the smoothing and `batch` the Dice term's.

  Returns:
    The scalar loss (float32).
  """
  fn_name = "dice_focal_loss"
  _check_lambdas(fn_name, lambda_dice=lambda_dice, lambda_focal=lambda_focal)
  _check_reduction(reduction, fn_name, ("mean", "sum"))
  dice = _reduce(_dice_per_class(
      logits, labels, fn_name, include_background=include_background, softmax=softmax,
      sigmoid=sigmoid, squared_pred=squared_pred, jaccard=jaccard, smooth_nr=smooth_nr,
      smooth_dr=smooth_dr, class_weights=class_weights, batch=batch), reduction)
  focal = _focal_reduce(_focal_elements(
      logits, labels, fn_name, gamma=gamma, alpha=alpha, class_weights=class_weights,
      softmax=focal_softmax, sigmoid=not focal_softmax,
      include_background=include_background), reduction)
  return lambda_dice * dice + lambda_focal * focal


def region_targets(labels: ArrayLike, regions: Sequence[Sequence[int]]) -> jax.Array:
  r"""Multi-hot region targets from integer class ids, for sigmoid (multi-label) losses.

    target[..., r] = 1 if labels is one of regions[r] else 0

  E.g. BraTS after medjax's label mapping (0 background, 1 NCR/NET, 2 ED, 3 ET) with
  `BRATS_REGIONS = ((1, 2, 3), (1, 3), (3,))`: whole tumour, tumour core, enhancing tumour.
  Regions may overlap. Use with `dice_loss(sigmoid=True, softmax=False)`,
  `binary_cross_entropy_loss`, `dice_ce_loss(sigmoid=True, softmax=False)` or
  `focal_loss(sigmoid=True, softmax=False)` and a model with R output channels.

  Args:
    labels: `[B, ...]` integer class ids.
    regions: R non-empty sequences of class ids.

  Returns:
    `[B, ..., R]` float32.
  """
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"region_targets: labels must hold integer class ids; got dtype "
                     f"{labels.dtype}.")
  if isinstance(regions, (str, bytes)) or not isinstance(regions, Sequence) or not regions:
    raise ValueError(f"region_targets: regions must be a non-empty sequence of sequences of class "
                     f"ids, e.g. ((1, 2, 3), (1, 3), (3,)); got {regions!r}.")
  columns = []
  for r, ids in enumerate(regions):
    if (isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or not ids
        or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids)):
      raise ValueError(f"region_targets: regions[{r}] must be a non-empty sequence of integer "
                       f"class ids; got {ids!r}.")
    columns.append(jnp.any(labels[..., None] == jnp.asarray(ids, labels.dtype), axis=-1))
  return jnp.stack(columns, axis=-1).astype(jnp.float32)


def per_class_dice(logits: jax.Array, labels: jax.Array, *, num_classes: int,
                   softmax: bool = True, smooth_nr: float = 1e-5,
                   smooth_dr: float = 1e-5) -> jax.Array:
  r"""Soft Dice of every class, pooled over the batch and all voxels, for logging.

    Dice_c = (2 sum p_c t_c + smooth_nr) / (sum p_c + sum t_c + smooth_dr)

  with `p = softmax(logits)` (`softmax=False`: `logits` already are probabilities) and `t` the
  one-hot ids or the float target.

  Args:
    logits: `[B, ..., num_classes]`.
    labels: `[B, ...]` integer class ids, or a float target of the logits' shape.
    num_classes: K, which must be the last axis of `logits`.

  Returns:
    `[num_classes]` float32; a class absent from both labels and prediction gives
    `smooth_nr / smooth_dr` (1 by default).
  """
  if jnp.shape(logits)[-1] != num_classes:
    raise ValueError(f"per_class_dice: num_classes={num_classes} but logits have "
                     f"{jnp.shape(logits)[-1]} classes (shape {tuple(jnp.shape(logits))}).")
  target, _, _ = _target(logits, labels, "per_class_dice")
  probs = _probabilities(logits, softmax=softmax, sigmoid=False, fn_name="per_class_dice")
  axes = tuple(range(probs.ndim - 1))
  intersection = jnp.sum(probs * target, axis=axes)
  denominator = jnp.sum(probs, axis=axes) + jnp.sum(target, axis=axes)
  return (2.0 * intersection + smooth_nr) / (denominator + smooth_dr)


def hard_dice_per_class(pred_ids: jax.Array, labels: jax.Array, num_classes: int, *,
                        ignore_empty: bool = True) -> jax.Array:
  r"""Dice of hard (argmax) predictions per class, pooled over all voxels (and the batch).

    Dice_c = 2 |P_c ∩ T_c| / (|P_c| + |T_c|)

  where `P_c`, `T_c` are the voxels predicted / labelled c. A class absent from the labels
  follows MONAI's `DiceMetric(ignore_empty=...)`: NaN when `ignore_empty` (the default; use
  `nanmean` to average), otherwise 1 if the prediction is empty for it too and 0 if not.

  Args:
    pred_ids: integer class ids, any shape.
    labels: integer class ids, the shape of `pred_ids`.
    num_classes: K.
    ignore_empty: the convention for classes absent from `labels`.

  Returns:
    `[num_classes]` float32.
  """
  pred_ids, labels = jnp.asarray(pred_ids), jnp.asarray(labels)
  if tuple(pred_ids.shape) != tuple(labels.shape):
    raise ValueError(f"hard_dice_per_class: pred_ids shape {tuple(pred_ids.shape)} and labels "
                     f"shape {tuple(labels.shape)} must be equal.")
  for name, a in (("pred_ids", pred_ids), ("labels", labels)):
    if not jnp.issubdtype(a.dtype, jnp.integer):
      raise ValueError(f"hard_dice_per_class: {name} must hold integer class ids; got dtype "
                       f"{a.dtype}.")
  classes = jnp.arange(num_classes)
  pred = pred_ids.reshape(-1, 1) == classes
  true = labels.reshape(-1, 1) == classes
  intersection = jnp.sum(pred & true, axis=0)
  pred_count = jnp.sum(pred, axis=0)
  true_count = jnp.sum(true, axis=0)
  dice = 2.0 * intersection / jnp.maximum(pred_count + true_count, 1).astype(jnp.float32)
  empty_value = jnp.nan if ignore_empty else jnp.where(pred_count == 0, 1.0, 0.0)
  return jnp.where(true_count == 0, empty_value, dice).astype(jnp.float32)

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
  fn = LOSSES.get(name.lower()) if isinstance(name, str) else None
  if fn is None:
    raise ValueError(f"Unknown loss name {name!r}; expected one of {sorted(LOSSES)}.")
  options = {p.name for p in inspect.signature(fn).parameters.values()
             if p.kind is inspect.Parameter.KEYWORD_ONLY}
  unknown = sorted(set(kwargs) - options)
  if unknown:
    raise ValueError(f"Loss {name!r} does not take option(s) {unknown}; it takes "
                     f"{sorted(options)}.")
  kwargs = {k: (np.asarray(v, np.float32) if isinstance(v, (list, tuple)) else v)
            for k, v in kwargs.items()}
  return functools.partial(fn, **kwargs)
