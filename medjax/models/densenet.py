"""MedicalZoo's 3D DenseNets (`DENSENET1`, `DENSENET2`, `DENSENET3`).

MedicalZoo builds these from the single-path and disentangled-path variants that the HyperDenseNet
paper (Dolz et al., "HyperDense-Net: A hyper-densely connected CNN for multi-modal image
segmentation", IEEE TMI 2018) compares against. Unlike HyperDenseNet they use same-padded 3x3x3
convolutions, so the logits have the input's spatial size.

Building blocks, as in MedicalZoo's `Densenet3D.py`:

* dense layer: BatchNorm -> ReLU -> 3x3x3 conv (same padding, no bias) -> dropout, and the
  output is concatenated to the layer's input;
* dense block: a chain of dense layers with the given growth (output channels per layer),
  so a block on C channels returns `C + sum(growth)` channels;
* head: three 1x1x1 convolutions (400, 200, 150 channels, no bias) with dropout 0.5 after each
  and, as in MedicalZoo, no non-linearity between them; then a 1x1x1 classifier (no bias).

Models (parameter counts for 2 input channels and 4 classes):

* `SinglePathDenseNet` (`DENSENET1`): all modalities stacked as channels into one path of
  9 dense layers (growth 25, 25, 25, 50, 50, 50, 75, 75, 75). 2,697,811, as MedicalZoo.
* `DualPathDenseNet` (`DENSENET2`): one path per modality (8 dense layers, growth 25, 25, 50, 50,
  50, 75, 75, 75, each followed by the head without classifier), late fusion by concatenating the
  150-channel features (or summing them, `fusion='sum'`) and one classifier. MedicalZoo sizes the
  first head convolution of each path for 503 input channels although the path produces
  1 + 425 = 426, so its forward pass fails with a channel mismatch; here every convolution takes
  the channels it actually receives. Its 4,837,382 parameters also include a 150 -> 4 classifier
  in each path that its forward pass never uses. Fixed: 4,837,382 - 2 x (503 - 426) x 400
  (first head convolutions) - 2 x 600 (unused path classifiers) = 4,774,582.
* `DualSingleDenseNet` (`DENSENET3`): one dense layer (growth 25) per modality, whose outputs
  (each 1 + 25 channels) are concatenated (early fusion) into one path of 8 dense layers and the
  head. 2,995,086, as MedicalZoo. MedicalZoo's forward pass applies the first modality's early
  layer to both modalities, leaving the second one unused; here each modality has its own, which
  is what the parameter count (and the paper's disentangled design) has.

With `train=True`, BatchNorm uses batch statistics (`apply(..., mutable=['batch_stats'])`) and
dropout needs a `'dropout'` PRNG stream (`rngs={'dropout': key}`). Logits are float32 whatever
`dtype` the layers compute in.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models import layers

Dtype = Any

# Growth (new channels per dense layer) of MedicalZoo's `_HyperDenseBlock` (9 layers) and of
# `_HyperDenseBlockEarlyFusion` (8 layers).
GROWTH_9 = (25, 25, 25, 50, 50, 50, 75, 75, 75)
GROWTH_8 = (25, 25, 50, 50, 50, 75, 75, 75)
HEAD_FEATURES = (400, 200, 150)


class DenseLayer(nn.Module):
  """BN -> ReLU -> 3x3x3 conv (no bias) -> dropout, concatenated to the input.

  Attributes:
    growth: channels the layer adds.
    dropout_rate: dropout rate on the new channels.
    conv_method: `layers.Conv3D.method` of the 3x3x3 convolution.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  growth: int
  dropout_rate: float = 0.0
  conv_method: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> `[B, D, H, W, C + growth]`."""
    y = layers.BatchNorm("relu", dtype=self.dtype, param_dtype=self.param_dtype,
                         name="bn")(x, use_running_average=not train)
    y = layers.Conv3D(self.growth, (3, 3, 3), padding="SAME", use_bias=False,
                      method=self.conv_method, dtype=self.dtype, param_dtype=self.param_dtype,
                      name="conv")(y)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    return jnp.concatenate([x, y], axis=-1)


class DensePath(nn.Module):
  """A dense block and the 1x1x1 head, without the classifier.

  Attributes:
    growth: output channels of each dense layer.
    head_features: channels of the 1x1x1 head convolutions.
    dropout_rate: dropout in the dense layers.
    head_dropout_rate: dropout after each head convolution (MedicalZoo: 0.5).
    conv_method: `layers.Conv3D.method` of the 3x3x3 convolutions.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  growth: Sequence[int] = GROWTH_9
  head_features: Sequence[int] = HEAD_FEATURES
  dropout_rate: float = 0.0
  head_dropout_rate: float = 0.5
  conv_method: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> features `[B, D, H, W, head_features[-1]]`."""
    for i, g in enumerate(self.growth):
      x = DenseLayer(g, self.dropout_rate, self.conv_method, self.dtype, self.param_dtype,
                     name=f"dense{i + 1}")(x, train=train)
    for i, f in enumerate(self.head_features):
      x = layers.Conv3D(f, (1, 1, 1), use_bias=False, method=self.conv_method, dtype=self.dtype,
                        param_dtype=self.param_dtype, name=f"head{i + 1}")(x)
      x = nn.Dropout(self.head_dropout_rate)(x, deterministic=not train)
    return x


class _DenseNet(layers.SamePaddedModel):
  """What the three DenseNets share: their fields, same-padded output, the dense path and the
  1x1x1 classifier (no bias). Logits are float32.

  Attributes:
    num_classes: output channels K (logits).
    growth: dense-layer growths of the (shared or each) path.
    head_features: 1x1x1 head widths (400, 200, 150).
    dropout_rate: dense-layer dropout.
    head_dropout_rate: head dropout (0.5).
    conv_method: how the 3x3x3 convolutions run (`layers.Conv3D.method`): 'auto' (the fastest
      measured on CPU, XLA's 3D convolution elsewhere), another `ops.conv.METHODS` entry or an
      old name ('plain', 'xla3d': `nn.Conv`'s XLA convolution). Same parameters and values.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  num_classes: int
  growth: Sequence[int] = GROWTH_9
  head_features: Sequence[int] = HEAD_FEATURES
  dropout_rate: float = 0.1
  head_dropout_rate: float = 0.5
  conv_method: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _input(self, x: jax.Array) -> jax.Array:
    if x.ndim != 5:
      raise ValueError(f"{type(self).__name__} expects [B, D, H, W, C] input; got shape "
                       f"{x.shape}.")
    return jnp.asarray(x, self.dtype)

  def _path(self, name: str) -> DensePath:
    return DensePath(tuple(self.growth), tuple(self.head_features), self.dropout_rate,
                     self.head_dropout_rate, self.conv_method, self.dtype, self.param_dtype,
                     name=name)

  def _classify(self, y: jax.Array) -> jax.Array:
    return layers.Conv3D(self.num_classes, (1, 1, 1), use_bias=False, method=self.conv_method,
                         dtype=self.dtype, param_dtype=self.param_dtype,
                         name="classifier")(y).astype(jnp.float32)


class SinglePathDenseNet(_DenseNet):
  """`DENSENET1`: one dense path over all modalities as channels.

  Fields as `_DenseNet`: growth `GROWTH_9` (MedicalZoo: 9 layers), dense-layer dropout 0.1
  (MedicalZoo's default).
  """

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> float32 logits `[B, D, H, W, num_classes]`."""
    return self._classify(self._path("path")(self._input(x), train=train))


class DualPathDenseNet(_DenseNet):
  """`DENSENET2`: one dense path per modality (input channel), late fusion.

  Fields as `_DenseNet`, with growth `GROWTH_8` for each path (MedicalZoo, 2 modalities; it uses
  `GROWTH_9` for 3 modalities), dense-layer dropout 0 (MedicalZoo's default), and
  fusion: 'concat' (MedicalZoo default; classifier on C * 150 channels) or 'sum' (on 150).
  """
  growth: Sequence[int] = GROWTH_8
  dropout_rate: float = 0.0
  fusion: str = "concat"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> float32 logits `[B, D, H, W, num_classes]`."""
    x = self._input(x)
    if self.fusion not in ("concat", "sum"):
      raise ValueError(f"DualPathDenseNet fusion must be 'concat' or 'sum'; got {self.fusion!r}.")
    features = [self._path(f"path{m + 1}")(x[..., m:m + 1], train=train)
                for m in range(x.shape[-1])]
    y = jnp.concatenate(features, axis=-1) if self.fusion == "concat" else sum(features)
    return self._classify(y)


class DualSingleDenseNet(_DenseNet):
  """`DENSENET3`: one dense layer per modality, early fusion into one dense path.

  Fields as `_DenseNet`, with growth `GROWTH_8` for the shared path, dropout 0.1 in all dense
  layers (MedicalZoo's `create_model`), and early_growth: channels of each modality's first
  dense layer (25).
  """
  growth: Sequence[int] = GROWTH_8
  early_growth: int = 25

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """`x` `[B, D, H, W, C]` -> float32 logits `[B, D, H, W, num_classes]`."""
    x = self._input(x)
    early = [
        DenseLayer(self.early_growth, self.dropout_rate, self.conv_method, self.dtype,
                   self.param_dtype, name=f"early{m + 1}")(x[..., m:m + 1], train=train)
        for m in range(x.shape[-1])
    ]
    return self._classify(self._path("path")(jnp.concatenate(early, axis=-1), train=train))
