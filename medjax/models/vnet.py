"""V-Net (Milletari, Navab and Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric
Medical Image Segmentation", 3DV 2016), as MedicalZoo builds it (`VNET`, `VNET2`).

The layout follows the paper: a compression path of stages that each halve the resolution with a
2x2x2 stride-2 convolution and double the channels, then apply 5x5x5 convolutions with a residual
connection around them; a decompression path of 2x2x2 stride-2 transposed convolutions whose
output is concatenated with the matching compression stage, followed again by residual 5x5x5
convolutions; PReLU non-linearities. Like MedicalZoo (which takes it from mattmacy/vnet.pytorch)
it differs from the paper in three ways, all kept here so the parameter counts match:

* BatchNorm after every convolution (the paper has none);
* fewer 5x5x5 convolutions per stage: counting the input stage, 1, 1, 2, 3, 2 on the way down
  (16, 32, 64, 128, 256 channels) and 2, 2, 1, 1 on the way up, where the paper's Fig. 1 has
  1, 2, 3, 3, 3 and 3, 3, 2, 1 (the input stage's residual is the input repeated along the
  channels, as in the paper);
* the output block is a 5x5x5 convolution to `num_classes` channels + BatchNorm + PReLU, then a
  1x1x1 convolution (MedicalZoo issue #30: the paper has only the 1x1x1 convolution). With
  `paper_output_block=True` the output block is the paper's single 1x1x1 convolution
  (32 -> K with bias); for 2 input channels and K = 4 classes that removes
  16,000 + 4 (5x5x5 conv) + 8 (BN) + 4 (PReLU) + 20 (1x1x1 conv) and adds 132, i.e. 45,613,956 ->
  45,598,052 parameters for `VNET` and 12,249,988 -> 12,234,084 for `VNET2`.

MedicalZoo also applies channel dropout (`Dropout3d`, p = 0.5) to every skip connection and to the
inputs of the two deepest stages on each side; `dropout_rate` controls all of them and needs a
`'dropout'` PRNG stream when `train=True` (`model.apply(..., rngs={'dropout': key})`).

Parameter counts with 2 input channels and 4 classes (PyTorch convention: BatchNorm scale and
bias; per-channel PReLU slopes; running statistics not counted): `VNet` 45,613,956 and
`VNetLight` 12,249,988, as MedicalZoo's `VNet(elu=False)` / `VNetLight(elu=False)`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models import layers

Dtype = Any

# Down path, per compression stage l = 1..4 (base_features * 2**l channels): 5x5x5 convolutions
# and whether its input is dropped out. Up path, per decompression stage that returns to
# resolution level l = 0..3: 5x5x5 convolutions and whether its input from below is dropped out
# (its skip input always is, as in MedicalZoo).
_DOWN_CONVS = (1, 2, 3, 2)
_DOWN_DROPOUT = (False, False, True, True)
_UP_CONVS = (1, 1, 2, 2)
_UP_DROPOUT = (False, False, True, True)


class VNet(layers.SamePaddedModel):
  """V-Net for `[B, D, H, W, C]` volumes; D, H, W must be multiples of `2**depth`.

  Attributes:
    num_classes: output channels K (logits, no softmax).
    depth: number of down-sampling stages: 4 for MedicalZoo's `VNet`, 3 for `VNetLight`.
    base_features: channels of the input stage (16 in the paper and MedicalZoo); stage l has
      `base_features * 2**l`.
    activation: 'prelu' (per-channel slopes; what MedicalZoo's `create_model` builds) or 'elu'.
    dropout_rate: rate of the channel dropout (MedicalZoo: 0.5).
    paper_output_block: False for MedicalZoo's output block (5x5x5 conv + BN + act + 1x1x1
      conv), True for the paper's single 1x1x1 convolution. See the module docstring.
    conv_method: how the 5x5x5 convolutions run (`layers.Conv3D`): 'auto' (the fastest measured
      on CPU, XLA's 3D convolution elsewhere), another `ops.conv.METHODS` entry, or an old name
      ('stack2d' = 'fold_in', 'xla3d' = 'xla'). Same parameters and results.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  num_classes: int
  depth: int = 4
  base_features: int = 16
  activation: str = "prelu"
  dropout_rate: float = 0.5
  paper_output_block: bool = False
  conv_method: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _act(self, channels: int, name: str):
    if self.activation == "prelu":
      return layers.PReLU(channels, param_dtype=self.param_dtype, name=name)
    if self.activation == "elu":
      return nn.elu
    raise ValueError(f"VNet activation must be 'prelu' or 'elu'; got {self.activation!r}.")

  def _conv5(self, features: int, name: str) -> layers.Conv3D:
    return layers.Conv3D(features, (5, 5, 5), padding="SAME", method=self.conv_method,
                         dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  def _bn(self, train: bool, name: str):
    bn = layers.BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    return lambda x: bn(x, use_running_average=not train)

  def _bn_act(self, x: jax.Array, train: bool, bn_name: str, act_name: str) -> jax.Array:
    """act(BN(x)); with PReLU as one function (`layers.BatchNorm(prelu=)`), whose backward pass
    keeps x only, not also the normalised copy."""
    bn = layers.BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=bn_name)
    act = self._act(x.shape[-1], act_name)
    if isinstance(act, layers.PReLU):
      return bn(x, use_running_average=not train, prelu=act)
    return act(bn(x, use_running_average=not train))

  def _channel_dropout(self, x: jax.Array, train: bool) -> jax.Array:
    # PyTorch's Dropout3d zeroes whole channels of each sample: one draw per (B, C).
    return nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2, 3))(x, deterministic=not train)

  def _residual_convs(self, x: jax.Array, residual: jax.Array, num_convs: int, train: bool,
                      prefix: str) -> jax.Array:
    """`num_convs` x (5x5x5 conv + BN + act) on `x`, then act(result + residual)."""
    c = x.shape[-1]
    out = x
    for i in range(num_convs):
      out = self._conv5(c, f"{prefix}_conv{i}")(out)
      out = self._bn_act(out, train, f"{prefix}_bn{i}", f"{prefix}_act{i}")
    return self._act(c, f"{prefix}_act_res")(out + residual)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> float32 logits `[B, D, H, W, num_classes]`.

    `train=True` uses batch statistics in BatchNorm (call `apply` with
    `mutable=['batch_stats']`) and channel dropout (`rngs={'dropout': key}`).
    """
    if x.ndim != 5:
      raise ValueError(f"VNet expects [B, D, H, W, C] input; got shape {x.shape}.")
    if not 1 <= self.depth <= 4:
      raise ValueError(f"VNet depth must be 1..4 (MedicalZoo: 4 or 3); got {self.depth}.")
    factor = 2**self.depth
    if any(s % factor for s in x.shape[1:4]):
      raise ValueError(f"VNet with depth={self.depth} needs D, H, W divisible by {factor}; got "
                       f"input shape {x.shape}.")
    x = jnp.asarray(x, self.dtype)
    base = self.base_features

    # Input stage: act(BN(conv5(x)) + x repeated along channels to `base` channels). MedicalZoo's
    # `x.repeat(1, base // C, ...)` only works when C divides `base`; tiling and cutting to `base`
    # channels is the same in that case and also works otherwise.
    out = self._conv5(base, "in_conv")(x)
    out = self._bn(train, "in_bn")(out)
    reps = -(-base // x.shape[-1])
    tiled = jnp.tile(x, (1, 1, 1, 1, reps))[..., :base]
    out = self._act(base, "in_act")(out + tiled)

    skips = [out]
    for level in range(1, self.depth + 1):
      features = base * 2**level
      down = layers.DownConv(features, dtype=self.dtype, param_dtype=self.param_dtype,
                             name=f"down{level}_conv")(out)
      down = self._bn_act(down, train, f"down{level}_bn", f"down{level}_act")
      inner = self._channel_dropout(down, train) if _DOWN_DROPOUT[level - 1] else down
      # As in MedicalZoo the residual is the stage input before dropout.
      out = self._residual_convs(inner, down, _DOWN_CONVS[level - 1], train, f"down{level}")
      skips.append(out)

    for level in range(self.depth - 1, -1, -1):
      skip = skips[level]
      half = base * 2**level  # channels of the up-convolution output and of the skip
      if _UP_DROPOUT[level]:
        out = self._channel_dropout(out, train)
      skip = self._channel_dropout(skip, train)
      up = layers.UpConv(half, dtype=self.dtype, param_dtype=self.param_dtype,
                         name=f"up{level}_conv")(out)
      up = self._bn_act(up, train, f"up{level}_bn", f"up{level}_act")
      cat = jnp.concatenate([up, skip], axis=-1)
      out = self._residual_convs(cat, cat, _UP_CONVS[level], train, f"up{level}")

    if self.paper_output_block:
      out = layers.Conv3D(self.num_classes, (1, 1, 1), method=self.conv_method,
                          dtype=self.dtype, param_dtype=self.param_dtype, name="out_conv")(out)
    else:
      out = self._conv5(self.num_classes, "out_conv5")(out)
      out = self._bn_act(out, train, "out_bn", "out_act")
      out = layers.Conv3D(self.num_classes, (1, 1, 1), method=self.conv_method,
                          dtype=self.dtype, param_dtype=self.param_dtype, name="out_conv1")(out)
    return out.astype(jnp.float32)


class VNetLight(VNet):
  """MedicalZoo's `VNetLight` (`VNET2`): `VNet` without the deepest stage (`depth=3`).

  12,249,988 parameters with 2 input channels and 4 classes; D, H, W must be multiples of 8.
  """
  depth: int = 3
