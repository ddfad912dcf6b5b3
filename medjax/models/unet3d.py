"""The 3D U-Net of Çiçek et al., 2016 ("3D U-Net: Learning Dense Volumetric Segmentation from
Sparse Annotation", MICCAI), channels-last.

With `base_features` F = 32 and `num_levels` = 4 (the paper):

  encoder level 0: conv in->F,    conv F->2F       (skip 2F = 64),  2x2x2 max-pool
  encoder level 1: conv 2F->2F,   conv 2F->4F      (skip 4F = 128), max-pool
  encoder level 2: conv 4F->4F,   conv 4F->8F      (skip 8F = 256), max-pool
  bottom level 3:  conv 8F->8F,   conv 8F->16F     (512)
  decoder level 2: up-conv 16F->16F, concat skip -> 24F, conv 24F->8F, conv 8F->8F
  decoder level 1: up-conv 8F->8F,   concat skip -> 12F, conv 12F->4F, conv 4F->4F
  decoder level 0: up-conv 4F->4F,   concat skip -> 6F,  conv 6F->2F,  conv 2F->2F
  1x1x1 conv 2F -> num_classes

With `deep_supervision` (nnU-Net's), each lower decoder level l = 1 .. num_levels - 2 (at 1/2^l
of the input resolution; not the bottom level) also has its own 1x1x1 classifier
`ds_classifier_{l}`, and a training call returns all the logits, full resolution first. The main
path's parameters keep their names, so the option only adds parameters.

Every 3x3x3 convolution (SAME padding, with bias) is followed by BatchNorm and ReLU. The channel
count doubles before each max-pool (the paper's trick against bottlenecks) and the up-convolution
keeps its channel count. At 2 input channels, 4 classes and F = 32 the model has 19,074,724
parameters (convolution kernels and biases, BatchNorm scales and offsets).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models import layers
from medjax.models.ops import pooling

Dtype = Any


class _Step(nn.Module):
  """Two `ConvBNReLU` at one resolution (`conv1`, `conv2`).

  Attributes:
    features: channels of the first convolution.
    conv_method: `layers.ConvBNReLU.conv_method`.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  features: int
  conv_method: str = "auto"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  def _convs(self, x, second_features: int, train: bool) -> jax.Array:
    kw = dict(conv_method=self.conv_method, dtype=self.dtype, param_dtype=self.param_dtype)
    x = layers.ConvBNReLU(self.features, name="conv1", **kw)(x, train=train)
    return layers.ConvBNReLU(second_features, name="conv2", **kw)(x, train=train)


class EncoderStep(_Step):
  """Two `ConvBNReLU` at one resolution: `in -> features -> 2 * features` (Çiçek et al.: the
  second convolution doubles the channels)."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> `[B, D, H, W, 2 * features]` (not pooled: that is the skip)."""
    return self._convs(x, 2 * self.features, train)


class DecoderStep(_Step):
  """Up-convolution (channels kept), concatenation of the skip, two `ConvBNReLU` to `features`."""

  @nn.compact
  def __call__(self, x: jax.Array, skip: jax.Array, train: bool) -> jax.Array:
    """`x` `[B, D, H, W, C]`, `skip` `[B, 2D, 2H, 2W, S]` -> `[B, 2D, 2H, 2W, features]`."""
    x = layers.UpConv(x.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype,
                      name="upconv")(x)
    # The concatenation [skip, x] along the channels, which the convolution reads piece by piece
    # instead of forming it (192 MB at 64^3 with base 32, and as much for its gradient).
    return self._convs([skip.astype(x.dtype), x], self.features, train)


class UNet3D(nn.Module):
  """3D U-Net (Çiçek et al. 2016) with BatchNorm, for NDHWC volumes.

  Attributes:
    num_classes: output channels (logits).
    base_features: channels of the first convolution (the paper: 32).
    num_levels: resolution steps including the bottom one (the paper: 4, i.e. 3 poolings). Spatial
      sizes must be divisible by `2 ** (num_levels - 1)`.
    conv_method: how the 3x3x3 convolutions run: 'auto' (default; `ops.conv.conv3d` through XLA's
      2D convolution, Winograd along depth, the fastest on CPU), another `ops.conv.METHODS` entry,
      or an old name ('plain': `nn.Conv`'s XLA convolution = 'xla'). Same parameters and values
      (up to float rounding) whichever is chosen.
    remat: recompute each encoder/decoder step's activations in the backward pass instead of
      keeping them (`nn.remat`), for large crops on accelerators; same values and parameters.
      On XLA:CPU (jaxlib 0.10.2) it did not save memory when measured (the 64^3 paper train
      step needed 1550 MB of XLA temporaries with it against 1270 MB without, before the custom
      backward passes of `layers` brought the latter to 752 MB): XLA's CPU pipeline merges the
      recomputation back into the forward pass.
    deep_supervision: nnU-Net's deep supervision: with `train=True` the call returns a tuple of
      float32 logits, `[B, D, H, W, K]` then one `[B, D/2^l, H/2^l, W/2^l, K]` per lower decoder
      level l = 1 .. num_levels - 2 (a 1x1x1 classifier on that level's decoder output); with
      `train=False` only the full-resolution logits, so inference is unchanged. The heads exist
      (and are initialised) in both modes. Needs num_levels >= 3.
    dtype: computation dtype (e.g. `jnp.bfloat16`); the logits are always float32.
    param_dtype: parameter dtype.
  """
  num_classes: int
  base_features: int = 32
  num_levels: int = 4
  conv_method: str = "auto"
  remat: bool = False
  deep_supervision: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array | tuple[jax.Array, ...]:
    """`x` `[B, D, H, W, C]` -> float32 logits `[B, D, H, W, num_classes]` (with
    `deep_supervision` and `train=True`: the tuple of logits described in the class docstring).

    `train=True` uses batch statistics in BatchNorm and updates the running ones (call `apply`
    with `mutable=['batch_stats']`).
    """
    if x.ndim != 5:
      raise ValueError(f"UNet3D expects input [B, D, H, W, C]; got shape {x.shape}.")
    if self.num_levels < 1:
      raise ValueError(f"UNet3D num_levels must be >= 1; got {self.num_levels}.")
    if self.deep_supervision and self.num_levels < 3:
      raise ValueError(
          f"UNet3D deep_supervision needs num_levels >= 3 (a decoder level below the full "
          f"resolution); got num_levels={self.num_levels}.")
    factor = 2 ** (self.num_levels - 1)
    if any(s % factor for s in x.shape[1:4]):
      raise ValueError(f"UNet3D with num_levels={self.num_levels} needs spatial sizes divisible "
                       f"by {factor}; got input shape {x.shape} ([B, D, H, W, C]).")
    kw = dict(conv_method=self.conv_method, dtype=self.dtype, param_dtype=self.param_dtype)
    # `train` is a Python bool that picks the BatchNorm mode, hence static under remat (the
    # argument index counts `self`).
    encoder = nn.remat(EncoderStep, static_argnums=(2,)) if self.remat else EncoderStep
    decoder = nn.remat(DecoderStep, static_argnums=(3,)) if self.remat else DecoderStep
    x = x.astype(self.dtype)
    skips = []
    for level in range(self.num_levels - 1):
      x = encoder(self.base_features * 2**level, name=f"encoder_{level}", **kw)(x, train)
      skips.append(x)
      x = pooling.max_pool_2x(x)
    bottom = self.num_levels - 1
    x = encoder(self.base_features * 2**bottom, name=f"encoder_{bottom}", **kw)(x, train)
    lower = []  # deep supervision: logits of decoder levels num_levels - 2 .. 1
    for level in reversed(range(self.num_levels - 1)):
      x = decoder(2 * self.base_features * 2**level, name=f"decoder_{level}", **kw)(
          x, skips[level], train)
      if self.deep_supervision and level > 0:
        lower.append(self._classifier(x, f"ds_classifier_{level}"))
    logits = self._classifier(x, "classifier")
    if self.deep_supervision and train:
      return (logits, *reversed(lower))
    return logits

  def _classifier(self, x: jax.Array, name: str) -> jax.Array:
    # The 1x1x1 classifier is cheap, so it runs in float32 for well-resolved logits.
    return layers.Conv3D(self.num_classes, (1, 1, 1), method=self.conv_method, dtype=jnp.float32,
                         param_dtype=self.param_dtype, name=name)(x.astype(jnp.float32))
