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

# One module per job: _targets (input checks, targets, probabilities, weights, reductions), dice
# (Dice family and per_class_dice), cross_entropy (CE, BCE), focal, compound (Dice+CE,
# Dice+focal), regions (region_targets), registry (LOSSES, get_loss), deep_supervision (nnU-Net's
# multi-resolution loss).
from medjax.losses.compound import dice_ce_loss, dice_focal_loss
from medjax.losses.cross_entropy import binary_cross_entropy_loss, cross_entropy_loss
from medjax.losses.deep_supervision import (deep_supervision_loss, deep_supervision_weights,
                                            downsample_target)
from medjax.losses.dice import dice_loss, generalized_dice_loss, per_class_dice, tversky_loss
from medjax.losses.focal import focal_loss
from medjax.losses.regions import BRATS_REGIONS, region_targets
from medjax.losses.registry import LOSSES, get_loss, loss_options

__all__ = [
    "BRATS_REGIONS",
    "LOSSES",
    "binary_cross_entropy_loss",
    "cross_entropy_loss",
    "deep_supervision_loss",
    "deep_supervision_weights",
    "dice_ce_loss",
    "dice_focal_loss",
    "dice_loss",
    "downsample_target",
    "focal_loss",
    "generalized_dice_loss",
    "get_loss",
    "loss_options",
    "per_class_dice",
    "region_targets",
    "tversky_loss",
]
