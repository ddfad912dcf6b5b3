"""Building blocks shared by the MedicalZoo ports (V-Net, DenseNets, HyperDenseNet).

All arrays are channels-last: volumes are `[B, D, H, W, C]`.

* `PReLU` follows PyTorch's `nn.PReLU(num_parameters)` (one slope per channel or one shared
  slope, initialised to 0.25), which flax's `nn.PReLU` (one slope, initialised to 0.01) does not.
* `Conv3D` is a stride-1 3D convolution that can run as one 2D convolution (faster on CPU).
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

from medjax.models import layers

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


# The 2x2x2 stride-2 transposed convolution as one matmul and a depth-to-space: the U-Net's layer
# (same parameters as `nn.ConvTranspose(O, (2, 2, 2), strides=(2, 2, 2), padding='VALID')`).
UpConv2x = layers.UpConv


class Conv3D(nn.Module):
  """Stride-1 3D convolution with the parameters of `nn.Conv` (`kernel` `[kd, kh, kw, C, O]`,
  `bias` `[O]`), computed either by XLA's 3D convolution or as one 2D convolution.

  `method='stack2d'` pads the depth axis, stacks the kd depth-shifted copies of the input along
  the channels (`[B, D', H, W, kd * C]`), folds depth into the batch and runs one 2D convolution
  with the kernel reshaped to `[kh, kw, kd * C, O]`:
  `y[b, d, h, w] = sum_a sum_{p,q} x[b, d + a, h + p, w + q] . kernel[a, p, q]`, the same sum as
  the 3D convolution. XLA's CPU backend runs 2D convolutions about 3x faster per FLOP than 3D
  ones; for V-Net's 5x5x5 convolutions with C = O (e.g. 32 channels at 64^3) forward+backward
  is 4-5x faster on this CPU. It costs kd copies of the input (kept for the backward pass) and
  is slower when C is much larger than O (DenseNet layers), so only V-Net uses it.
  `method='auto'` picks 'stack2d' on the CPU backend and 'xla3d' elsewhere.

  Attributes:
    features: output channels O.
    kernel_size: (kd, kh, kw).
    padding: 'SAME' (odd kernel sizes; k // 2 on both sides) or 'VALID'.
    use_bias: whether to add a bias.
    method: 'auto', 'stack2d' or 'xla3d'.
    dtype: computation dtype (None: from the inputs).
    param_dtype: parameter dtype.
  """
  features: int
  kernel_size: tuple[int, int, int]
  padding: str = "SAME"
  use_bias: bool = True
  method: str = "auto"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> `[B, D', H', W', features]` (same size for 'SAME')."""
    kd, kh, kw = self.kernel_size
    if self.padding == "SAME":
      if not kd % 2 == kh % 2 == kw % 2 == 1:
        raise ValueError(f"Conv3D padding='SAME' needs odd kernel sizes; got {self.kernel_size}.")
      pads = (kd // 2, kh // 2, kw // 2)
    elif self.padding == "VALID":
      pads = (0, 0, 0)
    else:
      raise ValueError(f"Conv3D padding must be 'SAME' or 'VALID'; got {self.padding!r}.")
    method = self.method
    if method == "auto":
      method = "stack2d" if jax.default_backend() == "cpu" else "xla3d"
    if method not in ("stack2d", "xla3d"):
      raise ValueError(f"Conv3D method must be 'auto', 'stack2d' or 'xla3d'; got {method!r}.")
    b, d, h, w, c = x.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (kd, kh, kw, c, self.features),
                        self.param_dtype)
    bias = (self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if method == "xla3d":
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1, 1), [(p, p) for p in pads],
                                       dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    else:
      xp = jnp.pad(x, ((0, 0), (pads[0], pads[0]), (0, 0), (0, 0), (0, 0)))
      d_out = d + 2 * pads[0] - kd + 1
      stacked = jnp.concatenate([xp[:, a:a + d_out] for a in range(kd)], axis=-1)
      kernel_2d = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kd * c, self.features)
      y = jax.lax.conv_general_dilated(
          stacked.reshape(b * d_out, h, w, kd * c), kernel_2d, (1, 1),
          [(pads[1], pads[1]), (pads[2], pads[2])], dimension_numbers=("NHWC", "HWIO", "NHWC"))
      y = y.reshape(b, d_out, *y.shape[1:])
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
