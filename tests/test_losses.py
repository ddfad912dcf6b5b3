"""Tests for medjax.losses: hand-computed values, optax as an independent Dice, torch's and MONAI's
formulas written out in numpy (float64, channels-first where MONAI is), gradients, jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medjax import losses

# One sample, 4 voxels, 2 classes. Class-1 probabilities p1, so class 0 has p0 = 1 - p1.
P1 = np.array([0.9, 0.2, 0.6, 0.1], np.float32)
PROBS = np.stack([1.0 - P1, P1], axis=-1)[None]  # [1, 4, 2]
LABELS = np.array([[1, 0, 1, 0]], np.int32)  # [1, 4]
# Logits whose softmax is PROBS exactly (up to float rounding).
LOGITS = np.log(PROBS)
# By hand (sums over the 4 voxels):
#   class 1: I = 0.9 + 0.6 = 1.5, sum p = 1.8, sum t = 2  -> S = 3.8
#   class 0: I = 0.8 + 0.9 = 1.7, sum p = 2.2, sum t = 2  -> S = 4.2
DICE1 = 2 * 1.5 / 3.8
DICE0 = 2 * 1.7 / 4.2


def _random_case(shape, num_label_classes, *, seed, scale=1.0):
  """Logits `shape` and labels `shape[:-1]` in [0, num_label_classes), from numpy (no jax RNG
  compile, which takes seconds per shape on this CPU)."""
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(scale * rng.normal(size=shape), jnp.float32)
  labels = jnp.asarray(rng.integers(0, num_label_classes, size=shape[:-1]), jnp.int32)
  return logits, labels


def _close(a, b, tol=1e-6):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def test_dice_loss_hand_computed():
  no_smooth = dict(smooth_nr=0.0, smooth_dr=0.0)
  _close(losses.dice_loss(PROBS, LABELS, softmax=False, **no_smooth),
         1 - (DICE0 + DICE1) / 2)
  # The softmax path gives the same from logits.
  _close(losses.dice_loss(LOGITS, LABELS, **no_smooth), 1 - (DICE0 + DICE1) / 2)
  # Smoothing 1: (2 I + 1) / (S + 1).
  _close(losses.dice_loss(PROBS, LABELS, softmax=False, smooth_nr=1.0, smooth_dr=1.0),
         1 - (4.4 / 5.2 + 4.0 / 4.8) / 2)
  # Squared denominator: sum p^2 = 1.62 (class 0), 1.22 (class 1); sum t^2 = sum t = 2.
  _close(losses.dice_loss(PROBS, LABELS, softmax=False, squared_pred=True, **no_smooth),
         1 - (3.4 / 3.62 + 3.0 / 3.22) / 2)
  _close(losses.dice_loss(PROBS, LABELS, softmax=False, include_background=False, **no_smooth),
         1 - DICE1)
  # Weights multiply the per-class losses: mean(1 * (1 - D0), 3 * (1 - D1)).
  _close(losses.dice_loss(PROBS, LABELS, softmax=False, class_weights=(1.0, 3.0), **no_smooth),
         ((1 - DICE0) + 3 * (1 - DICE1)) / 2)
  # Without the background, MONAI's length-(K-1) weights equal the length-K ones; with one
  # channel left, MONAI ignores the weight (it would only scale the loss), and so does medjax.
  a = losses.dice_loss(PROBS, LABELS, softmax=False, include_background=False,
                       class_weights=(5.0, 3.0), **no_smooth)
  b = losses.dice_loss(PROBS, LABELS, softmax=False, include_background=False,
                       class_weights=(3.0,), **no_smooth)
  _close(a, 1 - DICE1)
  _close(b, a)


def test_dice_loss_batch_pooling_and_absent_class():
  # Second sample: all background, uniform probabilities 0.5.
  probs = np.concatenate([PROBS, np.full((1, 4, 2), 0.5, np.float32)])
  labels = np.concatenate([LABELS, np.zeros((1, 4), np.int32)])
  s = 1e-5
  # Per sample: sample 2 class 0: I = 2, S = 2 + 4 = 6; class 1: I = 0, S = 2 + 0 (absent).
  per_sample = [(3.4 + s) / (4.2 + s), (3.0 + s) / (3.8 + s), (4 + s) / (6 + s), s / (2 + s)]
  _close(losses.dice_loss(probs, labels, softmax=False), 1 - np.mean(per_sample), 1e-5)
  # Pooled: class 0: I = 1.7 + 2 = 3.7, S = 4.2 + 6 = 10.2; class 1: I = 1.5, S = 3.8 + 2 = 5.8.
  pooled = [(7.4 + s) / (10.2 + s), (3.0 + s) / (5.8 + s)]
  _close(losses.dice_loss(probs, labels, softmax=False, batch=True), 1 - np.mean(pooled), 1e-5)


@pytest.mark.parametrize("ignore_background", [False, True])
def test_dice_loss_matches_optax(ignore_background):
  # optax: 1 - (I + s) / (I + 0.5 (P - I) + 0.5 (T - I) + s) = 1 - (2I + 2s) / (P + T + 2s),
  # averaged over classes per sample; ours with smooth_nr = smooth_dr = 2s is the same, and
  # the mean over the batch of optax's per-sample values is our mean over (b, c).
  logits, labels = _random_case((2, 4, 4, 4, 3), 3, seed=0, scale=3.0)
  weights = jnp.array([0.5, 1.0, 2.0])
  ref = optax.losses.dice_loss(logits, jax.nn.one_hot(labels, 3), smooth=0.5,
                               class_weights=weights, ignore_background=ignore_background)
  ours = losses.dice_loss(logits, labels, smooth_nr=1.0, smooth_dr=1.0, class_weights=weights,
                          include_background=not ignore_background)
  assert ref.shape == (2,)
  _close(ours, jnp.mean(ref), 1e-5)


def test_tversky_hand_computed_and_optax():
  # alpha = 0.3 (FP), beta = 0.7 (FN), no smoothing:
  #   class 1: TP = 1.5, FP = 0.2 + 0.1 = 0.3, FN = 0.1 + 0.4 = 0.5 -> 1.5 / (1.5 + .09 + .35)
  #   class 0: TP = 1.7, FP = 0.1 + 0.4 = 0.5, FN = 0.2 + 0.1 = 0.3 -> 1.7 / (1.7 + .15 + .21)
  got = losses.tversky_loss(PROBS, LABELS, alpha=0.3, beta=0.7, softmax=False, smooth_nr=0.0,
                            smooth_dr=0.0)
  _close(got, 1 - (1.5 / 1.94 + 1.7 / 2.06) / 2)
  # optax's dice_loss with alpha, beta is the Tversky index with smooth on both sides.
  logits, labels = _random_case((2, 4, 4, 4, 3), 3, seed=1, scale=2.0)
  ref = optax.losses.dice_loss(logits, jax.nn.one_hot(labels, 3), smooth=0.3, alpha=0.3,
                               beta=0.7)
  _close(losses.tversky_loss(logits, labels, alpha=0.3, beta=0.7, smooth_nr=0.3, smooth_dr=0.3),
         jnp.mean(ref), 1e-5)


def test_tversky_half_half_is_dice():
  logits, labels = _random_case((2, 4, 4, 4, 4), 4, seed=2)
  for batch in (False, True):
    _close(losses.tversky_loss(logits, labels, smooth_nr=0.0, smooth_dr=0.0, batch=batch),
           losses.dice_loss(logits, labels, smooth_nr=0.0, smooth_dr=0.0, batch=batch), 1e-5)
    # With smoothing, Tversky(0.5, 0.5, s) = Dice(2 s).
    _close(losses.tversky_loss(logits, labels, smooth_nr=0.5, smooth_dr=0.5, batch=batch),
           losses.dice_loss(logits, labels, smooth_nr=1.0, smooth_dr=1.0, batch=batch), 1e-5)


def test_generalized_dice_hand_computed():
  labels = np.array([[1, 0, 0, 0]], np.int32)
  # T1 = 1 -> w1 = 1; T0 = 3 -> w0 = 1/9.
  # class 1: I = 0.9, S = 1.8 + 1 = 2.8; class 0: I = 0.8 + 0.4 + 0.9 = 2.1, S = 2.2 + 3 = 5.2.
  expected = 1 - 2 * (0.9 + 2.1 / 9) / (2.8 + 5.2 / 9)
  _close(losses.generalized_dice_loss(PROBS, labels, softmax=False, smooth_nr=0.0,
                                      smooth_dr=0.0), expected)
  # 'uniform' weights: 1 - 2 (0.9 + 2.1) / (2.8 + 5.2).
  _close(losses.generalized_dice_loss(PROBS, labels, softmax=False, w_type="uniform",
                                      smooth_nr=0.0, smooth_dr=0.0), 1 - 6.0 / 8.0)
  # An absent class: all background, p = 0.5. w1 = inf -> max finite weight w0 = 1/16.
  # class 0: I = 2, S = 6; class 1: I = 0, S = 2 -> 1 - 2 (2/16) / (8/16) = 0.5.
  half = np.full((1, 4, 2), 0.5, np.float32)
  zeros = np.zeros((1, 4), np.int32)
  _close(losses.generalized_dice_loss(half, zeros, softmax=False, smooth_nr=0.0, smooth_dr=0.0),
         0.5)
  # Both samples together: the mean of the per-sample losses (batch=False).
  both = losses.generalized_dice_loss(np.concatenate([PROBS, half]),
                                      np.concatenate([labels, zeros]), softmax=False,
                                      smooth_nr=0.0, smooth_dr=0.0)
  _close(both, (expected + 0.5) / 2)
  # batch=True pools: T0 = 3 + 4 = 7, T1 = 1; I0 = 2.1 + 2, S0 = 5.2 + 6; I1 = 0.9, S1 = 2.8 + 2.
  pooled = losses.generalized_dice_loss(np.concatenate([PROBS, half]),
                                        np.concatenate([labels, zeros]), softmax=False,
                                        smooth_nr=0.0, smooth_dr=0.0, batch=True)
  _close(pooled, 1 - 2 * (4.1 / 49 + 0.9) / (11.2 / 49 + 4.8))


def test_cross_entropy_hand_computed_and_optax():
  nll = -np.log([0.9, 0.8, 0.6, 0.9])  # -log p of the labelled class at each voxel
  _close(losses.cross_entropy_loss(LOGITS, LABELS), nll.mean(), 1e-5)
  # Weights (1, 3): voxel weights (3, 1, 3, 1), weighted mean as torch.
  _close(losses.cross_entropy_loss(LOGITS, LABELS, class_weights=[1.0, 3.0]),
         (3 * nll[0] + nll[1] + 3 * nll[2] + nll[3]) / 8, 1e-5)
  logits, labels = _random_case((2, 4, 4, 4, 3), 3, seed=3)
  ref = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  _close(losses.cross_entropy_loss(logits, labels), ref, 1e-5)


def test_dice_ce_combines_terms():
  nll = -np.log([0.9, 0.8, 0.6, 0.9])
  got = losses.dice_ce_loss(LOGITS, LABELS, lambda_dice=0.25, lambda_ce=2.0, smooth_nr=0.0,
                            smooth_dr=0.0)
  _close(got, 0.25 * (1 - (DICE0 + DICE1) / 2) + 2.0 * nll.mean(), 1e-5)
  # Without the background the Dice term drops class 0; the CE still covers both classes.
  got = losses.dice_ce_loss(LOGITS, LABELS, include_background=False, smooth_nr=0.0,
                            smooth_dr=0.0)
  _close(got, (1 - DICE1) + nll.mean(), 1e-5)
  with pytest.raises(ValueError, match="lambda_dice"):
    losses.dice_ce_loss(LOGITS, LABELS, lambda_dice=-1.0)


def test_per_class_dice():
  _close(losses.per_class_dice(PROBS, LABELS, num_classes=2, softmax=False, smooth_nr=0.0,
                               smooth_dr=0.0), [DICE0, DICE1])
  _close(losses.per_class_dice(LOGITS, LABELS, num_classes=2, smooth_nr=0.0, smooth_dr=0.0),
         [DICE0, DICE1], 1e-5)
  with pytest.raises(ValueError, match="num_classes=3"):
    losses.per_class_dice(LOGITS, LABELS, num_classes=3)


@pytest.mark.parametrize("name,options", [
    ("dice", {}),
    ("dice", {"squared_pred": True, "batch": True, "include_background": False}),
    ("generalized_dice", {}),
    ("dice_ce", {"class_weights": (1.0, 2.0, 0.5, 1.0)}),
    ("cross_entropy", {}),
    ("tversky", {"alpha": 0.3, "beta": 0.7}),
    ("focal", {"alpha": 0.25}),
    ("dice_focal", {"class_weights": (1.0, 2.0, 0.5, 1.0), "jaccard": True}),
    ("binary_cross_entropy", {"pos_weight": (1.0, 2.0, 3.0, 4.0)}),
    ("dice_ce", {"ignore_index": 1, "label_smoothing": 0.1}),
])
def test_gradients_finite_with_absent_class_and_jit(name, options):
  logits, labels = _random_case((2, 4, 4, 4, 4), 2, seed=4, scale=4.0)
  # Class 3 never occurs; class 2 only in sample 0.
  labels = labels.at[0, 0, 0, :2].set(2)
  loss_fn = losses.get_loss(name, **options)
  value, grad = jax.jit(jax.value_and_grad(loss_fn))(logits, labels)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  assert np.any(np.asarray(grad) != 0)
  _close(value, loss_fn(logits, labels), 1e-5)  # jit == eager


def test_bfloat16_logits_computed_in_float32():
  logits = jnp.asarray(LOGITS, jnp.bfloat16)
  got = losses.dice_loss(logits, LABELS, smooth_nr=0.0, smooth_dr=0.0)
  assert got.dtype == jnp.float32
  _close(got, 1 - (DICE0 + DICE1) / 2, 1e-2)


def test_get_loss_and_errors():
  loss_fn = losses.get_loss("Dice", include_background=False, smooth_nr=0.0, smooth_dr=0.0)
  _close(loss_fn(LOGITS, LABELS), 1 - DICE1, 1e-5)
  with pytest.raises(ValueError, match="Unknown loss name 'hinge'; expected one of "
                     r"\['binary_cross_entropy', 'cross_entropy', 'dice', 'dice_ce', "
                     r"'dice_focal', 'focal', 'generalized_dice', 'tversky'\]"):
    losses.get_loss("hinge")
  with pytest.raises(ValueError, match="alpha"):
    losses.get_loss("dice", alpha=0.3)
  with pytest.raises(ValueError, match="labels must have shape"):
    losses.dice_loss(LOGITS, LABELS[:, :3])
  with pytest.raises(ValueError, match="integer class ids"):
    losses.dice_loss(LOGITS, LABELS.astype(np.float32))
  with pytest.raises(ValueError, match="class_weights must be a vector of length 2"):
    losses.dice_loss(LOGITS, LABELS, class_weights=[1.0, 2.0, 3.0])
  with pytest.raises(ValueError, match="not compatible"):
    losses.dice_loss(LOGITS, LABELS, sigmoid=True)
  with pytest.raises(ValueError, match="w_type"):
    losses.generalized_dice_loss(LOGITS, LABELS, w_type="cubic")


# ---------------------------------------------------------------------------------------------
# Independent references: torch's and MONAI's formulas written out in numpy (float64), on
# channels-first arrays as those libraries hold them. They follow the libraries' own code
# structure (torch: aten/src/ATen/native/LossNLL.cpp and Loss.cpp; MONAI 1.6.1:
# monai/losses/{dice,focal_loss,utils}.py), not medjax's.


def _cf(x):
  """channels-last -> channels-first, float64."""
  return np.moveaxis(np.asarray(x, np.float64), -1, 1)


def _np_log_softmax(x, axis):
  m = x.max(axis=axis, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def _np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _np_onehot(ids, k):
  return np.eye(k)[np.asarray(ids)]


def _torch_cross_entropy(logits, target, weight=None, ignore_index=-100, label_smoothing=0.0,
                         reduction="mean"):
  """torch.nn.functional.cross_entropy: nll_loss on log_softmax, plus the label-smoothing term
  `cross_entropy_loss_label_smoothing` (ids) or `cross_entropy_loss_prob_target` (floats)."""
  x = _cf(logits)
  k = x.shape[1]
  logp = _np_log_softmax(x, 1)
  w = np.ones(k) if weight is None else np.asarray(weight, np.float64)
  wb = w.reshape((1, k) + (1,) * (x.ndim - 2))
  eps = label_smoothing
  target = np.asarray(target)
  if np.issubdtype(target.dtype, np.floating):
    t = _cf(target)
    if eps > 0:
      t = t * (1 - eps) + eps / k
    loss = -(logp * t * wb).sum(1)
    return {"none": loss, "sum": loss.sum(), "mean": loss.sum() / (x.size / k)}[reduction]
  ignore = target == ignore_index
  safe = np.where(ignore, 0, target)
  wy = np.where(ignore, 0.0, w[safe])
  nll = -np.take_along_axis(logp, safe[:, None], axis=1)[:, 0] * wy
  smooth = np.where(ignore, 0.0, -(logp * wb).sum(1))
  if reduction == "none":
    return (1 - eps) * nll + eps / k * smooth
  if reduction == "sum":
    return (1 - eps) * nll.sum() + eps / k * smooth.sum()
  return (1 - eps) * nll.sum() / wy.sum() + eps / k * smooth.sum() / wy.sum()


def _torch_bce_with_logits(logits, target, weight=None, pos_weight=None, reduction="mean"):
  """torch.nn.BCEWithLogitsLoss by its documented formula (channels-last: weight and pos_weight
  broadcast over the last axis, as in torch)."""
  x, y = np.asarray(logits, np.float64), np.asarray(target, np.float64)
  s = _np_sigmoid(x)
  pw = 1.0 if pos_weight is None else np.asarray(pos_weight, np.float64)
  loss = -(pw * y * np.log(s) + (1 - y) * np.log(1 - s))
  if weight is not None:
    loss = loss * np.asarray(weight, np.float64)
  return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


def _monai_dice(probs, target, *, include_background=True, squared_pred=False, jaccard=False,
                batch=False, weight=None, reduction="mean", smooth_nr=1e-5, smooth_dr=1e-5):
  """MONAI DiceLoss after its activation: compute_tp_fp_fn, then (2tp + s) / (2(tp+fp+fn) + s)
  with fp, fn halved unless jaccard. `probs`, `target` channels-last."""
  p, t = _cf(probs), _cf(target)
  if not include_background:
    p, t = p[:, 1:], t[:, 1:]
  axes = tuple(range(2, p.ndim))
  if batch:
    axes = (0,) + axes
  if squared_pred:  # MONAI's ord=2 branch
    pred_o, ground_o = (p ** 2).sum(axes), (t ** 2).sum(axes)
    tp = (pred_o + ground_o - ((p - t) ** 2).sum(axes)) / 2
    fp, fn = pred_o - tp, ground_o - tp
  else:
    tp = (p * t).sum(axes)
    fp, fn = p.sum(axes) - tp, t.sum(axes) - tp
  if not jaccard:
    fp, fn = 0.5 * fp, 0.5 * fn
  f = 1 - (2 * tp + smooth_nr) / (2 * (tp + fp + fn) + smooth_dr)
  if weight is not None:
    f = f * np.asarray(weight, np.float64)
  return {"none": f, "sum": f.sum(), "mean": f.mean()}[reduction]


def _monai_focal(logits, target, *, gamma=2.0, alpha=None, weight=None, use_softmax=False,
                 include_background=True, reduction="mean"):
  """MONAI FocalLoss, with the textbook form -a_t (1 - p_t)^gamma log p_t for the sigmoid
  (binary targets) instead of MONAI's log-sigmoid form."""
  x, t = _cf(logits), _cf(target)
  if not include_background:
    x, t = x[:, 1:], t[:, 1:]
  c = x.shape[1]
  shape = (1, c) + (1,) * (x.ndim - 2)
  if use_softmax:
    logp = _np_log_softmax(x, 1)
    loss = -((1 - np.exp(logp)) ** gamma) * logp * t
    if alpha is not None and np.ndim(alpha) == 0 and include_background:
      loss = loss * np.array([1 - alpha] + [alpha] * (c - 1)).reshape(shape)
    elif alpha is not None and np.ndim(alpha) == 1:
      loss = loss * np.asarray(alpha).reshape(shape)
  else:
    p = _np_sigmoid(x)
    pt = np.where(t == 1, p, 1 - p)
    loss = -((1 - pt) ** gamma) * np.log(pt)
    if alpha is not None and np.ndim(alpha) == 0:
      loss = loss * np.where(t == 1, alpha, 1 - alpha)
    elif alpha is not None:
      loss = loss * np.where(t == 1, np.asarray(alpha).reshape(shape), 1.0)
  if weight is not None:
    loss = loss * np.broadcast_to(np.asarray(weight, np.float64), (c,)).reshape(shape)
  if reduction == "sum":
    return loss.mean(axis=tuple(range(2, x.ndim))).sum()
  if reduction == "mean":
    return loss.mean()
  return np.moveaxis(loss, 1, -1)


def _small_case(seed, k=3, shape=(2, 3, 4), scale=2.0):
  logits, labels = _random_case(shape + (k,), k, seed=seed, scale=scale)
  return np.array(logits), np.array(labels)


# --------------------------------- targets and label checks ----------------------------------


def test_float_one_hot_target_equals_integer_ids():
  logits, labels = _small_case(10)
  onehot = _np_onehot(labels, 3).astype(np.float32)
  for fn, options in [
      (losses.dice_loss, {}), (losses.dice_loss, {"jaccard": True, "squared_pred": True}),
      (losses.dice_loss, {"include_background": False, "class_weights": (1.0, 2.0, 3.0)}),
      (losses.tversky_loss, {"alpha": 0.3, "beta": 0.7}), (losses.generalized_dice_loss, {}),
      (losses.cross_entropy_loss, {"label_smoothing": 0.1}),
      (losses.focal_loss, {"alpha": 0.25}), (losses.focal_loss, {"softmax": False,
                                                                  "sigmoid": True}),
      (losses.binary_cross_entropy_loss, {"pos_weight": 2.0}),
      (losses.dice_ce_loss, {}), (losses.dice_focal_loss, {})]:
    _close(fn(logits, onehot, **options), fn(logits, labels, **options), 1e-5)
  _close(losses.per_class_dice(logits, onehot, num_classes=3),
         losses.per_class_dice(logits, labels, num_classes=3), 1e-5)


def test_soft_target_dice_hand_computed():
  # Target 0.5 / 0.5 at voxel 1, else one-hot: t1 = (1, 0.5, 1, 0), t0 = 1 - t1.
  t1 = np.array([1.0, 0.5, 1.0, 0.0], np.float32)
  target = np.stack([1 - t1, t1], axis=-1)[None]
  # class 1: I = 0.9 + 0.1 + 0.6 = 1.6, S = 1.8 + 2.5 = 4.3;
  # class 0: I = 0.4 + 0.9 = 1.3, S = 2.2 + 1.5 = 3.7.
  _close(losses.dice_loss(PROBS, target, softmax=False, smooth_nr=0.0, smooth_dr=0.0),
         1 - (3.2 / 4.3 + 2.6 / 3.7) / 2)


def test_labels_outside_the_range_raise_when_concrete():
  logits, labels = _small_case(11)
  bad = labels.copy()
  bad[0, 0, 0] = 3
  for fn in (losses.dice_loss, losses.tversky_loss, losses.generalized_dice_loss,
             losses.cross_entropy_loss, losses.focal_loss, losses.binary_cross_entropy_loss,
             losses.dice_ce_loss, losses.dice_focal_loss):
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\); got values \[3\]"):
      fn(logits, bad)
  bad[0, 0, 0] = -1
  with pytest.raises(ValueError, match=r"\[0, 3\) or ignore_index=255; got values \[-1\]"):
    losses.cross_entropy_loss(logits, bad, ignore_index=255)
  bad[0, 0, 0] = 255  # ignore_index itself is allowed
  losses.cross_entropy_loss(logits, bad, ignore_index=255)
  # One channel: ids in [0, 2).
  with pytest.raises(ValueError, match=r"\[0, 2\) \(one channel"):
    losses.binary_cross_entropy_loss(logits[..., :1], np.full(labels.shape, 2, np.int32))


def test_labels_outside_the_range_under_jit():
  logits, labels = _small_case(12)
  bad = labels.copy()
  bad[0, 1, :2] = 7
  bad[1, 2, 3] = -3
  dropped = (bad < 0) | (bad >= 3)
  ref = _torch_cross_entropy(logits, np.where(dropped, -100, bad))
  ce = jax.jit(losses.cross_entropy_loss)
  _close(ce(logits, bad), ref, 1e-5)
  # Dropped with class weights too, so unit weights are no weights.
  weighted = jax.jit(functools.partial(losses.cross_entropy_loss, class_weights=[1.0] * 3))
  _close(weighted(logits, bad), ref, 1e-5)
  _close(jax.jit(functools.partial(losses.cross_entropy_loss, class_weights=[1.0, 2.0, 0.5]))(
      logits, bad), _torch_cross_entropy(logits, np.where(dropped, -100, bad),
                                         weight=[1.0, 2.0, 0.5]), 1e-5)
  # The Dice terms see an all-zero target there.
  zero_rows = np.where(dropped[..., None], 0.0, _np_onehot(np.where(dropped, 0, bad), 3))
  _close(jax.jit(losses.dice_loss)(logits, bad),
         losses.dice_loss(logits, zero_rows.astype(np.float32)), 1e-5)


def test_region_targets_brats():
  labels = np.array([[0, 1, 2, 3, 4]], np.int32)
  got = losses.region_targets(labels, losses.BRATS_REGIONS)
  assert got.shape == (1, 5, 3) and got.dtype == jnp.float32
  _close(got[0], [[0, 0, 0],    # background
                  [1, 1, 0],    # NCR/NET: whole tumour and core
                  [1, 0, 0],    # edema: whole tumour only
                  [1, 1, 1],    # enhancing: all three
                  [0, 0, 0]])   # an id in no region
  with pytest.raises(ValueError, match=r"regions\[1\] must be a non-empty sequence"):
    losses.region_targets(labels, [(1, 2), ()])
  with pytest.raises(ValueError, match="regions must be a non-empty sequence"):
    losses.region_targets(labels, [])
  with pytest.raises(ValueError, match="integer class ids"):
    losses.region_targets(labels.astype(np.float32), [(1,)])


# ------------------------------------- the Dice family ---------------------------------------


def test_jaccard_hand_computed():
  # J_c = 2 I / (2 (S - I)): class 1: 3.0 / 4.6, class 0: 3.4 / 5.0.
  _close(losses.dice_loss(PROBS, LABELS, softmax=False, jaccard=True, smooth_nr=0.0,
                          smooth_dr=0.0), 1 - (3.0 / 4.6 + 3.4 / 5.0) / 2)


@pytest.mark.parametrize("options", [
    {},
    {"jaccard": True},
    {"squared_pred": True, "batch": True},
    {"include_background": False, "weight": (2.0, 0.5), "reduction": "sum"},
    {"jaccard": True, "squared_pred": True, "weight": (1.0, 2.0, 3.0), "reduction": "none"},
    {"batch": True, "include_background": False, "reduction": "none"},
])
def test_dice_matches_monai_formula(options):
  logits, labels = _small_case(13)
  options = dict(options)
  weight = options.pop("weight", None)
  probs = np.exp(_np_log_softmax(np.asarray(logits, np.float64), -1))
  ref = _monai_dice(probs, _np_onehot(labels, 3), weight=weight, **options)
  got = losses.dice_loss(logits, labels, class_weights=weight, **options)
  assert np.shape(got) == np.shape(ref)
  _close(got, ref, 1e-5)
  # A soft target and sigmoid probabilities (MONAI's soft_label=False terms).
  soft = np.random.default_rng(0).uniform(size=logits.shape).astype(np.float32)
  ref = _monai_dice(_np_sigmoid(np.asarray(logits, np.float64)), soft, weight=weight, **options)
  got = losses.dice_loss(logits, soft, softmax=False, sigmoid=True, class_weights=weight,
                         **options)
  _close(got, ref, 1e-5)


def test_tversky_and_generalized_dice_reductions():
  logits, labels = _small_case(14)
  per = losses.tversky_loss(logits, labels, alpha=0.3, beta=0.7, reduction="none")
  assert per.shape == (2, 3)
  _close(losses.tversky_loss(logits, labels, alpha=0.3, beta=0.7, reduction="sum"),
         np.sum(per), 1e-5)
  _close(losses.tversky_loss(logits, labels, alpha=0.3, beta=0.7), np.mean(per), 1e-5)
  assert losses.tversky_loss(logits, labels, batch=True, include_background=False,
                             reduction="none").shape == (2,)
  per = losses.generalized_dice_loss(logits, labels, reduction="none")
  assert per.shape == (2,)
  for b in range(2):  # each sample's loss is the loss of that sample alone
    _close(per[b], losses.generalized_dice_loss(logits[b:b + 1], labels[b:b + 1]), 1e-5)
  _close(losses.generalized_dice_loss(logits, labels, reduction="sum"), np.sum(per), 1e-5)
  assert losses.generalized_dice_loss(logits, labels, batch=True, reduction="none").shape == (1,)
  with pytest.raises(ValueError, match=r"reduction must be one of \['mean', 'sum', 'none'\]"):
    losses.dice_loss(logits, labels, reduction="batchmean")


def test_one_channel_softmax_is_skipped_with_monai_warning():
  # One channel holding probabilities of the foreground; the target is labels == 1.
  probs = P1[None, :, None]
  with pytest.warns(UserWarning, match=r"single channel prediction, `softmax=True` ignored\."):
    got = losses.dice_loss(probs, LABELS, smooth_nr=0.0, smooth_dr=0.0)
  _close(got, 1 - DICE1)  # class 1 alone: 2 * 1.5 / 3.8
  with pytest.warns(UserWarning, match="include_background=False` ignored"):
    got = losses.dice_loss(probs, LABELS, softmax=False, include_background=False,
                           smooth_nr=0.0, smooth_dr=0.0)
  _close(got, 1 - DICE1)
  with pytest.warns(UserWarning, match="single channel prediction"):
    grad = jax.grad(losses.dice_loss)(jnp.asarray(probs), LABELS)
  assert np.all(np.abs(np.asarray(grad)) > 0)  # a softmax over one channel had none


# ------------------------------------- cross-entropies ---------------------------------------


def test_cross_entropy_label_smoothing_hand_computed():
  # K = 2, weights (1, 3), eps = 0.2. Per voxel -log p of class 0 and class 1:
  l0, l1 = -np.log(1 - P1.astype(np.float64)), -np.log(P1.astype(np.float64))
  y = LABELS[0]
  wy = np.where(y == 1, 3.0, 1.0)  # (3, 1, 3, 1): sum 8
  nll = np.where(y == 1, l1, l0)
  smooth = 1.0 * l0 + 3.0 * l1  # sum_c w_c (-log p_c)
  expected = (0.8 * np.sum(wy * nll) + 0.1 * np.sum(smooth)) / 8
  _close(losses.cross_entropy_loss(LOGITS, LABELS, class_weights=[1.0, 3.0],
                                   label_smoothing=0.2), expected, 1e-5)
  # Without weights, the mean over the 4 voxels.
  _close(losses.cross_entropy_loss(LOGITS, LABELS, label_smoothing=0.2),
         np.mean(0.8 * nll + 0.1 * (l0 + l1)), 1e-5)
  # ignore_index drops voxel 1 (label 0): weights (3, 3, 1) -> sum 7.
  ignored = np.array([[1, 9, 1, 0]], np.int32)
  keep = np.array([True, False, True, True])
  expected = (0.8 * np.sum((wy * nll)[keep]) + 0.1 * np.sum(smooth[keep])) / 7
  _close(losses.cross_entropy_loss(LOGITS, ignored, class_weights=[1.0, 3.0], ignore_index=9,
                                   label_smoothing=0.2), expected, 1e-5)


@pytest.mark.parametrize("weight", [None, (1.0, 2.5, 0.5)])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch_formula(weight, label_smoothing, reduction):
  logits, labels = _small_case(15)
  with_ignored = labels.copy()
  with_ignored[0, :2, 1] = 1  # ignore_index=1 is a real class id here
  for target, ignore_index in [(labels, None), (with_ignored, 1), (labels, 0)]:
    ref = _torch_cross_entropy(logits, target, weight, -100 if ignore_index is None
                               else ignore_index, label_smoothing, reduction)
    got = losses.cross_entropy_loss(logits, target, class_weights=weight,
                                    ignore_index=ignore_index, label_smoothing=label_smoothing,
                                    reduction=reduction)
    assert np.shape(got) == np.shape(ref)
    _close(got, ref, 1e-5)
  # Probability targets (soft), torch's rules.
  soft = np.exp(_np_log_softmax(np.random.default_rng(1).normal(size=logits.shape), -1))
  soft = soft.astype(np.float32)
  _close(losses.cross_entropy_loss(logits, soft, class_weights=weight,
                                   label_smoothing=label_smoothing, reduction=reduction),
         _torch_cross_entropy(logits, soft, weight, label_smoothing=label_smoothing,
                              reduction=reduction), 1e-5)


def test_cross_entropy_identities_and_errors():
  logits, labels = _small_case(16)
  onehot = _np_onehot(labels, 3).astype(np.float32)
  # Label smoothing is the cross-entropy against (1 - eps) onehot + eps / K (no weights).
  _close(losses.cross_entropy_loss(logits, labels, label_smoothing=0.3),
         losses.cross_entropy_loss(logits, 0.7 * onehot + 0.1), 1e-5)
  # torch's weighted mean: ids divide by sum w_y, probability targets by the voxel count.
  w = np.array([1.0, 2.5, 0.5])
  ids = losses.cross_entropy_loss(logits, labels, class_weights=w)
  probs = losses.cross_entropy_loss(logits, onehot, class_weights=w)
  _close(probs, ids * w[labels].sum() / labels.size, 1e-5)
  # Every voxel ignored: NaN, as torch.
  assert np.isnan(losses.cross_entropy_loss(logits, np.zeros_like(labels), ignore_index=0))
  with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]; got 1.5"):
    losses.cross_entropy_loss(logits, labels, label_smoothing=1.5)
  with pytest.raises(ValueError, match="ignore_index=0 needs integer class ids"):
    losses.cross_entropy_loss(logits, onehot, ignore_index=0)
  with pytest.raises(ValueError, match="at least 2 classes.*binary_cross_entropy_loss"):
    losses.cross_entropy_loss(logits[..., :1], labels * 0)


def test_binary_cross_entropy_matches_torch_formula():
  logits, labels = _small_case(17)
  onehot = _np_onehot(labels, 3)
  regions = np.asarray(losses.region_targets(labels, [(1, 2), (2,), (0, 2)]))
  for target, given in [(labels, onehot), (regions, regions)]:
    for options in [{}, {"pos_weight": (1.0, 3.0, 0.5)}, {"class_weights": (2.0, 1.0, 0.0)},
                    {"pos_weight": 2.0, "class_weights": 0.5, "reduction": "sum"},
                    {"pos_weight": (1.0, 3.0, 0.5), "reduction": "none"}]:
      torch_options = {"pos_weight": options.get("pos_weight"),
                       "weight": options.get("class_weights"),
                       "reduction": options.get("reduction", "mean")}
      ref = _torch_bce_with_logits(logits, given, **torch_options)
      got = losses.binary_cross_entropy_loss(logits, target, **options)
      assert np.shape(got) == np.shape(ref)
      _close(got, ref, 1e-5)
  # One channel and integer labels: the target is labels == 1.
  binary = (labels == 1).astype(np.int32)
  _close(losses.binary_cross_entropy_loss(logits[..., :1], binary, pos_weight=3.0),
         _torch_bce_with_logits(logits[..., :1], binary[..., None], pos_weight=3.0), 1e-5)
  with pytest.raises(ValueError, match="pos_weight must be a vector of length 3"):
    losses.binary_cross_entropy_loss(logits, labels, pos_weight=(1.0, 2.0))


# ----------------------------------------- focal ---------------------------------------------


@pytest.mark.parametrize("use_softmax", [True, False])
@pytest.mark.parametrize("options", [
    {},
    {"gamma": 0.5, "alpha": 0.25},
    {"gamma": 0.0, "weight": (1.0, 2.0, 0.5), "reduction": "sum"},
    {"include_background": False, "alpha": (0.3, 0.7), "reduction": "none"},
    {"include_background": False, "weight": (2.0, 0.5), "gamma": 3.0},
    {"alpha": (0.2, 0.5, 0.8), "weight": 2.0, "reduction": "sum"},
])
def test_focal_matches_monai_formula(use_softmax, options):
  logits, labels = _small_case(18)
  options = dict(options)
  weight = options.pop("weight", None)
  ref = _monai_focal(logits, _np_onehot(labels, 3), use_softmax=use_softmax, weight=weight,
                     **options)
  got = losses.focal_loss(logits, labels, softmax=use_softmax, sigmoid=not use_softmax,
                          class_weights=weight, **options)
  assert np.shape(got) == np.shape(ref)
  _close(got, ref, 1e-5)


def test_focal_closed_forms_and_warnings():
  logits, labels = _small_case(19)
  # gamma = 0: the softmax focal loss averages -t log p over (voxel, class) elements, so it is
  # the cross-entropy over K; the sigmoid one is the BCE.
  _close(3 * losses.focal_loss(logits, labels, gamma=0.0),
         losses.cross_entropy_loss(logits, labels), 1e-5)
  _close(losses.focal_loss(logits, labels, gamma=0.0, softmax=False, sigmoid=True),
         losses.binary_cross_entropy_loss(logits, labels), 1e-5)
  # Hand case: one voxel, p = softmax((log 0.7, log 0.3)) = (0.7, 0.3), label 1, gamma 2,
  # alpha 0.25: -(0.25) (0.7)^2 log 0.3 over 2 elements.
  one = np.log(np.array([[[0.7, 0.3]]], np.float32))
  _close(losses.focal_loss(one, np.array([[1]]), alpha=0.25),
         -0.25 * 0.49 * np.log(0.3) / 2, 1e-6)
  with pytest.warns(UserWarning, match="scalar `alpha` ignored when using softmax"):
    a = losses.focal_loss(logits, labels, alpha=0.25, include_background=False)
  _close(a, losses.focal_loss(logits, labels, include_background=False), 1e-6)
  with pytest.warns(UserWarning, match="softmax over one channel"):
    zero = losses.focal_loss(logits[..., :2], np.minimum(labels, 1), include_background=False)
  _close(zero, 0.0)
  with pytest.raises(ValueError, match="exactly one of softmax.*and sigmoid"):
    losses.focal_loss(logits, labels, sigmoid=True)
  with pytest.raises(ValueError, match=r"alpha must be one number or one per kept class "
                                       r"\(length 2\)"):
    losses.focal_loss(logits, labels, alpha=(0.1, 0.2, 0.7), include_background=False)


# ------------------------------------ combined losses ----------------------------------------


def test_dice_ce_ignore_index_masks_both_terms():
  logits, labels = _small_case(20)
  labels[0, 0, :3] = 255
  labels[1, 2, 1] = 255
  keep = (labels != 255)[..., None]
  probs = np.exp(_np_log_softmax(np.asarray(logits, np.float64), -1))
  target = _np_onehot(np.where(labels == 255, 0, labels), 3)
  w = (1.0, 2.0, 0.5)
  dice = _monai_dice(probs * keep, target * keep, weight=w[1:], include_background=False)
  ce = _torch_cross_entropy(logits, labels, weight=w, ignore_index=255, label_smoothing=0.1)
  _close(losses.dice_ce_loss(logits, labels, ignore_index=255, class_weights=w,
                             label_smoothing=0.1, include_background=False, lambda_ce=0.5),
         dice + 0.5 * ce, 1e-5)
  # All voxels ignored: the CE term is 0 (nnU-Net), not NaN; the Dice term sees empty sets.
  everything = np.full_like(labels, 255)
  got = losses.dice_ce_loss(logits, everything, ignore_index=255, smooth_nr=1.0, smooth_dr=1.0)
  _close(got, 0.0)
  value, grad = jax.value_and_grad(losses.dice_ce_loss)(
      jnp.asarray(logits), everything, ignore_index=255)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_dice_ce_sigmoid_and_one_channel_use_bce():
  logits, labels = _small_case(21)
  regions = losses.region_targets(labels, [(1, 2), (2,), (0,)])
  w = (1.0, 3.0, 0.5)
  expected = (0.5 * losses.dice_loss(logits, regions, softmax=False, sigmoid=True,
                                     class_weights=w)
              + 2.0 * _torch_bce_with_logits(logits, regions, pos_weight=w))
  _close(losses.dice_ce_loss(logits, regions, softmax=False, sigmoid=True, class_weights=w,
                             lambda_dice=0.5, lambda_ce=2.0), expected, 1e-5)
  # sum reduction: each term summed.
  expected = (losses.dice_loss(logits, regions, softmax=False, sigmoid=True, reduction="sum")
              + _torch_bce_with_logits(logits, regions, reduction="sum"))
  _close(losses.dice_ce_loss(logits, regions, softmax=False, sigmoid=True, reduction="sum"),
         expected, 1e-4)
  # ignore_index with the BCE: the mean over the kept voxels' elements.
  ignored = labels.copy()
  ignored[0, 0] = 9
  keep = ignored != 9
  probs = _np_sigmoid(np.asarray(logits, np.float64)) * keep[..., None]
  dice = _monai_dice(probs, _np_onehot(np.where(keep, ignored, 0), 3) * keep[..., None])
  _close(losses.dice_ce_loss(logits, ignored, softmax=False, sigmoid=True, ignore_index=9),
         dice + _torch_bce_with_logits(logits[keep], _np_onehot(ignored[keep], 3)), 1e-5)
  # One channel: softmax skipped with MONAI's warning; the CE term is the BCE (MONAI).
  binary = (labels == 1).astype(np.int32)
  one = logits[..., :1]
  with pytest.warns(UserWarning, match="single channel prediction"):
    got = losses.dice_ce_loss(one, binary)
  ref = (_monai_dice(np.asarray(one, np.float64), binary[..., None].astype(np.float64))
         + _torch_bce_with_logits(one, binary[..., None]))
  _close(got, ref, 1e-5)
  with pytest.raises(ValueError, match="label_smoothing=0.1 applies to the softmax"):
    losses.dice_ce_loss(logits, regions, softmax=False, sigmoid=True, label_smoothing=0.1)
  with pytest.raises(ValueError, match=r"reduction must be one of \['mean', 'sum'\]"):
    losses.dice_ce_loss(logits, labels, reduction="none")


def test_dice_ce_jaccard_label_smoothing_sum():
  logits, labels = _small_case(22)
  probs = np.exp(_np_log_softmax(np.asarray(logits, np.float64), -1))
  expected = (_monai_dice(probs, _np_onehot(labels, 3), jaccard=True, reduction="sum")
              + _torch_cross_entropy(logits, labels, label_smoothing=0.2, reduction="sum"))
  _close(losses.dice_ce_loss(logits, labels, jaccard=True, label_smoothing=0.2,
                             reduction="sum"), expected, 1e-4)


def test_dice_focal_is_monai_dice_plus_sigmoid_focal():
  logits, labels = _small_case(23)
  onehot = _np_onehot(labels, 3)
  probs = np.exp(_np_log_softmax(np.asarray(logits, np.float64), -1))
  w = (2.0, 0.5)
  for reduction in ("mean", "sum"):
    expected = (0.7 * _monai_dice(probs, onehot, include_background=False, weight=w,
                                  reduction=reduction)
                + 1.5 * _monai_focal(logits, onehot, gamma=1.5, alpha=0.3, weight=w,
                                     include_background=False, reduction=reduction))
    got = losses.dice_focal_loss(logits, labels, lambda_dice=0.7, lambda_focal=1.5, gamma=1.5,
                                 alpha=0.3, class_weights=w, include_background=False,
                                 reduction=reduction)
    _close(got, expected, 1e-5)
  # focal_softmax: the softmax focal term instead.
  expected = (_monai_dice(probs, onehot, jaccard=True)
              + _monai_focal(logits, onehot, use_softmax=True, alpha=0.3))
  _close(losses.dice_focal_loss(logits, labels, jaccard=True, alpha=0.3, focal_softmax=True),
         expected, 1e-5)
  with pytest.raises(ValueError, match="lambda_dice and lambda_focal must be >= 0"):
    losses.dice_focal_loss(logits, labels, lambda_focal=-1.0)


def test_registry_new_losses():
  logits, labels = _small_case(24)
  fn = losses.get_loss("focal", alpha=[0.2, 0.3, 0.5], softmax=False, sigmoid=True)
  _close(fn(logits, labels), _monai_focal(logits, _np_onehot(labels, 3), alpha=[0.2, 0.3, 0.5]),
         1e-5)
  fn = losses.get_loss("binary_cross_entropy", pos_weight=[1.0, 2.0, 3.0])
  _close(fn(logits, labels),
         _torch_bce_with_logits(logits, _np_onehot(labels, 3), pos_weight=[1.0, 2.0, 3.0]), 1e-5)
  fn = losses.get_loss("Dice_Focal", gamma=0.0)
  _close(fn(logits, labels), losses.dice_loss(logits, labels)
         + losses.binary_cross_entropy_loss(logits, labels), 1e-5)


def test_against_live_torch():
  torch = pytest.importorskip("torch")
  logits, labels = _small_case(25)
  labels[0, 1, 2] = 7
  x = torch.from_numpy(np.moveaxis(logits, -1, 1).astype(np.float64))
  y = torch.from_numpy(labels.astype(np.int64))
  w = torch.tensor([1.0, 2.5, 0.5], dtype=torch.float64)
  for reduction in ("mean", "sum", "none"):
    ref = torch.nn.CrossEntropyLoss(weight=w, ignore_index=7, label_smoothing=0.2,
                                    reduction=reduction)(x, y).numpy()
    _close(losses.cross_entropy_loss(logits, labels, class_weights=w.numpy(), ignore_index=7,
                                     label_smoothing=0.2, reduction=reduction), ref, 1e-5)
  soft = np.exp(_np_log_softmax(np.random.default_rng(2).normal(size=logits.shape), -1))
  ref = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=0.2)(
      x, torch.from_numpy(np.moveaxis(soft, -1, 1))).numpy()
  _close(losses.cross_entropy_loss(logits, soft.astype(np.float32), class_weights=w.numpy(),
                                   label_smoothing=0.2), ref, 1e-5)
  target = _np_onehot(np.minimum(labels, 2), 3)
  ref = torch.nn.BCEWithLogitsLoss(weight=w, pos_weight=torch.tensor([3.0, 1.0, 0.5],
                                                                       dtype=torch.float64))(
      torch.from_numpy(logits.astype(np.float64)), torch.from_numpy(target)).numpy()
  _close(losses.binary_cross_entropy_loss(logits, target.astype(np.float32),
                                          class_weights=w.numpy(), pos_weight=[3.0, 1.0, 0.5]),
         ref, 1e-5)


def _nnunet_dc_and_ce(logits, labels, batch_dice):
  """nnU-Net v2's DC_and_CE_loss (MemoryEfficientSoftDiceLoss(batch_dice, do_bg=False,
  smooth=1e-5) + CE, weights 1:1), written out in numpy, channels-last: the Dice term is -Dice."""
  logits = np.asarray(logits, np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  onehot = np.eye(logits.shape[-1])[labels]
  x, y = probs[..., 1:], onehot[..., 1:]
  axes = tuple(range(0 if batch_dice else 1, logits.ndim - 1))
  intersect, sum_pred, sum_gt = (x * y).sum(axes), x.sum(axes), y.sum(axes)
  dc = (2 * intersect + 1e-5) / np.maximum(sum_gt + sum_pred + 1e-5, 1e-8)
  ce = -np.mean(np.log(np.take_along_axis(probs, labels[..., None], -1)))
  return ce - dc.mean()


@pytest.mark.parametrize("batch_dice", [True, False])
def test_dice_ce_is_nnunets_dc_and_ce_plus_one(batch_dice):
  # nnU-Net's Dice term is -Dice, medjax's (MONAI's) 1 - Dice: the same loss up to the constant
  # 1, so the same gradients.
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 4, 5, 3, 4)).astype(np.float32)
  labels = rng.integers(0, 4, size=(2, 4, 5, 3))
  labels[1] = np.where(labels[1] == 3, 0, labels[1])  # a class absent from one sample
  ours = losses.dice_ce_loss(jnp.asarray(logits), jnp.asarray(labels), include_background=False,
                             batch=batch_dice)
  np.testing.assert_allclose(float(ours), _nnunet_dc_and_ce(logits, labels, batch_dice) + 1.0,
                             rtol=1e-5)
