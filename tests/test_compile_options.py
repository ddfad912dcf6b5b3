"""Tests for medjax.compile_options."""

import jax
import jax.numpy as jnp
import numpy as np

from medjax import compile_options


def test_cpu_options_only_on_cpu():
  assert compile_options.for_backend("cpu") == {"xla_cpu_use_fusion_emitters": False}
  assert compile_options.for_backend("gpu") is None
  assert compile_options.for_backend("tpu") is None
  assert compile_options.for_backend() == compile_options.for_backend(jax.default_backend())


def test_xla_accepts_the_options_and_computes_the_same():
  # An unknown or misspelt option makes XLA's compile fail, so this also guards against a jaxlib
  # that renames it.
  def f(x):
    return jnp.sum(jnp.tanh(x) * jnp.exp(-x * x), axis=0)

  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 7)), jnp.float32)
  with_options = jax.jit(f, compiler_options=compile_options.for_backend())(x)
  np.testing.assert_allclose(with_options, jax.jit(f)(x), rtol=1e-6, atol=1e-6)
