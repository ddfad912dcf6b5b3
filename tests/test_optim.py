"""The optimiser chain against the PyTorch update rules, written out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import optim
from medjax.configs import default


def _config(**overrides):
  config = default.get_config()
  config.update(dict(optimizer="sgd", learning_rate=0.1, momentum=0.5, weight_decay=0.01,
                     lr_schedule="constant", num_train_steps=10, warmup_steps=0))
  config.update(overrides)
  return config


def _run(config, params, grads_seq):
  tx = optim.create_optimizer(config)
  opt_state = tx.init(params)
  for g in grads_seq:
    updates, opt_state = tx.update(g, opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
  return params


GRADS = [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 3.0])]


def test_sgd_momentum_weight_decay_matches_torch_rule():
  # torch.optim.SGD: g' = g + wd p; b = mu b + g'; p -= lr b.
  p, b = np.array([1.0, 2.0]), np.zeros(2)
  for g in GRADS:
    g2 = g + 0.01 * p
    b = 0.5 * b + g2
    p = p - 0.1 * b
  out = _run(_config(), {"w": jnp.array([1.0, 2.0])}, [{"w": jnp.asarray(g)} for g in GRADS])
  np.testing.assert_allclose(out["w"], p, rtol=1e-6)


def test_adam_matches_torch_rule():
  p, m, v = np.array([1.0, 2.0]), np.zeros(2), np.zeros(2)
  for t, g in enumerate(GRADS, start=1):
    g2 = g + 0.01 * p
    m = 0.9 * m + 0.1 * g2
    v = 0.999 * v + 0.001 * g2**2
    p = p - 0.1 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
  out = _run(_config(optimizer="adam"), {"w": jnp.array([1.0, 2.0])},
             [{"w": jnp.asarray(g)} for g in GRADS])
  np.testing.assert_allclose(out["w"], p, rtol=1e-5)


def test_rmsprop_matches_torch_rule():
  # torch.optim.RMSprop(alpha=0.99, eps=1e-8, momentum=0.5, weight_decay=0.01).
  p, v, b = np.array([1.0, 2.0]), np.zeros(2), np.zeros(2)
  for g in GRADS:
    g2 = g + 0.01 * p
    v = 0.99 * v + 0.01 * g2**2
    b = 0.5 * b + g2 / (np.sqrt(v) + 1e-8)
    p = p - 0.1 * b
  out = _run(_config(optimizer="rmsprop"), {"w": jnp.array([1.0, 2.0])},
             [{"w": jnp.asarray(g)} for g in GRADS])
  np.testing.assert_allclose(out["w"], p, rtol=1e-5)


def test_kernel_mask_decays_only_kernels():
  params = {"conv": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
  zero = jax.tree.map(jnp.zeros_like, params)
  out = _run(_config(momentum=0.0, weight_decay=0.5, weight_decay_mask="kernels"), params, [zero])
  np.testing.assert_allclose(out["conv"]["kernel"], 1 - 0.1 * 0.5)
  np.testing.assert_allclose(out["conv"]["bias"], 1.0)


def test_schedules():
  warm = optim.create_learning_rate_schedule(
      _config(lr_schedule="warmup_cosine", warmup_steps=4, num_train_steps=10))
  np.testing.assert_allclose([warm(0), warm(2), warm(4), warm(10)], [0.0, 0.05, 0.1, 0.0],
                             atol=1e-7)
  cos = optim.create_learning_rate_schedule(_config(lr_schedule="cosine", num_train_steps=10))
  np.testing.assert_allclose(cos(5), 0.05, rtol=1e-6)


@pytest.mark.parametrize("key,value", [("optimizer", "lbfgs"), ("lr_schedule", "exponential"),
                                       ("weight_decay_mask", "biases")])
def test_unknown_names_raise(key, value):
  config = _config(**{key: value})
  with pytest.raises(ValueError, match=key):
    optim.create_optimizer(config)


def test_sgd_nesterov_matches_torch_rule_by_hand():
  # torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True), from its docs:
  #   g' = g + wd p;  b = g' (first step), else mu b + g';  p -= lr (g' + mu b).
  # Step 1 (p = 1, g = 0.5): g' = 0.51, b = 0.51, p = 1 - 0.1 (0.51 + 0.459) = 0.9031.
  # Step 2 (g = -1): g' = -1 + 0.009031 = -0.990969, b = 0.459 - 0.990969 = -0.531969,
  #   p = 0.9031 - 0.1 (-0.990969 - 0.4787721) = 1.05007411.
  config = _config(momentum=0.9, nesterov=True)
  out = _run(config, {"w": jnp.array([1.0])}, [{"w": jnp.array([0.5])}, {"w": jnp.array([-1.0])}])
  np.testing.assert_allclose(out["w"], [1.05007411], rtol=1e-6)
  # Without Nesterov the same two steps differ (p -= lr b): 0.949, then 0.949 + 0.0531969...
  plain = _run(_config(momentum=0.9), {"w": jnp.array([1.0])},
               [{"w": jnp.array([0.5])}, {"w": jnp.array([-1.0])}])
  assert abs(float(plain["w"][0]) - 1.05007411) > 1e-3


def test_sgd_nesterov_matches_torch_rule_over_steps():
  p, b = np.array([1.0, 2.0]), np.zeros(2)
  for t, g in enumerate(GRADS):
    g2 = g + 0.01 * p
    b = g2 if t == 0 else 0.99 * b + g2
    p = p - 0.1 * (g2 + 0.99 * b)
  out = _run(_config(momentum=0.99, nesterov=True), {"w": jnp.array([1.0, 2.0])},
             [{"w": jnp.asarray(g)} for g in GRADS])
  np.testing.assert_allclose(out["w"], p, rtol=1e-6)


def test_nesterov_needs_sgd_with_momentum():
  with pytest.raises(ValueError, match="config.nesterov=True is SGD's"):
    optim.create_optimizer(_config(optimizer="adam", nesterov=True))
  with pytest.raises(ValueError, match="needs a momentum"):
    optim.create_optimizer(_config(momentum=0.0, nesterov=True))


def test_poly_schedule_values_by_hand():
  # nnU-Net's PolyLRScheduler: 0.01 (1 - step / 10) ** 0.9; 0.5 ** 0.9 = 0.535886731...,
  # 0.9 ** 0.9 = 0.909532576..., 0.1 ** 0.9 = 0.125892541...
  poly = optim.create_learning_rate_schedule(
      _config(lr_schedule="poly", learning_rate=0.01, num_train_steps=10))
  np.testing.assert_allclose(
      [poly(0), poly(1), poly(5), poly(9), poly(10), poly(12)],
      [0.01, 0.00909532576, 0.00535886731, 0.00125892541, 0.0, 0.0], rtol=1e-6, atol=1e-9)
  with pytest.raises(ValueError, match="poly_exponent"):
    optim.create_learning_rate_schedule(_config(lr_schedule="poly", poly_exponent=0.0))
