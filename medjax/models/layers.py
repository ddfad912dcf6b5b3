"""Building blocks for 3D segmentation networks (channels-last, `[B, D, H, W, C]`).

* `ConvBNReLU`: 3x3x3 convolution (SAME padding) -> BatchNorm -> ReLU, PyTorch's BatchNorm
  defaults (running-average momentum 0.1, i.e. flax `momentum=0.9`; eps 1e-5).
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

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models.fast_conv import CONV_METHODS, Conv3D, conv3d  # pylint: disable=unused-import

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


def max_pool_2x(x: jax.Array) -> jax.Array:
  """2x2x2 max-pooling with stride 2: `[B, D, H, W, C]` (D, H, W even) -> `[B, D/2, H/2, W/2, C]`.

  `y[b, i, j, k, c] = max_{p,q,s in {0,1}} x[b, 2i+p, 2j+q, 2k+s, c]`, the values of
  `nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2))`. Written as a reshape and a reduction because
  XLA's CPU gradient of `reduce_window` max is about 9x slower (0.05 s against 0.006 s at
  32^3 x 64). The gradient differs only at exact ties inside a window, where it is shared equally
  instead of going to one element (after a ReLU the tied zeros get no gradient either way).
  """
  if x.ndim != 5 or any(s % 2 for s in x.shape[1:4]):
    raise ValueError(f"max_pool_2x needs input [B, D, H, W, C] with even D, H, W; got input "
                     f"shape {x.shape}.")
  b, d, h, w, c = x.shape
  return x.reshape(b, d // 2, 2, h // 2, 2, w // 2, 2, c).max(axis=(2, 4, 6))


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
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> `[B, D, H, W, features]`.

    With `train=True` BatchNorm normalises with the batch statistics and updates the running ones
    (pass `mutable=['batch_stats']` to `apply`); otherwise it uses the running statistics.
    """
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
              name="conv")
    if self.conv_method == "plain":
      x = nn.Conv(self.features, tuple(self.kernel_size), padding="SAME", **kw)(x)
    elif self.conv_method in CONV_METHODS:
      x = Conv3D(self.features, tuple(self.kernel_size), method=self.conv_method, **kw)(x)
    else:
      raise ValueError(f"ConvBNReLU conv_method must be 'plain' or one of {CONV_METHODS}; got "
                       f"{self.conv_method!r}.")
    x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                     epsilon=self.epsilon, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="bn")(x)
    return nn.relu(x)


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
    y = depth_to_space(jnp.dot(x, k), 2)
    return y + bias if bias is not None else y
