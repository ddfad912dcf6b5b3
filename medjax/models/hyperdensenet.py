"""HyperDenseNet (Dolz et al., "HyperDense-Net: A hyper-densely connected CNN for multi-modal
image segmentation", IEEE TMI 2018), as MedicalZoo builds it (`HYPERDENSENET`).

One path per imaging modality (input channel). Each path is a chain of 3x3x3 *valid*
convolutions (growth 25, 25, 25, 50, 50, 50, 75, 75, 75) in pre-activation order
(BatchNorm -> PReLU -> conv with bias; the first layer has no BatchNorm). Connections are
hyper-dense: the input of layer k+1 in path p is the centre-cropped input of layer k in path p,
then the output of layer k in path p, then the outputs of layer k in the other paths in modality
order, so every layer sees every earlier layer of every path (with a path-specific order, as in
the paper). After the last layer the per-path stacks are concatenated and passed through 1x1x1
convolutions with bias (400, 200, 150 channels, no non-linearity between them, as in
MedicalZoo and the authors' PyTorch port) and a 1x1x1 classifier.

Output size: every valid 3x3x3 convolution removes one voxel at each end of each axis, so
with L = `len(growth)` layers (9) the logits for an input of spatial size (D, H, W) have size
(D - 2L, H - 2L, W - 2L): 46^3 for 64^3, 9^3 for the paper's 27^3 patches. They are aligned with
the input's centre: logit voxel (i, j, k) belongs to input voxel (i + L, j + L, k + L). Use
`HyperDenseNet.margin` (L per side) or `output_shape()` to centre-crop labels or pad inputs.

Parameter count with 2 input channels and 4 classes: 10,361,922, as MedicalZoo's
`HyperDenseNet_2Mod` at its 2022 head (an older revision appended a 3x3x3 stride-3 transposed
convolution, +436 parameters, that the paper does not have; it is not built here). With 3
input channels the same code builds MedicalZoo's 3-path `HyperDenseNet`.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models import layers

Dtype = Any

GROWTH = (25, 25, 25, 50, 50, 50, 75, 75, 75)
FC_FEATURES = (400, 200, 150)


class HyperDenseNet(nn.Module):
  """HyperDenseNet over `[B, D, H, W, C]`, one path per channel; logits are 2 * margin smaller.

  Attributes:
    num_classes: output channels K (logits).
    growth: output channels of the valid 3x3x3 convolutions of each path (9 layers).
    fc_features: widths of the 1x1x1 convolutions before the classifier.
    dropout_rate: dropout before each 3x3x3 convolution (MedicalZoo: 0).
    conv_method: how the valid 3x3x3 convolutions run (`layers.Conv3D.method`): 'auto' (the
      fastest measured on CPU, XLA's 3D convolution elsewhere), another `ops.conv.METHODS` entry
      or an old name ('plain', 'xla3d': `nn.Conv`'s). Same parameters and values.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  num_classes: int
  growth: Sequence[int] = GROWTH
  fc_features: Sequence[int] = FC_FEATURES
  dropout_rate: float = 0.0
  conv_method: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @property
  def margin(self) -> int:
    """Voxels lost at each end of each spatial axis: one per valid 3x3x3 convolution."""
    return len(self.growth)

  def output_shape(self, input_spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Spatial size of the logits for an input of spatial size `input_spatial`.

    `(D, H, W) -> (D - 2 * margin, H - 2 * margin, W - 2 * margin)`; raises `ValueError` if
    that is not positive.
    """
    out = tuple(int(s) - 2 * self.margin for s in input_spatial)
    if any(s < 1 for s in out):
      raise ValueError(f"HyperDenseNet with {self.margin} valid 3x3x3 layers needs every "
                       f"spatial size >= {2 * self.margin + 1}; got {tuple(input_spatial)}.")
    return out

  def _conv_block(self, x: jax.Array, features: int, train: bool, name: str,
                  use_bn: bool) -> jax.Array:
    act = layers.PReLU(1, param_dtype=self.param_dtype, name=f"{name}_act")
    if use_bn:  # BatchNorm + PReLU as one function, which keeps only x for the backward pass
      x = layers.BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype,
                           name=f"{name}_bn")(x, use_running_average=not train, prelu=act)
    else:
      x = act(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    return layers.Conv3D(features, (3, 3, 3), padding="VALID", method=self.conv_method,
                         dtype=self.dtype, param_dtype=self.param_dtype, name=name)(x)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> float32 logits `[B, D - 2m, H - 2m, W - 2m, K]`, m = margin."""
    if x.ndim != 5:
      raise ValueError(f"HyperDenseNet expects [B, D, H, W, C] input; got shape {x.shape}.")
    self.output_shape(x.shape[1:4])
    x = jnp.asarray(x, self.dtype)
    num_paths = x.shape[-1]

    # stacks[p] `[B, d, h, w, c_k]`: path p's input to the next layer.
    stacks: list[jax.Array] = [x[..., p:p + 1] for p in range(num_paths)]
    for k, features in enumerate(self.growth):
      outputs = [self._conv_block(stacks[p], features, train, f"path{p + 1}_conv{k + 1}",
                                  use_bn=k > 0) for p in range(num_paths)]
      # Path p's next input: its own input cropped to the new size (except the single modality
      # that layer 1 sees), its own output, then the other paths' outputs in modality order.
      stacks = [jnp.concatenate(
          ([layers.crop_margin(stacks[p], 1)] if k > 0 else []) + [outputs[p]]
          + [outputs[q] for q in range(num_paths) if q != p], axis=-1) for p in range(num_paths)]

    y = jnp.concatenate(stacks, axis=-1)
    for i, f in enumerate(self.fc_features):
      y = layers.Conv3D(f, (1, 1, 1), method=self.conv_method, dtype=self.dtype,
                        param_dtype=self.param_dtype, name=f"fully{i + 1}")(y)
    y = layers.Conv3D(self.num_classes, (1, 1, 1), method=self.conv_method, dtype=self.dtype,
                      param_dtype=self.param_dtype, name="final")(y)
    return y.astype(jnp.float32)
