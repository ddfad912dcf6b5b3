"""Sums of a Dice term and a voxel-wise term: MONAI's DiceCELoss and DiceFocalLoss."""

import jax
import jax.numpy as jnp

from medjax.losses._targets import ArrayLike, _check_reduction, _reduce
from medjax.losses.cross_entropy import (_bce_elements, _check_label_smoothing,
                                         _cross_entropy_terms)
from medjax.losses.dice import _dice_per_class
from medjax.losses.focal import _focal_elements, _focal_reduce

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
