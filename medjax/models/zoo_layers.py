"""Building blocks shared by the MedicalZoo ports (V-Net, DenseNets, HyperDenseNet).

All arrays are channels-last: volumes are `[B, D, H, W, C]`.

* `PReLU` follows PyTorch's `nn.PReLU(num_parameters)` (one slope per channel or one shared
  slope, initialised to 0.25), which flax's `nn.PReLU` (one slope, initialised to 0.01) does not.
* `DownConv2x` / `UpConv2x` are a 2x2x2 convolution with stride 2 and a 2x2x2 transposed
  convolution with stride 2, written as a reshape plus one matrix product. They hold exactly the
  parameters of `nn.Conv` / `nn.ConvTranspose` (same names, shapes and meaning) and compute the
  same function, but XLA's CPU convolutions are slow for these strided kernels: at 64^3 with
  16 -> 32 channels the space-to-depth form of the down convolution runs its forward+backward
  about 20x faster than `nn.Conv` on this CPU.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class PReLU(nn.Module):
  """PyTorch-style parametric ReLU: `y = x if x >= 0 else a * x`.

  Attributes:
    num_parameters: 1 for one slope shared by all channels (PyTorch's `nn.PReLU()`), or the
      number of channels C for one slope per channel (`nn.PReLU(C)`).
    init_value: initial slope (PyTorch's default 0.25).
    param_dtype: dtype of the slope parameter.
  """
  num_parameters: int = 1
  init_value: float = 0.25
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x` `[..., C]` -> same shape; a per-channel slope broadcasts over the last axis."""
    if self.num_parameters != 1 and x.shape[-1] != self.num_parameters:
      raise ValueError(f"PReLU has num_parameters={self.num_parameters} but the input has "
                       f"{x.shape[-1]} channels (last axis of shape {x.shape}).")
    slope = self.param("negative_slope", nn.initializers.constant(self.init_value),
                       (self.num_parameters,), self.param_dtype)
    slope = jnp.asarray(slope, x.dtype)
    return jnp.where(x >= 0, x, slope * x)


def _check_even(x: jax.Array, what: str) -> None:
  if any(s % 2 for s in x.shape[1:4]):
    raise ValueError(f"{what} needs even spatial sizes; got input shape {x.shape} "
                     "([B, D, H, W, C]).")


class DownConv2x(nn.Module):
  """2x2x2 convolution with stride 2 (no padding), as a space-to-depth and one matmul.

  `y[b, i, j, k, o] = bias[o] + sum_{p,q,r in {0,1}} sum_c x[b, 2i+p, 2j+q, 2k+r, c]
  * kernel[p, q, r, c, o]`, which is what `nn.Conv(features, (2, 2, 2), strides=2,
  padding='VALID')` computes with the same `kernel` `[2, 2, 2, C, O]` and `bias` `[O]`.

  Attributes:
    features: output channels O.
    use_bias: whether to add a bias.
    dtype: computation dtype (None: from the inputs).
    param_dtype: parameter dtype.
  """
  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x` `[B, D, H, W, C]` (D, H, W even) -> `[B, D/2, H/2, W/2, features]`."""
    _check_even(x, "DownConv2x")
    b, d, h, w, c = x.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, 2, c, self.features),
                        self.param_dtype)
    bias = (self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    x = x.reshape(b, d // 2, 2, h // 2, 2, w // 2, 2, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, d // 2, h // 2, w // 2, 8 * c)
    y = x @ kernel.reshape(8 * c, self.features)
    return y + bias if bias is not None else y


class UpConv2x(nn.Module):
  """2x2x2 transposed convolution with stride 2, as one matmul and a depth-to-space.

  `y[b, 2i+p, 2j+q, 2k+r, o] = bias[o] + sum_c x[b, i, j, k, c] * kernel[1-p, 1-q, 1-r, c, o]`,
  which is what `nn.ConvTranspose(features, (2, 2, 2), strides=(2, 2, 2), padding='VALID')`
  computes with the same `kernel` `[2, 2, 2, C, O]` and `bias` `[O]` (flax's transposed
  convolution flips the kernel; PyTorch's `ConvTranspose3d` weight `[C, O, 2, 2, 2]` maps to
  `kernel[p, q, r, c, o] = weight[c, o, 1-p, 1-q, 1-r]`). One bias per output channel, as in
  PyTorch, so the parameter count is `8 * C * O + O`.

  Attributes:
    features: output channels O.
    use_bias: whether to add a bias.
    dtype: computation dtype (None: from the inputs).
    param_dtype: parameter dtype.
  """
  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> `[B, 2D, 2H, 2W, features]`."""
    b, d, h, w, c = x.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, 2, c, self.features),
                        self.param_dtype)
    bias = (self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    # [C, (p, q, r, O)] with the flip that matches flax's ConvTranspose.
    k = kernel[::-1, ::-1, ::-1].transpose(3, 0, 1, 2, 4).reshape(c, 8 * self.features)
    y = (x @ k).reshape(b, d, h, w, 2, 2, 2, self.features)
    y = y.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, 2 * d, 2 * h, 2 * w, self.features)
    return y + bias if bias is not None else y


def batch_norm(train: bool, dtype: Dtype | None, param_dtype: Dtype,
               name: str | None = None) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults: running-average momentum 0.1 (flax 0.9), eps 1e-5.

  Its `scale` and `bias` are the 2C parameters PyTorch counts; the running mean and variance
  live in the `batch_stats` collection.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      param_dtype=param_dtype, name=name)


def center_crop(x: jax.Array, margin: int) -> jax.Array:
  """Removes `margin` voxels from both ends of each spatial axis of `x` `[B, D, H, W, C]`."""
  if margin == 0:
    return x
  return x[:, margin:-margin, margin:-margin, margin:-margin, :]


def count_parameters(model: nn.Module, input_shape: Sequence[int]) -> int:
  """Number of trainable parameters (the `params` collection) of `model` for an input shape.

  Uses `jax.eval_shape`, so nothing is computed or allocated; BatchNorm running statistics are
  not counted (they are not parameters in PyTorch either).
  """
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(input_shape, jnp.float32), train=False))
  return sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))
