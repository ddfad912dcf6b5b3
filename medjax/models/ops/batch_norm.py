"""Training-mode BatchNorm (batch statistics), optionally followed by ReLU, as one function with
a backward pass that keeps only its input and per-channel vectors (channels last)."""

import functools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from medjax.models.ops import tiling

Dtype = Any
ACTIVATIONS = (None, "relu")


def normalize(x, mean, var, scale, bias, epsilon, dtype, relu: bool):
  """`(x - mean) * rsqrt(var + epsilon) * scale + bias` (then ReLU if `relu`) in float32 (at
  least), in the order of operations of flax's BatchNorm, cast to `dtype`."""
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mul = lax.rsqrt(var + epsilon) * scale
  y = (xf - mean) * mul + bias
  return (jnp.maximum(y, 0) if relu else y).astype(dtype)


def _forward(x, scale, bias, epsilon, dtype, relu):
  """`(BatchNorm(x) [then ReLU], mean, var, raw_var)` with flax's statistics: float32 (at least),
  `var = max(E[x^2] - E[x]^2, 0)` over every axis but the last."""
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = xf.mean(axes)
  raw_var = lax.square(xf).mean(axes) - lax.square(mean)
  var = jnp.maximum(raw_var, 0.0)
  return normalize(x, mean, var, scale, bias, epsilon, dtype, relu), mean, var, raw_var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _batch_norm(x, scale, bias, epsilon, dtype, relu):
  return _forward(x, scale, bias, epsilon, dtype, relu)[:3]


def _batch_norm_fwd(x, scale, bias, epsilon, dtype, relu):
  z, mean, var, raw_var = _forward(x, scale, bias, epsilon, dtype, relu)
  # Only x and per-channel vectors: the centred and normalised copies, and the ReLU mask, that
  # JAX's own differentiation keeps (up to three activation-sized arrays per layer) are
  # recomputed.
  return (z, mean, var), (x, scale, bias, mean, raw_var)


def _batch_norm_bwd(epsilon, dtype, relu, residuals, cotangents):
  """The gradient of `_batch_norm` through the batch statistics. With r = (var + eps)^-1/2, s the
  scale, g the output gradient (where the ReLU passed, with `relu`), N the reduced size:
  `dbias = sum g`, `dscale = sum g xhat`, and `dx = r s g + (g_mean - r s dbias) / N
  + 2 (x - mean) / N [raw_var > 0] (g_var - r^2 s dscale / 2)`
  (g_mean, g_var: gradients of the returned statistics; `var = max(raw_var, 0)` passes none
  where it clips)."""
  del dtype
  x, scale, bias, mean, raw_var = residuals
  g_z, g_mean, g_var = cotangents
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  rstd = lax.rsqrt(jnp.maximum(raw_var, 0.0) + epsilon)
  g_z = g_z.astype(mean.dtype)

  def centred_and_masked_grad(*after):
    # x - mean and g where the forward's ReLU passed, recomputed for each of the three passes
    # below, tied to what the pass must follow: so XLA neither merges the recomputation with
    # the forward pass's identical expressions (which would keep their results alive until
    # now) nor shares it between the passes (which would form these two arrays the size of x).
    centred = tiling.tie(x, *after).astype(mean.dtype) - mean
    if not relu:
      return centred, tiling.tie(g_z, *after)
    return centred, jnp.where(centred * (rstd * scale) + bias > 0, g_z, 0.0)

  dbias = centred_and_masked_grad(g_z)[1].sum(axes)
  centred, g = centred_and_masked_grad(dbias)
  dscale = (g * centred).sum(axes) * rstd
  g_raw_var = jnp.where(raw_var > 0, g_var - 0.5 * rstd * rstd * scale * dscale, 0.0)
  centred, g = centred_and_masked_grad(dscale)
  dx = (rstd * scale) * g + ((g_mean - rstd * scale * dbias) + 2 * g_raw_var * centred) / n
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


_batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, *, epsilon: float = 1e-5,
               activation: str | None = None,
               dtype: Dtype | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm with the batch statistics, then `activation`, channels last.

  `z = act((x - mean) * rsqrt(var + epsilon) * scale + bias)` with `mean` and the biased `var`
  of x over every axis but the last (`[B, D, H, W, C]`: over B, D, H, W), computed in float32 as
  flax's `nn.BatchNorm` does (`var = max(E[x^2] - E[x]^2, 0)`), `act` the identity (None) or ReLU.
  Same values as `nn.BatchNorm` (then `nn.relu`); its own backward pass keeps only `x` and
  per-channel vectors, where JAX's differentiation of the two would keep up to three more
  activation-sized arrays.

  Args:
    x: `[..., C]` input.
    scale: `[C]`.
    bias: `[C]`.
    epsilon: added to the variance.
    activation: None or 'relu'.
    dtype: dtype of `z` (None: the promoted dtype of x, scale and bias).

  Returns:
    `(z, mean, var)`: `z` like x, `mean` and `var` `[C]` in float32 (at least), for the running
    averages (differentiable too).
  """
  if activation not in ACTIVATIONS:
    raise ValueError(f"batch_norm activation must be one of {ACTIVATIONS}; got {activation!r}.")
  dtype = dtype or jnp.result_type(x, scale, bias)
  return _batch_norm(x, scale, bias, epsilon, jnp.dtype(dtype), activation == "relu")
