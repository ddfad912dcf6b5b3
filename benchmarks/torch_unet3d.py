"""The PyTorch twin of `medjax.models.unet3d.UNet3D`, shared by the benchmarks.

`build(base_features)` makes the module (NCDHW, layer for layer medjax's UNet3D: Conv3d with bias,
BatchNorm3d(eps 1e-5, momentum 0.1), ReLU, max-pool, ConvTranspose3d up-convolution, 1x1x1
classifier); `copy_weights(model, flat)` loads medjax variables flattened to `params/...` and
`batch_stats/...` keys, so the two networks compute the same function; `dice_loss` is medjax's
soft Dice in torch, the loss of the benchmarks' train steps. torch is imported lazily:
a parent process that only imports this module never loads it.
"""

import numpy as np

NUM_CLASSES = 4
NUM_MODALITIES = 2


def build(base_features: int, num_levels: int = 4):
  """`UNet3DTorch`, NCDHW, layer for layer medjax's UNet3D (torch imported lazily)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=True),
                         nn.BatchNorm3d(cout, eps=1e-5, momentum=0.1), nn.ReLU(inplace=True))

  class UNet3DTorch(nn.Module):
    """Çiçek et al. 3D U-Net with BatchNorm (medjax.models.unet3d.UNet3D's twin)."""

    def __init__(self):
      super().__init__()
      f = base_features
      self.encoders = nn.ModuleList()
      cin = NUM_MODALITIES
      for level in range(num_levels):
        width = f * 2**level
        self.encoders.append(nn.Sequential(conv_bn_relu(cin, width),
                                           conv_bn_relu(width, 2 * width)))
        cin = 2 * width
      self.upconvs, self.decoders = nn.ModuleList(), nn.ModuleList()
      for level in reversed(range(num_levels - 1)):
        width = 2 * f * 2**level
        self.upconvs.append(nn.ConvTranspose3d(cin, cin, 2, stride=2))
        self.decoders.append(nn.Sequential(conv_bn_relu(cin + width, width),
                                           conv_bn_relu(width, width)))
        cin = width
      self.classifier = nn.Conv3d(cin, NUM_CLASSES, 1)

    def forward(self, x):
      skips = []
      for encoder in self.encoders[:-1]:
        x = encoder(x)
        skips.append(x)
        x = torch.nn.functional.max_pool3d(x, 2)
      x = self.encoders[-1](x)
      for upconv, decoder, skip in zip(self.upconvs, self.decoders, reversed(skips)):
        x = decoder(torch.cat([skip, upconv(x)], dim=1))
      return self.classifier(x)

  return UNet3DTorch()


def copy_weights(model, flat: dict[str, np.ndarray], num_levels: int = 4) -> None:
  """Copies medjax UNet3D variables (keys `params/...`, `batch_stats/...`) into the twin."""
  import torch  # pylint: disable=g-import-not-at-top

  def tensor(a: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(a))

  def conv_bn(module, prefix: str) -> None:
    conv, bn = module[0], module[1]
    conv.weight.data = tensor(flat[f"params/{prefix}/conv/kernel"].transpose(4, 3, 0, 1, 2))
    conv.bias.data = tensor(flat[f"params/{prefix}/conv/bias"])
    bn.weight.data = tensor(flat[f"params/{prefix}/bn/scale"])
    bn.bias.data = tensor(flat[f"params/{prefix}/bn/bias"])
    bn.running_mean.data = tensor(flat[f"batch_stats/{prefix}/bn/mean"])
    bn.running_var.data = tensor(flat[f"batch_stats/{prefix}/bn/var"])

  for level, encoder in enumerate(model.encoders):
    conv_bn(encoder[0], f"encoder_{level}/conv1")
    conv_bn(encoder[1], f"encoder_{level}/conv2")
  for upconv, decoder, level in zip(model.upconvs, model.decoders,
                                    reversed(range(num_levels - 1))):
    # ConvTranspose3d weight [C, O, 2, 2, 2] = flax's kernel [2, 2, 2, C, O] flipped
    # (layers.UpConv's docstring).
    kernel = flat[f"params/decoder_{level}/upconv/kernel"]
    upconv.weight.data = tensor(kernel[::-1, ::-1, ::-1].transpose(3, 4, 0, 1, 2))
    upconv.bias.data = tensor(flat[f"params/decoder_{level}/upconv/bias"])
    conv_bn(decoder[0], f"decoder_{level}/conv1")
    conv_bn(decoder[1], f"decoder_{level}/conv2")
  model.classifier.weight.data = tensor(
      flat["params/classifier/kernel"].transpose(4, 3, 0, 1, 2))
  model.classifier.bias.data = tensor(flat["params/classifier/bias"])


def dice_loss(logits, labels, num_classes: int = NUM_CLASSES):
  """medjax.losses.dice_loss defaults in torch: softmax, background kept, per (sample, class).

  `logits` `[B, K, D, H, W]`, `labels` int64 `[B, D, H, W]`.
  """
  import torch  # pylint: disable=g-import-not-at-top
  probs = torch.softmax(logits, dim=1)
  onehot = torch.nn.functional.one_hot(labels, num_classes).movedim(-1, 1).to(probs.dtype)
  axes = tuple(range(2, logits.ndim))
  intersection = (probs * onehot).sum(axes)
  denominator = probs.sum(axes) + onehot.sum(axes)
  return (1.0 - (2.0 * intersection + 1e-5) / (denominator + 1e-5)).mean()
