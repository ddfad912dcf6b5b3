"""Segmentation losses and per-class Dice scores, as plain `jnp` functions.

Conventions (channels-last, as everywhere in medjax):
* `logits` `[B, ..., K]`: one score per class K at every voxel (`[B, D, H, W, K]` for volumes).
* `labels` `[B, ...]`: integer class ids in `[0, K)`, the shape of `logits` without its last axis.
  Ids outside that range one-hot to all zeros (they cannot be checked under `jit`).
* Every loss returns a float32 scalar and is computed in float32 whatever the logits' dtype.

Option names follow MONAI (`include_background`, `squared_pred`, `smooth_nr`, `smooth_dr`, `batch`),
so a MONAI user can read a medjax config. `get_loss(name, **options)` builds a
`loss(logits, labels) -> scalar` from a config.

`class_weights` (Dice, cross-entropy, Dice+CE) has one weight per class id (length K). With
`include_background=False` a Dice loss also takes MONAI's length-(K-1) form, without the
background weight.
"""

import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = Any


def _check_inputs(logits: ArrayLike, labels: ArrayLike,
                  fn_name: str) -> tuple[jax.Array, jax.Array]:
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  if logits.ndim < 2:
    raise ValueError(f"{fn_name}: logits must be [B, ..., K]; got shape {logits.shape}.")
  if tuple(labels.shape) != tuple(logits.shape[:-1]):
    raise ValueError(f"{fn_name}: labels must have shape logits.shape[:-1] = "
                     f"{tuple(logits.shape[:-1])} (integer class ids); got labels shape "
                     f"{tuple(labels.shape)} for logits shape {tuple(logits.shape)}.")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"{fn_name}: labels must hold integer class ids; got dtype {labels.dtype}.")
  return logits, labels


def _probabilities(logits: jax.Array, *, softmax: bool, sigmoid: bool,
                   fn_name: str) -> jax.Array:
  if softmax and sigmoid:
    raise ValueError(f"{fn_name}: softmax=True and sigmoid=True are not compatible.")
  x = jnp.asarray(logits, jnp.float32)
  if softmax:
    return jax.nn.softmax(x, axis=-1)
  if sigmoid:
    return jax.nn.sigmoid(x)
  return x


def _class_weights(class_weights: ArrayLike | None, num_classes: int, include_background: bool,
                   fn_name: str) -> jax.Array | None:
  """Weights for the classes a loss keeps: `[K]`, or `[K - 1]` without the background."""
  if class_weights is None:
    return None
  w = jnp.asarray(class_weights, jnp.float32)
  kept = num_classes if include_background else num_classes - 1
  if w.ndim != 1 or w.shape[0] not in (num_classes, kept):
    expected = (f"{num_classes}" if include_background
                else f"{num_classes} (one per class id) or {kept} (without the background)")
    raise ValueError(f"{fn_name}: class_weights must be a vector of length {expected}; got shape "
                     f"{tuple(w.shape)}.")
  if w.shape[0] == num_classes and not include_background:
    w = w[1:]
  return w


def _kept_classes(probs: jax.Array, onehot: jax.Array, include_background: bool,
                  fn_name: str) -> tuple[jax.Array, jax.Array]:
  if include_background:
    return probs, onehot
  if probs.shape[-1] < 2:
    raise ValueError(f"{fn_name}: include_background=False needs at least 2 classes; logits have "
                     f"{probs.shape[-1]}.")
  return probs[..., 1:], onehot[..., 1:]


def _reduce_axes(ndim: int, batch: bool) -> tuple[int, ...]:
  """Axes summed over: the spatial ones, plus the batch axis when `batch`."""
  return tuple(range(0 if batch else 1, ndim - 1))


def dice_loss(logits: jax.Array, labels: jax.Array, *, include_background: bool = True,
              softmax: bool = True, sigmoid: bool = False, squared_pred: bool = False,
              smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
              class_weights: ArrayLike | None = None, batch: bool = False) -> jax.Array:
  r"""Multi-class soft Dice loss (Milletari et al. 2016), MONAI's `DiceLoss`.

  With probabilities `p = softmax(logits)` `[B, ..., K]` and one-hot labels `t`, for each sample b
  and class c (sums over the spatial axes; with `batch=True` also over the batch, so there is one
  value per class, as MedicalZoo pools them):

    I_bc = sum p t,   S_bc = sum p + sum t   (squared_pred: sum p^2 + sum t^2)
    Dice_bc = (2 I_bc + smooth_nr) / (S_bc + smooth_dr)
    loss = mean_{b, c} w_c (1 - Dice_bc)

  with `w_c = 1` without `class_weights`. (Weights multiply the per-class loss, as in MONAI and
  `optax.losses.dice_loss`, so a perfect prediction has loss ~0 whatever the weights.)

  Args:
    logits: `[B, ..., K]` class scores (probabilities when `softmax=sigmoid=False`).
    labels: `[B, ...]` integer class ids.
    include_background: if False, class 0 is left out of the mean.
    softmax: apply a softmax over the class axis (the default).
    sigmoid: apply a per-channel sigmoid instead (MedicalZoo's default); exclusive with softmax.
    squared_pred: use squared terms in the denominator (V-Net).
    smooth_nr: added to the numerator; keeps the gradient alive for an absent class.
    smooth_dr: added to the denominator; avoids 0/0.
    class_weights: optional per-class weights (see the module docstring for lengths).
    batch: pool the sums over the batch before the ratio.

  Returns:
    The scalar loss (float32).
  """
  logits, labels = _check_inputs(logits, labels, "dice_loss")
  num_classes = logits.shape[-1]
  probs = _probabilities(logits, softmax=softmax, sigmoid=sigmoid, fn_name="dice_loss")
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  w = _class_weights(class_weights, num_classes, include_background, "dice_loss")
  probs, onehot = _kept_classes(probs, onehot, include_background, "dice_loss")
  axes = _reduce_axes(probs.ndim, batch)
  intersection = jnp.sum(probs * onehot, axis=axes)
  if squared_pred:
    denominator = jnp.sum(probs * probs, axis=axes) + jnp.sum(onehot * onehot, axis=axes)
  else:
    denominator = jnp.sum(probs, axis=axes) + jnp.sum(onehot, axis=axes)
  loss = 1.0 - (2.0 * intersection + smooth_nr) / (denominator + smooth_dr)
  if w is not None:
    loss = loss * w
  return jnp.mean(loss)


def tversky_loss(logits: jax.Array, labels: jax.Array, *, alpha: float = 0.5, beta: float = 0.5,
                 include_background: bool = True, softmax: bool = True, sigmoid: bool = False,
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                 batch: bool = False) -> jax.Array:
  r"""Tversky loss (Salehi et al. 2017), MONAI's `TverskyLoss`.

  With `p`, `t` as in `dice_loss` and sums over the spatial axes (and the batch when `batch`):

    TP_bc = sum p t,   FP_bc = sum p (1 - t),   FN_bc = sum (1 - p) t
    T_bc = (TP + smooth_nr) / (TP + alpha FP + beta FN + smooth_dr)
    loss = mean_{b, c} (1 - T_bc)

  `alpha` weighs false positives, `beta` false negatives. With `alpha = beta = 0.5` the ratio is
  `(2 TP + 2 smooth_nr) / (sum p + sum t + 2 smooth_dr)`: the Dice loss with doubled smoothing.

  Returns:
    The scalar loss (float32).
  """
  logits, labels = _check_inputs(logits, labels, "tversky_loss")
  num_classes = logits.shape[-1]
  probs = _probabilities(logits, softmax=softmax, sigmoid=sigmoid, fn_name="tversky_loss")
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  probs, onehot = _kept_classes(probs, onehot, include_background, "tversky_loss")
  axes = _reduce_axes(probs.ndim, batch)
  tp = jnp.sum(probs * onehot, axis=axes)
  fp = jnp.sum(probs * (1.0 - onehot), axis=axes)
  fn = jnp.sum((1.0 - probs) * onehot, axis=axes)
  score = (tp + smooth_nr) / (tp + alpha * fp + beta * fn + smooth_dr)
  return jnp.mean(1.0 - score)


def generalized_dice_loss(logits: jax.Array, labels: jax.Array, *,
                          include_background: bool = True, softmax: bool = True,
                          sigmoid: bool = False, w_type: str = "square",
                          smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                          batch: bool = False) -> jax.Array:
  r"""Generalised Dice loss (Sudre et al. 2017), MONAI's `GeneralizedDiceLoss`.

  With `p`, `t` as in `dice_loss`, per sample b (one pooled term with `batch=True`):

    T_bc = sum t,   I_bc = sum p t,   S_bc = sum p + sum t
    w_bc = 1 / T_bc^2  ('square'),  1 / T_bc  ('simple'),  1  ('uniform')
    loss = mean_b [1 - (2 sum_c w_bc I_bc + smooth_nr) / (sum_c w_bc S_bc + smooth_dr)]

  A class absent from the labels has an infinite weight; as in MONAI it is replaced by the
  largest finite weight of the sample (of the whole batch with `batch=True`), or 0 if every
  class is absent. The weights depend on the labels only, so they carry no gradient.

  Returns:
    The scalar loss (float32).
  """
  logits, labels = _check_inputs(logits, labels, "generalized_dice_loss")
  if w_type not in ("square", "simple", "uniform"):
    raise ValueError(f"generalized_dice_loss: w_type must be 'square', 'simple' or 'uniform'; "
                     f"got {w_type!r}.")
  num_classes = logits.shape[-1]
  probs = _probabilities(logits, softmax=softmax, sigmoid=sigmoid,
                         fn_name="generalized_dice_loss")
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  probs, onehot = _kept_classes(probs, onehot, include_background, "generalized_dice_loss")
  axes = _reduce_axes(probs.ndim, batch)
  intersection = jnp.sum(probs * onehot, axis=axes)  # [B, K'] or [K']
  target_sum = jnp.sum(onehot, axis=axes)
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
  return jnp.mean(1.0 - numerator / (jnp.sum(w * denominator, axis=-1) + smooth_dr))


def cross_entropy_loss(logits: jax.Array, labels: jax.Array, *,
                       class_weights: ArrayLike | None = None) -> jax.Array:
  r"""Softmax cross-entropy, torch's `nn.CrossEntropyLoss(weight=class_weights)`.

  With `log p = log_softmax(logits)` and voxels i:

    loss = sum_i w_{y_i} (-log p_{i, y_i}) / sum_i w_{y_i}

  (the weighted mean; the plain mean when `class_weights` is None).

  Returns:
    The scalar loss (float32).
  """
  logits, labels = _check_inputs(logits, labels, "cross_entropy_loss")
  num_classes = logits.shape[-1]
  log_p = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  nll = -jnp.sum(onehot * log_p, axis=-1)
  w = _class_weights(class_weights, num_classes, True, "cross_entropy_loss")
  if w is None:
    return jnp.mean(nll)
  voxel_w = onehot @ w
  return jnp.sum(voxel_w * nll) / jnp.sum(voxel_w)


def dice_ce_loss(logits: jax.Array, labels: jax.Array, *, lambda_dice: float = 1.0,
                 lambda_ce: float = 1.0, include_background: bool = True,
                 squared_pred: bool = False, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                 class_weights: ArrayLike | None = None, batch: bool = False) -> jax.Array:
  r"""Soft Dice plus cross-entropy, MONAI's `DiceCELoss`:

    loss = lambda_dice * dice_loss(...) + lambda_ce * cross_entropy_loss(...)

  Softmax probabilities. `include_background`, `squared_pred`, the smoothing and `batch` are
  the Dice term's; `class_weights` (length K) weigh both terms, and the cross-entropy always
  covers every class.

  Returns:
    The scalar loss (float32).
  """
  if lambda_dice < 0 or lambda_ce < 0:
    raise ValueError(f"dice_ce_loss: lambda_dice and lambda_ce must be >= 0; got "
                     f"{lambda_dice} and {lambda_ce}.")
  dice = dice_loss(logits, labels, include_background=include_background,
                   squared_pred=squared_pred, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                   class_weights=class_weights, batch=batch)
  ce = cross_entropy_loss(logits, labels, class_weights=class_weights)
  return lambda_dice * dice + lambda_ce * ce


def per_class_dice(logits: jax.Array, labels: jax.Array, *, num_classes: int,
                   softmax: bool = True, smooth_nr: float = 1e-5,
                   smooth_dr: float = 1e-5) -> jax.Array:
  r"""Soft Dice of every class, pooled over the batch and all voxels, for logging.

    Dice_c = (2 sum p_c t_c + smooth_nr) / (sum p_c + sum t_c + smooth_dr)

  with `p = softmax(logits)` (`softmax=False`: `logits` already are probabilities).

  Args:
    logits: `[B, ..., num_classes]`.
    labels: `[B, ...]` integer class ids.
    num_classes: K, which must be the last axis of `logits`.

  Returns:
    `[num_classes]` float32; a class absent from both labels and prediction gives
    `smooth_nr / smooth_dr` (1 by default).
  """
  logits, labels = _check_inputs(logits, labels, "per_class_dice")
  if logits.shape[-1] != num_classes:
    raise ValueError(f"per_class_dice: num_classes={num_classes} but logits have "
                     f"{logits.shape[-1]} classes (shape {tuple(logits.shape)}).")
  probs = _probabilities(logits, softmax=softmax, sigmoid=False, fn_name="per_class_dice")
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  axes = tuple(range(probs.ndim - 1))
  intersection = jnp.sum(probs * onehot, axis=axes)
  denominator = jnp.sum(probs, axis=axes) + jnp.sum(onehot, axis=axes)
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
    "dice": dice_loss,
    "generalized_dice": generalized_dice_loss,
    "dice_ce": dice_ce_loss,
    "cross_entropy": cross_entropy_loss,
    "tversky": tversky_loss,
}


def get_loss(name: str, **kwargs: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`loss(logits, labels) -> scalar` for the loss registered as `name`, options bound.

  Args:
    name: one of `LOSSES` (`dice`, `generalized_dice`, `dice_ce`, `cross_entropy`, `tversky`).
    **kwargs: the loss's keyword options (e.g. `include_background=False`); sequences such as
      `class_weights` from a config are turned into arrays.

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
