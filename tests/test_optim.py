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


@pytest.mark.parametrize("key,value", [("optimizer", "lbfgs"), ("lr_schedule", "poly"),
                                       ("weight_decay_mask", "biases")])
def test_unknown_names_raise(key, value):
  config = _config(**{key: value})
  with pytest.raises(ValueError, match=key):
    optim.create_optimizer(config)
