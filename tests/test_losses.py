"""Tests for medjax.losses: hand-computed values, optax as an independent Dice, gradients, jit."""

import math

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
  # Without the background, MONAI's length-(K-1) weights equal the length-K ones.
  a = losses.dice_loss(PROBS, LABELS, softmax=False, include_background=False,
                       class_weights=(5.0, 3.0), **no_smooth)
  b = losses.dice_loss(PROBS, LABELS, softmax=False, include_background=False,
                       class_weights=(3.0,), **no_smooth)
  _close(a, 3 * (1 - DICE1))
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


def test_hard_dice_per_class():
  pred = np.array([0, 1, 1, 2, 2, 0])
  true = np.array([0, 1, 2, 2, 0, 0])
  # class 0: P = {0, 5}, T = {0, 4, 5}, overlap 2 -> 4/5; class 1: P = {1, 2}, T = {1} -> 2/3;
  # class 2: P = {3, 4}, T = {2, 3} -> 2/4; class 3 absent from both.
  got = np.asarray(losses.hard_dice_per_class(pred, true, 4))
  _close(got[:3], [0.8, 2 / 3, 0.5])
  assert math.isnan(got[3])
  _close(losses.hard_dice_per_class(pred, true, 4, ignore_empty=False), [0.8, 2 / 3, 0.5, 1.0])
  # Class 2 predicted but absent from the labels: NaN, or 0 with ignore_empty=False.
  got = np.asarray(losses.hard_dice_per_class(np.array([2, 1]), np.array([0, 1]), 3))
  _close(got[:2], [0.0, 1.0])
  assert math.isnan(got[2])
  _close(losses.hard_dice_per_class(np.array([2, 1]), np.array([0, 1]), 3, ignore_empty=False),
         [0.0, 1.0, 0.0])


@pytest.mark.parametrize("name,options", [
    ("dice", {}),
    ("dice", {"squared_pred": True, "batch": True, "include_background": False}),
    ("generalized_dice", {}),
    ("dice_ce", {"class_weights": (1.0, 2.0, 0.5, 1.0)}),
    ("cross_entropy", {}),
    ("tversky", {"alpha": 0.3, "beta": 0.7}),
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
  with pytest.raises(ValueError, match="cross_entropy.*dice.*dice_ce.*generalized_dice"):
    losses.get_loss("focal")
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
