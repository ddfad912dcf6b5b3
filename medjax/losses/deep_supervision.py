r"""nnU-Net's deep supervision: one loss per output resolution, weighted and summed.

A deeply supervised model returns logits at full resolution and at 1/2, 1/4, ... of it
(`[B, D / 2^i, H / 2^i, W / 2^i, K]`, NDHWC, i = 0 .. n - 1). The loss is

  loss = sum_i w_i * loss_fn(logits_i, target_i),

with target_i the full-resolution target downsampled to output i by nearest-neighbour sampling
and the weights of nnU-Net v2 (`nnUNetTrainer._build_loss`): w_i proportional to 1 / 2^i, the
lowest resolution's set to 0, normalised to sum 1.

nnU-Net downsamples the segmentation with order 0 (nnU-Net v2 with batchgeneratorsv2:
`torch.nn.functional.interpolate(mode='nearest-exact')`, source index floor((j + 0.5) * f); the
older `DownsampleSegForDSTransform2`: skimage's `resize(order=0)`, source coordinate
(j + 0.5) * f - 0.5 rounded half up). For an integer factor f both pick input voxel f * j + f // 2
along each axis: the voxel just past the centre of each block of f (index 1 of 2, 2 of 4), not
the block's first voxel (`label[::f]`). `downsample_target` picks the same.
"""

from typing import Callable, Sequence

import jax


def deep_supervision_weights(num_outputs: int) -> tuple[float, ...]:
  """nnU-Net v2's loss weights for `num_outputs` resolutions, full resolution first.

  w_i = 2^-i for i < n - 1, w_{n-1} = 0, divided by their sum: 3 outputs -> (2/3, 1/3, 0),
  4 -> (4/7, 2/7, 1/7, 0).
  """
  if num_outputs < 2:
    raise ValueError(f"deep supervision needs at least 2 outputs (the lowest one gets weight "
                     f"0); got {num_outputs}.")
  raw = [0.5**i for i in range(num_outputs - 1)] + [0.0]
  total = sum(raw)
  return tuple(w / total for w in raw)


def downsample_target(target: jax.Array, spatial_shape: Sequence[int]) -> jax.Array:
  """`target` `[B, D, H, W, ...]` (class ids, or a per-channel region target) sampled to
  `spatial_shape` by nnU-Net's nearest neighbour: voxel f * j + f // 2 of each axis, f the
  integer factor `D // d` (see the module docstring)."""
  slices = []
  for axis, (n, m) in enumerate(zip(target.shape[1:4], spatial_shape)):
    if m < 1 or n % m:
      raise ValueError(f"deep supervision: an output of spatial shape {tuple(spatial_shape)} "
                       f"is not an integer downsampling of the target's {target.shape[1:4]} "
                       f"(axis {axis + 1}).")
    f = n // m
    slices.append(slice(f // 2, None, f))
  return target[(slice(None), *slices)]


def deep_supervision_loss(loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
                          outputs: Sequence[jax.Array], target: jax.Array) -> jax.Array:
  """sum_i w_i * loss_fn(outputs[i], downsample_target(target, outputs[i]'s spatial shape)).

  Args:
    loss_fn: `loss_fn(logits, target) -> scalar`.
    outputs: logits `[B, D / 2^i, H / 2^i, W / 2^i, K]`, full resolution first.
    target: the full-resolution target `[B, D, H, W]` (ids) or `[B, D, H, W, R]` (regions).

  Outputs with weight 0 are not evaluated (as nnU-Net's `DeepSupervisionWrapper`), so a
  non-finite loss there cannot turn the sum into NaN.
  """
  weights = deep_supervision_weights(len(outputs))
  terms = [w * loss_fn(logits, downsample_target(target, logits.shape[1:4]))
           for w, logits in zip(weights, outputs) if w != 0]
  return sum(terms[1:], terms[0])
