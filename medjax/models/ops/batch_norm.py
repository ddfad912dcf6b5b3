"""Training-mode BatchNorm (batch statistics), optionally followed by ReLU or PReLU, as one
function with a backward pass that keeps only its input and per-channel vectors (channels
last)."""

import functools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from medjax.models.ops import tiling

Dtype = Any
ACTIVATIONS = (None, "relu", "prelu")


def _activate(y, activation, slope):
  if activation == "relu":
    return jnp.maximum(y, 0)
  if activation == "prelu":  # `layers.PReLU`: y if y >= 0 else slope * y
    return jnp.where(y >= 0, y, slope.astype(y.dtype) * y)
  return y


def normalize(x, mean, var, scale, bias, epsilon, dtype, activation=None, slope=None):
  """`(x - mean) * rsqrt(var + epsilon) * scale + bias` (then `activation`: None, 'relu', or
  'prelu' with `slope` `[C]` or `[1]`) in float32 (at least), in the order of operations of
  flax's BatchNorm, cast to `dtype`."""
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mul = lax.rsqrt(var + epsilon) * scale
  y = (xf - mean) * mul + bias
  return _activate(y, activation, slope).astype(dtype)


def _forward(x, scale, bias, slope, epsilon, dtype, activation):
  """`(act(BatchNorm(x)), mean, var, raw_var)` with flax's statistics: float32 (at least),
  `var = max(E[x^2] - E[x]^2, 0)` over every axis but the last."""
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = xf.mean(axes)
  raw_var = lax.square(xf).mean(axes) - lax.square(mean)
  var = jnp.maximum(raw_var, 0.0)
  z = normalize(x, mean, var, scale, bias, epsilon, dtype, activation, slope)
  return z, mean, var, raw_var


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _batch_norm(x, scale, bias, slope, epsilon, dtype, activation):
  return _forward(x, scale, bias, slope, epsilon, dtype, activation)[:3]


def _batch_norm_fwd(x, scale, bias, slope, epsilon, dtype, activation):
  z, mean, var, raw_var = _forward(x, scale, bias, slope, epsilon, dtype, activation)
  # Only x and per-channel vectors: the centred and normalised copies, and the activation's
  # input, that JAX's own differentiation keeps (up to three activation-sized arrays per layer)
  # are recomputed.
  return (z, mean, var), (x, scale, bias, slope, mean, raw_var)


def _batch_norm_bwd(epsilon, dtype, activation, residuals, cotangents):
  """The gradient of `_batch_norm` through the batch statistics. With r = (var + eps)^-1/2, s the
  scale, y the normalised output before the activation, g the output gradient taken back through
  the activation (0 where y <= 0 for ReLU, times the slope where y < 0 for PReLU), N the reduced
  size:
  `dbias = sum g`, `dscale = sum g xhat`, and `dx = r s g + (g_mean - r s dbias) / N
  + 2 (x - mean) / N [raw_var > 0] (g_var - r^2 s dscale / 2)`
  (g_mean, g_var: gradients of the returned statistics; `var = max(raw_var, 0)` passes none
  where it clips); for PReLU also `dslope = sum_{y < 0} g_z y` (over the channels too for one
  shared slope)."""
  del dtype
  x, scale, bias, slope, mean, raw_var = residuals
  g_z, g_mean, g_var = cotangents
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  rstd = lax.rsqrt(jnp.maximum(raw_var, 0.0) + epsilon)
  g_z = g_z.astype(mean.dtype)

  def recentred(*after):
    # x - mean, recomputed for each of the passes below, tied to what the pass must follow: so
    # XLA neither merges the recomputation with the forward pass's identical expressions (which
    # would keep their results alive until now) nor shares it between the passes (which would
    # form arrays the size of x).
    return tiling.tie(x, *after).astype(mean.dtype) - mean

  def centred_and_masked_grad(*after):
    # x - mean and g taken back through the activation (at y, the normalised x).
    c = recentred(*after)
    if activation is None:
      return c, tiling.tie(g_z, *after)
    y = c * (rstd * scale) + bias
    if activation == "relu":
      return c, jnp.where(y > 0, g_z, 0.0)
    return c, jnp.where(y >= 0, g_z, slope.astype(g_z.dtype) * g_z)

  if activation == "prelu":
    y = recentred(g_z) * (rstd * scale) + bias
    dslope = jnp.where(y >= 0, 0.0, g_z * y).sum(axes)
    dslope = (dslope.sum(keepdims=True) if slope.size == 1 else dslope).astype(slope.dtype)
    after_slope = (dslope,)
  else:
    dslope, after_slope = jnp.zeros_like(slope), ()
  dbias = centred_and_masked_grad(g_z, *after_slope)[1].sum(axes)
  centred, g = centred_and_masked_grad(dbias)
  dscale = (g * centred).sum(axes) * rstd
  g_raw_var = jnp.where(raw_var > 0, g_var - 0.5 * rstd * rstd * scale * dscale, 0.0)
  centred, g = centred_and_masked_grad(dscale)
  dx = (rstd * scale) * g + ((g_mean - rstd * scale * dbias) + 2 * g_raw_var * centred) / n
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype), dslope


_batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, *, epsilon: float = 1e-5,
               activation: str | None = None, slope: jax.Array | None = None,
               dtype: Dtype | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm with the batch statistics, then `activation`, channels last.

  `z = act((x - mean) * rsqrt(var + epsilon) * scale + bias)` with `mean` and the biased `var`
  of x over every axis but the last (`[B, D, H, W, C]`: over B, D, H, W), computed in float32 as
  flax's `nn.BatchNorm` does (`var = max(E[x^2] - E[x]^2, 0)`), `act` the identity (None), ReLU,
  or PReLU (`y if y >= 0 else slope * y`, `layers.PReLU`'s). Same values as `nn.BatchNorm` (then
  the activation); its own backward pass keeps only `x` and per-channel vectors, where JAX's
  differentiation of the two would keep up to three more activation-sized arrays.

  Args:
    x: `[..., C]` input.
    scale: `[C]`.
    bias: `[C]`.
    epsilon: added to the variance.
    activation: None, 'relu' or 'prelu'.
    slope: PReLU's slopes, `[C]` or `[1]` (differentiable); only with 'prelu'.
    dtype: dtype of `z` (None: the promoted dtype of x, scale and bias).

  Returns:
    `(z, mean, var)`: `z` like x, `mean` and `var` `[C]` in float32 (at least), for the running
    averages (differentiable too).
  """
  if activation not in ACTIVATIONS:
    raise ValueError(f"batch_norm activation must be one of {ACTIVATIONS}; got {activation!r}.")
  if (activation == "prelu") != (slope is not None):
    raise ValueError("batch_norm takes a slope with activation='prelu' and only then; got "
                     f"activation={activation!r} and slope {None if slope is None else 'given'}.")
  dtype = dtype or jnp.result_type(x, scale, bias)
  slope = jnp.zeros((1,), jnp.float32) if slope is None else slope
  return _batch_norm(x, scale, bias, slope, epsilon, jnp.dtype(dtype), activation)
