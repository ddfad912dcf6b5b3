"""The Dice family of soft overlap losses (MONAI's DiceLoss, TverskyLoss, GeneralizedDiceLoss;
Jaccard as `dice_loss(jaccard=True)`) and `per_class_dice`, the soft Dice logged by the training
step."""

import jax
import jax.numpy as jnp

from medjax.losses._targets import (ArrayLike, _check_reduction, _class_weights,
                                    _keeps_background, _probabilities, _reduce, _reduce_axes,
                                    _target)

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


def per_class_dice(logits: jax.Array, labels: jax.Array, *, num_classes: int,
                   softmax: bool = True, smooth_nr: float = 1e-5,
                   smooth_dr: float = 1e-5) -> jax.Array:
  r"""Soft (probability) Dice of every class, pooled over the batch and all voxels: the Dice
  the training step logs, differentiable and jit-able.

    Dice_c = (2 sum p_c t_c + smooth_nr) / (sum p_c + sum t_c + smooth_dr)

  with `p = softmax(logits)` (`softmax=False`: `logits` already are probabilities) and `t` the
  one-hot ids or the float target. For the Dice of hard labels (argmax predictions against
  class ids, as evaluation reports it) use `medjax.metrics.dice_per_class`.

  Empty classes differ between the two: here a class absent from both the labels and the
  prediction scores `smooth_nr / smooth_dr` (1 with the defaults), whereas
  `metrics.dice_per_class` gives nan (by default, nnU-Net's rule, and with `ignore_empty=True`)
  or 1 (`ignore_empty=False`, MONAI's).

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
