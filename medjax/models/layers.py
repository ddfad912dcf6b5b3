"""Building blocks for 3D segmentation networks (channels-last, `[B, D, H, W, C]`).

* `ConvBNReLU`: 3x3x3 convolution (SAME padding) -> BatchNorm -> ReLU, PyTorch's BatchNorm
  defaults (running-average momentum 0.1, i.e. flax `momentum=0.9`; eps 1e-5).
* `BatchNormReLU` / `batch_norm_relu`: BatchNorm (batch statistics) and ReLU as one function with
  its own backward pass, which keeps only its input for the backward pass; the variables and
  values of `nn.BatchNorm` followed by `nn.relu`.
* `UpConv`: the 2x2x2, stride-2 transposed convolution of U-Nets, computed as one matrix product
  (a Dense layer `C -> 8 * O`) followed by `depth_to_space`. It holds exactly the parameters of
  `nn.ConvTranspose(O, (2, 2, 2), strides=(2, 2, 2), padding='VALID')` (`kernel` `[2, 2, 2, C, O]`,
  `bias` `[O]`) and computes the same function, so checkpoints are interchangeable; XLA's CPU
  transposed convolution is an order of magnitude slower than the matmul form.
* `depth_to_space` / `space_to_depth`: the 3D pixel-shuffle pair.
* `max_pool_2x`: 2x2x2 max-pooling with stride 2.
* `conv3d` / `Conv3D` (from `fast_conv`, re-exported): the 3D convolution `ConvBNReLU` runs by
  default, through XLA's 2D convolution with Winograd's F(4, 3) along depth on CPU.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from medjax.models.fast_conv import CONV_METHODS, Conv3D, conv3d  # pylint: disable=unused-import
from medjax.models.fast_conv import tie

Dtype = Any


def depth_to_space(x: jax.Array, block_size: int = 2) -> jax.Array:
  """3D pixel shuffle: `[B, D, H, W, r^3 * C]` -> `[B, r*D, r*H, r*W, C]` with r = block_size.

  `y[b, r*i + p, r*j + q, r*k + s, c] = x[b, i, j, k, ((p * r + q) * r + s) * C + c]`: the
  channel axis is read as `(p, q, s, c)` in row-major order. Inverse of `space_to_depth`.
  """
  b, d, h, w, rc = x.shape
  r = block_size
  if rc % r**3:
    raise ValueError(f"depth_to_space with block_size={r} needs the channel count of input "
                     f"shape {x.shape} to be divisible by {r**3}.")
  c = rc // r**3
  x = x.reshape(b, d, h, w, r, r, r, c)
  x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, r * d, r * h, r * w, c)


def space_to_depth(x: jax.Array, block_size: int = 2) -> jax.Array:
  """Inverse of `depth_to_space`: `[B, r*D, r*H, r*W, C]` -> `[B, D, H, W, r^3 * C]`."""
  b, rd, rh, rw, c = x.shape
  r = block_size
  if rd % r or rh % r or rw % r:
    raise ValueError(f"space_to_depth with block_size={r} needs spatial sizes divisible by {r}; "
                     f"got input shape {x.shape} ([B, D, H, W, C]).")
  x = x.reshape(b, rd // r, r, rh // r, r, rw // r, r, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, rd // r, rh // r, rw // r, r**3 * c)


@jax.custom_vjp
def _matmul_depth_to_space(x: jax.Array, k: jax.Array) -> jax.Array:
  return depth_to_space(jnp.dot(x, k), 2)


def _matmul_depth_to_space_fwd(x, k):
  return _matmul_depth_to_space(x, k), (x, k)


def _matmul_depth_to_space_bwd(residuals, g):
  """One matrix product per output offset (p, q, s) on the strided view of g, so that g is not
  copied into depth-to-space order first (two copies of the up-sampled size in XLA's own
  derivative: 256 MB at the paper U-Net's top level)."""
  x, k = residuals
  b, d, h, w, c = x.shape
  o = k.shape[1] // 8
  g = g.reshape(b, d, 2, h, 2, w, 2, o)
  x2 = tie(x, g).reshape(-1, c)
  dx, dk = None, []
  for i, (p, q, s) in enumerate(np.ndindex(2, 2, 2)):
    gi = g[:, :, p, :, q, :, s].reshape(-1, o)
    dk.append(x2.T @ gi)
    term = gi @ k[:, i * o:(i + 1) * o].T
    dx = term if dx is None else dx + term
  return dx.reshape(x.shape).astype(x.dtype), jnp.concatenate(dk, axis=1).astype(k.dtype)


_matmul_depth_to_space.defvjp(_matmul_depth_to_space_fwd, _matmul_depth_to_space_bwd)


def _windows_last(x: jax.Array) -> jax.Array:
  """`[B, D, H, W, C]` -> `[B, D/2, H/2, W/2, C, 8]`: each 2x2x2 window's values, in (depth,
  height, width) row-major order."""
  b, d, h, w, c = x.shape
  return (x.reshape(b, d // 2, 2, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 7, 2, 4, 6)
          .reshape(b, d // 2, h // 2, w // 2, c, 8))


@jax.custom_vjp
def _max_pool_2x(x: jax.Array) -> jax.Array:
  return _windows_last(x).max(axis=-1)


def _max_pool_2x_fwd(x):
  windows = _windows_last(x)
  # The winner's position in its window (the first one at ties, as PyTorch's max-pool): int8,
  # 1/32 of x's size in float32, where JAX's own derivative of the max keeps a float mask the
  # size of x (finding the winners again in the backward pass from x would need x bit for bit
  # as in the forward pass, which XLA's recomputation of a fused x does not promise).
  return windows.max(axis=-1), jnp.argmax(windows, axis=-1).astype(jnp.int8)


def _max_pool_2x_bwd(winner, g):
  b, d, h, w, c = g.shape
  # Each element's position in its window, laid out as `_windows_last` numbers them.
  position = np.arange(8, dtype=np.int8).reshape(2, 2, 2)[None, None, :, None, :, None, :, None]
  spread = lambda a: jnp.expand_dims(a, (2, 4, 6))
  dx = jnp.where(spread(winner) == position, spread(g), 0)
  return (dx.reshape(b, 2 * d, 2 * h, 2 * w, c),)


_max_pool_2x.defvjp(_max_pool_2x_fwd, _max_pool_2x_bwd)


def max_pool_2x(x: jax.Array) -> jax.Array:
  """2x2x2 max-pooling with stride 2: `[B, D, H, W, C]` (D, H, W even) -> `[B, D/2, H/2, W/2, C]`.

  `y[b, i, j, k, c] = max_{p,q,s in {0,1}} x[b, 2i+p, 2j+q, 2k+s, c]`, the values of
  `nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2))`. Written as a reshape and a reduction because
  XLA's CPU gradient of `reduce_window` max is about 9x slower (0.05 s against 0.006 s at
  32^3 x 64). The gradient goes to the window's maximum, at exact ties to the first one in
  (depth, height, width) order, as PyTorch's `max_pool3d` (JAX's derivative of `max` would share
  it; after a ReLU, the tied zeros get no gradient either way). The backward pass keeps only the
  winners' positions (int8, `[B, D/2, H/2, W/2, C]`).
  """
  if x.ndim != 5 or any(s % 2 for s in x.shape[1:4]):
    raise ValueError(f"max_pool_2x needs input [B, D, H, W, C] with even D, H, W; got input "
                     f"shape {x.shape}.")
  return _max_pool_2x(x)


def _normalize_relu(x, mean, var, scale, bias, epsilon, dtype):
  """`relu((x - mean) * rsqrt(var + epsilon) * scale + bias)` in float32 (at least), in the
  order of operations of flax's BatchNorm, cast to `dtype`."""
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mul = lax.rsqrt(var + epsilon) * scale
  return jnp.maximum((xf - mean) * mul + bias, 0).astype(dtype)


def _bn_relu_forward(x, scale, bias, epsilon, dtype):
  """`(relu(BatchNorm(x)), mean, var, raw_var)` with flax's statistics: float32 (at least),
  `var = max(E[x^2] - E[x]^2, 0)` over every axis but the last."""
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = xf.mean(axes)
  raw_var = lax.square(xf).mean(axes) - lax.square(mean)
  var = jnp.maximum(raw_var, 0.0)
  return _normalize_relu(x, mean, var, scale, bias, epsilon, dtype), mean, var, raw_var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _bn_relu(x, scale, bias, epsilon, dtype):
  return _bn_relu_forward(x, scale, bias, epsilon, dtype)[:3]


def _bn_relu_fwd(x, scale, bias, epsilon, dtype):
  z, mean, var, raw_var = _bn_relu_forward(x, scale, bias, epsilon, dtype)
  # Only x and per-channel vectors: the centred and normalised copies, and the ReLU mask, that
  # JAX's own differentiation keeps (three activation-sized arrays per layer) are recomputed.
  return (z, mean, var), (x, scale, bias, mean, raw_var)


def _bn_relu_bwd(epsilon, dtype, residuals, cotangents):
  """The gradient of `_bn_relu` through the batch statistics. With r = (var + eps)^-1/2, s the
  scale, g the output gradient where the ReLU passed, N the reduced size:
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
    centred = tie(x, *after).astype(mean.dtype) - mean
    return centred, jnp.where(centred * (rstd * scale) + bias > 0, g_z, 0.0)

  dbias = centred_and_masked_grad(g_z)[1].sum(axes)
  centred, g = centred_and_masked_grad(dbias)
  dscale = (g * centred).sum(axes) * rstd
  g_raw_var = jnp.where(raw_var > 0, g_var - 0.5 * rstd * rstd * scale * dscale, 0.0)
  centred, g = centred_and_masked_grad(dscale)
  dx = (rstd * scale) * g + ((g_mean - rstd * scale * dbias) + 2 * g_raw_var * centred) / n
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


_bn_relu.defvjp(_bn_relu_fwd, _bn_relu_bwd)


def batch_norm_relu(x: jax.Array, scale: jax.Array, bias: jax.Array, *, epsilon: float = 1e-5,
                    dtype: Dtype | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm with the batch statistics, then ReLU, channels last.

  `z = relu((x - mean) * rsqrt(var + epsilon) * scale + bias)` with `mean` and the biased `var`
  of x over every axis but the last (`[B, D, H, W, C]`: over B, D, H, W), computed in float32 as
  flax's `nn.BatchNorm` does (`var = max(E[x^2] - E[x]^2, 0)`). Same values as `nn.BatchNorm`
  then `nn.relu`; its own backward pass keeps only `x` and per-channel vectors, where JAX's
  differentiation of the two would keep three more activation-sized arrays.

  Args:
    x: `[..., C]` input.
    scale: `[C]`.
    bias: `[C]`.
    epsilon: added to the variance.
    dtype: dtype of `z` (None: the promoted dtype of x, scale and bias).

  Returns:
    `(z, mean, var)`: `z` like x, `mean` and `var` `[C]` in float32 (at least), for the running
    averages (differentiable too).
  """
  dtype = dtype or jnp.result_type(x, scale, bias)
  return _bn_relu(x, scale, bias, epsilon, jnp.dtype(dtype))


class BatchNormReLU(nn.Module):
  """BatchNorm then ReLU, with `nn.BatchNorm`'s variables (params `scale`, `bias`; batch_stats
  `mean`, `var`), initialisers and values, channels last.

  In training (`use_running_average=False`) it runs `batch_norm_relu` and moves the running
  averages towards the batch statistics (not while initialising), as `nn.BatchNorm` does;
  otherwise it normalises with the running averages.

  Attributes:
    momentum: running-average decay (flax convention: 0.9 is PyTorch's momentum 0.1).
    epsilon: added to the variance.
    dtype: output dtype (None: promoted from the input and parameters).
    param_dtype: parameter dtype.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, use_running_average: bool) -> jax.Array:
    """`x` `[..., C]` -> `relu(BatchNorm(x))`, same shape."""
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
    dtype = nn.dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
    if use_running_average:
      return _normalize_relu(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon, dtype)
    z, mean, var = batch_norm_relu(x, scale, bias, epsilon=self.epsilon, dtype=dtype)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return z


class ConvBNReLU(nn.Module):
  """Convolution (SAME padding, stride 1) -> BatchNorm -> ReLU.

  The convolution is submodule `conv` with parameters `kernel` `[*kernel_size, C, features]` and
  `bias` `[features]`, whichever `conv_method` runs it, so checkpoints do not depend on it.

  Attributes:
    features: output channels.
    kernel_size: convolution window, (3, 3, 3) by default (odd sizes).
    use_bias: convolution bias (PyTorch's `Conv3d` default; redundant before BatchNorm but kept so
      the parameter count matches the reference implementations).
    momentum: BatchNorm running-average decay (flax convention: 0.9 is PyTorch's momentum 0.1).
    epsilon: BatchNorm variance epsilon (PyTorch's 1e-5).
    conv_method: 'plain' for `nn.Conv` (XLA's 3D convolution), or a `conv3d` method of `Conv3D`
      ('auto', the default, is the fastest on CPU; same values up to float rounding).
    dtype: computation dtype (None: from the inputs and parameters).
    param_dtype: parameter dtype.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3, 3)
  use_bias: bool = True
  momentum: float = 0.9
  epsilon: float = 1e-5
  conv_method: str = "auto"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array | Sequence[jax.Array], *, train: bool) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> `[B, D, H, W, features]`. A sequence of inputs `[B, D, H, W, C_i]`
    is convolved as their concatenation along the channels (which `Conv3D` does not form).

    With `train=True` BatchNorm normalises with the batch statistics and updates the running ones
    (pass `mutable=['batch_stats']` to `apply`); otherwise it uses the running statistics.
    """
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
              name="conv")
    if self.conv_method == "plain":
      x = jnp.concatenate(x, axis=-1) if isinstance(x, (list, tuple)) else x
      x = nn.Conv(self.features, tuple(self.kernel_size), padding="SAME", **kw)(x)
    elif self.conv_method in CONV_METHODS:
      x = Conv3D(self.features, tuple(self.kernel_size), method=self.conv_method, **kw)(x)
    else:
      raise ValueError(f"ConvBNReLU conv_method must be 'plain' or one of {CONV_METHODS}; got "
                       f"{self.conv_method!r}.")
    return BatchNormReLU(momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="bn")(x, use_running_average=not train)


class UpConv(nn.Module):
  """2x2x2 transposed convolution with stride 2, as a Dense layer and a depth-to-space.

  Formula, with `kernel` `[2, 2, 2, C, O]` and `bias` `[O]`:
  `y[b, 2i+p, 2j+q, 2k+s, o] = bias[o] + sum_c x[b, i, j, k, c] * kernel[1-p, 1-q, 1-s, c, o]`.
  This is exactly `nn.ConvTranspose(O, (2, 2, 2), strides=(2, 2, 2), padding='VALID')` with the
  same parameters (flax's transposed convolution flips the kernel; PyTorch's `ConvTranspose3d`
  weight `[C, O, 2, 2, 2]` corresponds to `kernel[p, q, s, c, o] = weight[c, o, 1-p, 1-q, 1-s]`).
  Every output voxel receives exactly one input voxel, so the layer is the matmul
  `x @ K` with `K` `[C, 8 * O]` followed by `depth_to_space`. Parameters: `8*C*O + O`.

  Attributes:
    features: output channels O.
    use_bias: whether to add the per-channel bias (O values, as PyTorch and flax).
    dtype: computation dtype (None: from the inputs and parameters).
    param_dtype: parameter dtype.
  """
  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> `[B, 2D, 2H, 2W, features]`."""
    c = x.shape[-1]
    # Same name, shape and initialiser as nn.ConvTranspose, so the two are interchangeable.
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, 2, c, self.features),
                        self.param_dtype)
    bias = (self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    # Flip to flax's transposed-convolution convention, then lay out as [C, (p, q, s, O)].
    k = kernel[::-1, ::-1, ::-1].transpose(3, 0, 1, 2, 4).reshape(c, 8 * self.features)
    y = _matmul_depth_to_space(x, k)
    return y + bias if bias is not None else y
