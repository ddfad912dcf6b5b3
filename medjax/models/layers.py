"""The one layer stack of every network (channels-last, `[B, D, H, W, C]`); the maths lives in
`medjax.models.ops`.

* `Conv3D`: stride-1 3D convolution, SAME or VALID, the parameters of `nn.Conv`, computed by
  `ops.conv.conv3d` by any of its methods ('auto': the fastest measured per layer on CPU).
* `BatchNorm`: `nn.BatchNorm`'s variables and values with PyTorch's defaults (running-average
  momentum 0.1, i.e. flax `momentum=0.9`; eps 1e-5), optionally followed by ReLU, with a backward
  pass that keeps only its input (`ops.batch_norm`).
* `PReLU`: PyTorch's `nn.PReLU(num_parameters)` (one slope per channel or one shared slope,
  initialised to 0.25), which flax's `nn.PReLU` (one slope, initialised to 0.01) is not.
* `DownConv` / `UpConv`: the 2x2x2 stride-2 convolution and transposed convolution as matrix
  products (`ops.resample`), with exactly the parameters of `nn.Conv` / `nn.ConvTranspose`.
* `ConvBNReLU`: `Conv3D` -> `BatchNorm(activation='relu')`.
* `SamePaddedModel` (base of networks whose logits keep the input size), `crop_margin`,
  `count_parameters`.
"""

import math
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models.ops import batch_norm as batch_norm_lib
from medjax.models.ops import conv as conv_lib
from medjax.models.ops import resample

Dtype = Any


def _kernel_and_bias(module: nn.Module, kernel_shape: Sequence[int], use_bias: bool):
  """`nn.Conv`'s parameters: `kernel` (lecun-normal) and, if `use_bias`, `bias` `[O]` (zeros)."""
  kernel = module.param("kernel", nn.initializers.lecun_normal(), tuple(kernel_shape),
                        module.param_dtype)
  bias = (module.param("bias", nn.initializers.zeros_init(), (kernel_shape[-1],),
                       module.param_dtype) if use_bias else None)
  return kernel, bias


def _add_bias(y: jax.Array, bias: jax.Array | None) -> jax.Array:
  return y + bias if bias is not None else y


class Conv3D(nn.Module):
  """Stride-1 3D convolution with the parameters of `nn.Conv` (`kernel` `[kd, kh, kw, C, O]`,
  lecun-normal; `bias` `[O]`, zeros), computed by `ops.conv.conv3d`.

  `y = conv3d(x, kernel, padding) + bias`; interchangeable with `nn.Conv(features, kernel_size,
  padding=padding)` (same names, shapes, initialisers and values up to float rounding). `x` may be
  a sequence of inputs, read as their concatenation along the channels without forming it.

  Attributes:
    features: output channels O.
    kernel_size: (kd, kh, kw), odd (SAME; VALID by a 2D method).
    padding: 'SAME' (output the input's size) or 'VALID' (k - 1 voxels smaller per axis).
    use_bias: whether to add a bias.
    method: a `conv3d` method ('auto': the fastest measured on CPU, XLA's own elsewhere) or an
      old name ('stack2d' = 'fold_in'; 'xla3d', 'plain' = 'xla').
    dtype: computation dtype (None: from the inputs and parameters).
    param_dtype: parameter dtype.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3, 3)
  padding: str = "SAME"
  use_bias: bool = True
  method: str = "auto"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array | Sequence[jax.Array]) -> jax.Array:
    """`x` `[B, D, H, W, C]` (or inputs `[B, D, H, W, C_i]`) -> `[B, D', H', W', features]`."""
    method = conv_lib.canonical_method(self.method, "Conv3D method")
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    kernel, bias = _kernel_and_bias(
        self, (*self.kernel_size, sum(x.shape[-1] for x in xs), self.features), self.use_bias)
    *xs, kernel, bias = nn.dtypes.promote_dtype(*xs, kernel, bias, dtype=self.dtype)
    return _add_bias(conv_lib.conv3d(xs, kernel, method=method, padding=self.padding), bias)


class BatchNorm(nn.Module):
  """BatchNorm, then `activation`, with `nn.BatchNorm`'s variables (params `scale`, `bias`;
  batch_stats `mean`, `var`), initialisers and values, channels last; PyTorch's defaults.

  In training (`use_running_average=False`) it runs `ops.batch_norm.batch_norm` (batch
  statistics, memory-saving backward pass) and moves the running averages towards the batch
  statistics (not while initialising), as `nn.BatchNorm` does; otherwise it normalises with the
  running averages. The `scale` and `bias` are the 2C parameters PyTorch counts.

  Attributes:
    activation: None or 'relu' (applied after the normalisation, in the same function; PReLU:
      the call's `prelu=`).
    momentum: running-average decay (flax convention: 0.9 is PyTorch's momentum 0.1).
    epsilon: added to the variance.
    dtype: output dtype (None: promoted from the input and parameters).
    param_dtype: parameter dtype.
  """
  activation: str | None = None
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, use_running_average: bool,
               prelu: "PReLU | None" = None) -> jax.Array:
    """`x` `[..., C]` -> `activation(BatchNorm(x))`, same shape.

    With `prelu` (a `PReLU` module of the caller's, `activation` None) the result is
    `prelu(BatchNorm(x))`, computed in the same function: in training its backward pass keeps
    `x` only, not also the normalised copy that PReLU's own differentiation keeps. The PReLU
    keeps its own parameter (created after this module's).
    """
    if self.activation not in (None, "relu"):
      raise ValueError(f"BatchNorm activation must be None or 'relu' (PReLU: pass the module as "
                       f"prelu=); got {self.activation!r}.")
    if prelu is not None and self.activation is not None:
      raise ValueError(f"BatchNorm takes prelu= only without an activation; got "
                       f"activation={self.activation!r}.")
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
    dtype = nn.dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
    activation, slope = self.activation, None
    if prelu is not None:
      activation, slope = "prelu", prelu.slopes(x.shape[-1])
    if use_running_average:
      return batch_norm_lib.normalize(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon,
                                      dtype, activation, slope)
    z, mean, var = batch_norm_lib.batch_norm(x, scale, bias, epsilon=self.epsilon,
                                             activation=activation, slope=slope, dtype=dtype)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return z


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

  def setup(self):
    self.negative_slope = self.param("negative_slope", nn.initializers.constant(self.init_value),
                                     (self.num_parameters,), self.param_dtype)

  def slopes(self, channels: int) -> jax.Array:
    """The slope parameter `[num_parameters]`, checked against an input of `channels` channels
    (for `BatchNorm(..., prelu=)`, which applies it)."""
    if self.num_parameters != 1 and channels != self.num_parameters:
      raise ValueError(f"PReLU has num_parameters={self.num_parameters} but the input has "
                       f"{channels} channels.")
    return self.negative_slope

  def __call__(self, x: jax.Array) -> jax.Array:
    """`x` `[..., C]` -> same shape; a per-channel slope broadcasts over the last axis."""
    slope = jnp.asarray(self.slopes(x.shape[-1]), x.dtype)
    return jnp.where(x >= 0, x, slope * x)


class _Resample(nn.Module):
  """Fields of the 2x2x2 stride-2 layers: features O, use_bias, dtype (None: from the inputs),
  param_dtype."""
  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32


class DownConv(_Resample):
  """2x2x2 convolution with stride 2 (no padding), as a space-to-depth and one matmul.

  `y[b, i, j, k, o] = bias[o] + sum_{p,q,r in {0,1}} sum_c x[b, 2i+p, 2j+q, 2k+r, c]
  * kernel[p, q, r, c, o]`, which is what `nn.Conv(features, (2, 2, 2), strides=2,
  padding='VALID')` computes with the same `kernel` `[2, 2, 2, C, O]` and `bias` `[O]`.

  Fields: `_Resample`'s (features O, use_bias, dtype, param_dtype).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x` `[B, D, H, W, C]` (D, H, W even) -> `[B, D/2, H/2, W/2, features]`."""
    if any(s % 2 for s in x.shape[1:4]):
      raise ValueError(f"DownConv needs even spatial sizes; got input shape {x.shape} "
                       "([B, D, H, W, C]).")
    kernel, bias = _kernel_and_bias(self, (2, 2, 2, x.shape[-1], self.features), self.use_bias)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return _add_bias(resample.space_to_depth_matmul(x, kernel), bias)


class UpConv(_Resample):
  """2x2x2 transposed convolution with stride 2, as a Dense layer and a depth-to-space.

  Formula, with `kernel` `[2, 2, 2, C, O]` and `bias` `[O]`:
  `y[b, 2i+p, 2j+q, 2k+s, o] = bias[o] + sum_c x[b, i, j, k, c] * kernel[1-p, 1-q, 1-s, c, o]`.
  This is exactly `nn.ConvTranspose(O, (2, 2, 2), strides=(2, 2, 2), padding='VALID')` with the
  same parameters (flax's transposed convolution flips the kernel; PyTorch's `ConvTranspose3d`
  weight `[C, O, 2, 2, 2]` corresponds to `kernel[p, q, s, c, o] = weight[c, o, 1-p, 1-q, 1-s]`).
  Every output voxel receives exactly one input voxel, so the layer is the matmul
  `x @ K` with `K` `[C, 8 * O]` followed by `depth_to_space`. Parameters: `8*C*O + O`.

  Fields: `_Resample`'s (features O, use_bias, dtype, param_dtype).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> `[B, 2D, 2H, 2W, features]`."""
    c = x.shape[-1]
    # Same name, shape and initialiser as nn.ConvTranspose, so the two are interchangeable.
    kernel, bias = _kernel_and_bias(self, (2, 2, 2, c, self.features), self.use_bias)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    # Flip to flax's transposed-convolution convention, then lay out as [C, (p, q, s, O)].
    k = kernel[::-1, ::-1, ::-1].transpose(3, 0, 1, 2, 4).reshape(c, 8 * self.features)
    return _add_bias(resample.matmul_depth_to_space(x, k), bias)


class ConvBNReLU(nn.Module):
  """Convolution (SAME padding, stride 1) -> BatchNorm -> ReLU.

  The convolution is submodule `conv` with parameters `kernel` `[*kernel_size, C, features]` and
  `bias` `[features]`, whichever `conv_method` runs it, so checkpoints do not depend on it; the
  BatchNorm is submodule `bn`.

  Attributes:
    features: output channels.
    kernel_size: convolution window, (3, 3, 3) by default (odd sizes).
    use_bias: convolution bias (PyTorch's `Conv3d` default; redundant before BatchNorm but kept so
      the parameter count matches the reference implementations).
    momentum: BatchNorm running-average decay (flax convention: 0.9 is PyTorch's momentum 0.1).
    epsilon: BatchNorm variance epsilon (PyTorch's 1e-5).
    conv_method: a `Conv3D` method ('auto', the default, is the fastest on CPU; 'plain', the old
      name of `nn.Conv`, is 'xla'; same values up to float rounding).
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
    method = conv_lib.canonical_method(self.conv_method, "ConvBNReLU conv_method")
    x = Conv3D(self.features, tuple(self.kernel_size), use_bias=self.use_bias, method=method,
               dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)
    return BatchNorm("relu", self.momentum, self.epsilon, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="bn")(x, use_running_average=not train)


class SamePaddedModel(nn.Module):
  """A network whose logits have its input's spatial size (same-padded convolutions)."""
  margin: ClassVar[int] = 0

  def output_shape(self, input_spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Spatial size of the logits for an input of spatial size `input_spatial`: the same."""
    return tuple(input_spatial)


def crop_margin(x: jax.Array, margin: int) -> jax.Array:
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
