"""Random data augmentation of training batches on the device, in pure `jnp`.

`augment_batch(rng, image, label, config=...)` runs inside a jitted train step. Every sample of
the batch gets its own random transform, drawn from `jax.random.split(rng, B)`, so the result
depends only on `rng` (same key -> same batch). The image `[B, D, H, W, C]` and the label map
`[B, D, H, W]` go through the SAME geometric transform; the image is resampled with (tri)linear
interpolation, the label map with nearest-neighbour sampling so it keeps its label values.

Per sample, in this order (each step is drawn with its own probability):

1. flips: each axis in `flip_axes` is reversed with probability `flip_prob` (exact, `jnp.flip`);
2. 90-degree rotation: with probability `rot90_prob`, `k` quarter turns (k uniform in
   {1, 2, 3}) in the plane `rot90_axes` (exact, `jnp.rot90`; the plane must be square);
3. one resampling pass for the continuous transforms (`jax.scipy.ndimage.map_coordinates`,
   order 1 for the image, order 0 for labels). Output voxel p (voxel indices) is read from
   input position

       q = R^T (p - c) / s + c + u(p),      c = (size - 1) / 2 (the volume centre),

   where R = R_2(a_2) R_1(a_1) R_0(a_0) rotates the content by angle a_i about spatial axis i
   (R_0(a) turns axis 1 towards axis 2: R_0 = [[1, 0, 0], [0, cos a, -sin a], [0, sin a, cos a]],
   and cyclically R_1 turns axis 2 towards axis 0, R_2 axis 0 towards axis 1), s is an isotropic
   zoom (s > 1 enlarges the content) and u is an elastic displacement field in voxels: Gaussian
   displacements N(0, elastic_std^2) on a `elastic_control_points`^3 grid spanning the volume,
   interpolated trilinearly to every voxel. With rotation drawn (`rotate_prob`) every a_i is
   uniform in [-max_rotation_deg, max_rotation_deg]; with zoom drawn (`scale_prob`) s is uniform
   in `scale_range`; otherwise a = 0, s = 1, u = 0 and the pass returns its input exactly.
   Positions outside the volume take the nearest edge voxel (`fill_mode='nearest'`) or 0
   (`'constant'`, background 0 for labels);
4. intensity, per channel: x <- x * m + b with m uniform in `intensity_scale_range` (probability
   `intensity_scale_prob`, else 1) and b uniform in `intensity_shift_range` (probability
   `intensity_shift_prob`, else 0), in the units of the normalised image;
5. additive Gaussian noise N(0, noise_std^2) with probability `noise_prob`.

A step whose probability is 0 is not traced at all, so it costs nothing in the compiled step.

Defaults (`default_augmentation_config()`): rotation +-10 degrees as MedicalZoo's augment3D,
zoom 0.9-1.1 (MedicalZoo's `RandomZoom` is 0.8-1.1; set `scale_range` for it). Augmentation is off
unless `config.augmentation.enabled`; docs/medicalzoo.md says how MedicalZoo's own augmentation
differs (one transform of three per sample).
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from jax.scipy import ndimage


def default_augmentation_config() -> ml_collections.ConfigDict:
  """The augmentation knobs and their defaults (probabilities are per sample).

  Returns a ConfigDict with:
    flip_prob (0.5): probability of flipping each axis in `flip_axes`.
    flip_axes ((0, 1, 2)): spatial axes that may be flipped (0 = D, 1 = H, 2 = W).
    rot90_prob (0.25): probability of 1, 2 or 3 quarter turns in `rot90_axes`.
    rot90_axes ((1, 2)): plane of the quarter turns; its two sizes must be equal.
    rotate_prob (0.5): probability of a small rotation about all three axes.
    max_rotation_deg (10.0): each angle is uniform in [-max_rotation_deg, max_rotation_deg].
    scale_prob (0.5): probability of an isotropic zoom.
    scale_range ((0.9, 1.1)): zoom factor range (> 1 enlarges the content).
    elastic_prob (0.25): probability of an elastic deformation.
    elastic_control_points (5): control points per axis of the displacement grid (>= 2).
    elastic_std (2.0): standard deviation of the control-point displacements, in voxels.
    intensity_scale_prob (0.5), intensity_scale_range ((0.9, 1.1)): per-channel multiplier.
    intensity_shift_prob (0.5), intensity_shift_range ((-0.1, 0.1)): per-channel offset.
    noise_prob (0.5), noise_std (0.05): additive Gaussian noise.
    fill_mode ('nearest'): 'nearest' (edge voxel) or 'constant' (0) outside the volume.
  """
  c = ml_collections.ConfigDict()
  c.flip_prob = 0.5
  c.flip_axes = (0, 1, 2)
  c.rot90_prob = 0.25
  c.rot90_axes = (1, 2)
  c.rotate_prob = 0.5
  c.max_rotation_deg = 10.0
  c.scale_prob = 0.5
  c.scale_range = (0.9, 1.1)
  c.elastic_prob = 0.25
  c.elastic_control_points = 5
  c.elastic_std = 2.0
  c.intensity_scale_prob = 0.5
  c.intensity_scale_range = (0.9, 1.1)
  c.intensity_shift_prob = 0.5
  c.intensity_shift_range = (-0.1, 0.1)
  c.noise_prob = 0.5
  c.noise_std = 0.05
  c.fill_mode = "nearest"
  return c


_PROBS = ("flip_prob", "rot90_prob", "rotate_prob", "scale_prob", "elastic_prob",
          "intensity_scale_prob", "intensity_shift_prob", "noise_prob")
_RANGES = ("scale_range", "intensity_scale_range", "intensity_shift_range")


def resolve_config(config: Any) -> ml_collections.ConfigDict:
  """Defaults overridden by `config` (ConfigDict, mapping or dataclass; None or True: defaults).

  Raises `ValueError` for an unknown key or an out-of-range value, naming it.
  """
  out = default_augmentation_config()
  if config is None or config is True:
    return out
  if isinstance(config, ml_collections.ConfigDict):
    given = config.to_dict()
  elif isinstance(config, Mapping):
    given = dict(config)
  elif dataclasses.is_dataclass(config) and not isinstance(config, type):
    given = dataclasses.asdict(config)
  else:
    raise ValueError("augmentation config must be a ConfigDict, a mapping, a dataclass, None or "
                     f"True; got {type(config).__name__}.")
  unknown = sorted(set(given) - set(out))
  if unknown:
    raise ValueError(f"augmentation config has unknown keys {unknown}; known keys: "
                     f"{sorted(out)}.")
  for key, value in given.items():
    out[key] = tuple(value) if isinstance(value, list) else value
  for key in _PROBS:
    if not 0.0 <= float(out[key]) <= 1.0:
      raise ValueError(f"augmentation config {key} must be in [0, 1]; got {out[key]}.")
  for key in _RANGES:
    lo, hi = out[key]
    if lo > hi:
      raise ValueError(f"augmentation config {key} must be (low, high) with low <= high; got "
                       f"{tuple(out[key])}.")
  if out.scale_range[0] <= 0:
    raise ValueError(f"augmentation config scale_range must be positive; got {out.scale_range}.")
  if any(a not in (0, 1, 2) for a in out.flip_axes):
    raise ValueError(f"augmentation config flip_axes must be spatial axes in (0, 1, 2); got "
                     f"{tuple(out.flip_axes)}.")
  if len(out.rot90_axes) != 2 or len(set(out.rot90_axes)) != 2 or any(
      a not in (0, 1, 2) for a in out.rot90_axes):
    raise ValueError("augmentation config rot90_axes must be two different spatial axes in "
                     f"(0, 1, 2); got {tuple(out.rot90_axes)}.")
  if int(out.elastic_control_points) < 2:
    raise ValueError("augmentation config elastic_control_points must be >= 2; got "
                     f"{out.elastic_control_points}.")
  if out.fill_mode not in ("nearest", "constant"):
    raise ValueError(f"augmentation config fill_mode must be 'nearest' or 'constant'; got "
                     f"{out.fill_mode!r}.")
  return out


class AugmentParams(NamedTuple):
  """The random draws for one sample (see the module docstring for how each is used).

  Attributes:
    flip: bool `[3]`, whether spatial axis i is reversed (only axes in `flip_axes` can be).
    rot90_k: int32 `[]`, quarter turns in the `rot90_axes` plane (0..3).
    angles: float32 `[3]`, rotation angles a_0, a_1, a_2 in radians.
    scale: float32 `[]`, isotropic zoom s.
    displacement: float32 `[G, G, G, 3]`, control-point displacements in voxels.
    intensity_scale: float32 `[C]`, per-channel multiplier m.
    intensity_shift: float32 `[C]`, per-channel offset b.
    noise_std: float32 `[]`, standard deviation of the additive noise (0: none).
    noise_key: PRNG key for the noise.
  """
  flip: jax.Array
  rot90_k: jax.Array
  angles: jax.Array
  scale: jax.Array
  displacement: jax.Array
  intensity_scale: jax.Array
  intensity_shift: jax.Array
  noise_std: jax.Array
  noise_key: jax.Array


def identity_params(num_channels: int, *, control_points: int = 5,
                    noise_key: jax.Array | None = None) -> AugmentParams:
  """Parameters that leave a sample unchanged."""
  g = control_points
  return AugmentParams(
      flip=jnp.zeros((3,), bool), rot90_k=jnp.zeros((), jnp.int32),
      angles=jnp.zeros((3,), jnp.float32), scale=jnp.ones((), jnp.float32),
      displacement=jnp.zeros((g, g, g, 3), jnp.float32),
      intensity_scale=jnp.ones((num_channels,), jnp.float32),
      intensity_shift=jnp.zeros((num_channels,), jnp.float32),
      noise_std=jnp.zeros((), jnp.float32),
      noise_key=jax.random.key(0) if noise_key is None else noise_key)


def sample_params(rng: jax.Array, num_channels: int,
                  config: ml_collections.ConfigDict) -> AugmentParams:
  """Draws one sample's `AugmentParams` from `rng` under a resolved config."""
  keys = jax.random.split(rng, 16)

  def coin(key: jax.Array, p: float, shape: tuple[int, ...] = ()) -> jax.Array:
    return jax.random.bernoulli(key, p, shape)

  def uniform(key, lo, hi, shape=()):
    return jax.random.uniform(key, shape, jnp.float32, lo, hi)

  allowed = jnp.array([a in tuple(config.flip_axes) for a in range(3)])
  flip = coin(keys[0], config.flip_prob, (3,)) & allowed
  rot90_k = jnp.where(coin(keys[1], config.rot90_prob),
                      jax.random.randint(keys[2], (), 1, 4), 0).astype(jnp.int32)
  max_angle = math.radians(config.max_rotation_deg)
  angles = jnp.where(coin(keys[3], config.rotate_prob),
                     uniform(keys[4], -max_angle, max_angle, (3,)), 0.0)
  scale = jnp.where(coin(keys[5], config.scale_prob), uniform(keys[6], *config.scale_range), 1.0)
  g = int(config.elastic_control_points)
  displacement = jnp.where(
      coin(keys[7], config.elastic_prob),
      config.elastic_std * jax.random.normal(keys[8], (g, g, g, 3), jnp.float32), 0.0)
  intensity_scale = jnp.where(coin(keys[9], config.intensity_scale_prob),
                              uniform(keys[10], *config.intensity_scale_range, (num_channels,)),
                              1.0)
  intensity_shift = jnp.where(coin(keys[11], config.intensity_shift_prob),
                              uniform(keys[12], *config.intensity_shift_range, (num_channels,)),
                              0.0)
  noise_std = jnp.where(coin(keys[13], config.noise_prob), jnp.float32(config.noise_std), 0.0)
  return AugmentParams(flip, rot90_k, angles.astype(jnp.float32), scale.astype(jnp.float32),
                       displacement.astype(jnp.float32), intensity_scale.astype(jnp.float32),
                       intensity_shift.astype(jnp.float32), noise_std.astype(jnp.float32),
                       keys[14])


def rotation_matrix(angles: jax.Array) -> jax.Array:
  """R = R_2(a_2) R_1(a_1) R_0(a_0), `[3, 3]`, for angles `[3]` in radians (module docstring).

  R_i(a) rotates axis i+1 towards axis i+2 (indices mod 3) by angle a.
  """
  def about(axis: int, a: jax.Array) -> jax.Array:
    j, k = (axis + 1) % 3, (axis + 2) % 3
    cos, sin = jnp.cos(a), jnp.sin(a)
    m = jnp.eye(3, dtype=jnp.float32)
    m = m.at[j, j].set(cos).at[k, k].set(cos)
    return m.at[k, j].set(sin).at[j, k].set(-sin)

  return about(2, angles[2]) @ about(1, angles[1]) @ about(0, angles[0])


def sampling_coordinates(spatial_shape: tuple[int, int, int], angles: jax.Array, scale: jax.Array,
                         displacement: jax.Array | None) -> jax.Array:
  """Input positions q `[3, D, H, W]` read by each output voxel (module docstring, step 3).

  `displacement` `[G, G, G, 3]` or None for u = 0.
  """
  shape = tuple(spatial_shape)
  grid = jnp.stack(jnp.meshgrid(*[jnp.arange(n, dtype=jnp.float32) for n in shape],
                                indexing="ij"))  # [3, D, H, W]
  centre = jnp.array([(n - 1) / 2 for n in shape], jnp.float32).reshape(3, 1, 1, 1)
  inverse = rotation_matrix(angles).T / scale
  q = jnp.einsum("ij,jdhw->idhw", inverse, grid - centre) + centre
  if displacement is None:
    return q
  # Control point i of G lies at voxel i * (n - 1) / (G - 1) along an axis of size n.
  g = displacement.shape[0]
  grid_pos = [grid[a] * ((g - 1) / max(shape[a] - 1, 1)) for a in range(3)]
  u = jax.vmap(lambda f: ndimage.map_coordinates(f, grid_pos, order=1, mode="nearest"),
               in_axes=-1)(displacement)
  return q + u


def augment_sample(image: jax.Array, label: jax.Array, params: AugmentParams,
                   config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """Applies `params` to one sample: image `[D, H, W, C]`, label `[D, H, W]` (same shapes out).

  Steps whose probability in `config` is 0 are not traced at all (no cost in the compiled step)
  and their fields of `params` are ignored: quarter turns when `rot90_prob` is 0, the elastic
  field when `elastic_prob` is 0, the whole resampling pass when `rotate_prob`, `scale_prob` and
  `elastic_prob` are all 0, and the noise when `noise_prob` is 0.
  """
  for axis in range(3):
    image = jnp.where(params.flip[axis], jnp.flip(image, axis), image)
    label = jnp.where(params.flip[axis], jnp.flip(label, axis), label)

  a, b = tuple(config.rot90_axes)
  if config.rot90_prob > 0:
    def turn(k: int):
      return lambda xs: (jnp.rot90(xs[0], k, (a, b)), jnp.rot90(xs[1], k, (a, b)))
    image, label = jax.lax.switch(params.rot90_k, [turn(k) for k in range(4)], (image, label))

  if max(config.rotate_prob, config.scale_prob, config.elastic_prob) > 0:
    displacement = params.displacement if config.elastic_prob > 0 else None
    coords = list(sampling_coordinates(image.shape[:3], params.angles, params.scale,
                                       displacement))
    mode = config.fill_mode
    image = jax.vmap(lambda x: ndimage.map_coordinates(x, coords, order=1, mode=mode, cval=0.0),
                     in_axes=-1, out_axes=-1)(image)
    label = ndimage.map_coordinates(label, coords, order=0, mode=mode, cval=0)

  image = image * params.intensity_scale + params.intensity_shift
  if config.noise_prob > 0:
    noise = jax.random.normal(params.noise_key, image.shape, image.dtype)
    image = image + params.noise_std.astype(image.dtype) * noise
  return image, label


def augment_batch(rng: jax.Array, image: jax.Array, label: jax.Array, *,
                  config: Any = None) -> tuple[jax.Array, jax.Array]:
  """Randomly augments a batch: image `[B, D, H, W, C]` float, label `[B, D, H, W]` integer.

  Args:
    rng: PRNG key; sample i uses `jax.random.split(rng, B)[i]`.
    image: float images, channels last.
    label: integer class maps with the image's spatial shape.
    config: augmentation knobs (see `default_augmentation_config`): a ConfigDict, mapping or
      dataclass whose keys override the defaults; None or True for the defaults. It is read
      at trace time (Python values), so close over it when jitting.

  Returns:
    `(image, label)` with the input shapes and dtypes.
  """
  cfg = resolve_config(config)
  if image.ndim != 5:
    raise ValueError(f"augment_batch image must be [B, D, H, W, C]; got shape {image.shape}.")
  if label.shape != image.shape[:4]:
    raise ValueError(f"augment_batch label must be [B, D, H, W] = {image.shape[:4]}; got shape "
                     f"{label.shape}.")
  if not jnp.issubdtype(label.dtype, jnp.integer):
    raise ValueError(f"augment_batch label must hold integer class ids; got dtype {label.dtype}.")
  a, b = tuple(cfg.rot90_axes)
  if cfg.rot90_prob > 0 and image.shape[1 + a] != image.shape[1 + b]:
    raise ValueError(f"augment_batch: 90-degree rotations in rot90_axes={(a, b)} need equal sizes "
                     f"there; got spatial shape {image.shape[1:4]}. Set rot90_prob=0 or pick a "
                     "square plane.")
  dtype = image.dtype
  keys = jax.random.split(rng, image.shape[0])
  params = jax.vmap(lambda k: sample_params(k, image.shape[-1], cfg))(keys)
  out_image, out_label = jax.vmap(lambda x, y, p: augment_sample(x, y, p, cfg))(
      image, label, params)
  return out_image.astype(dtype), out_label.astype(label.dtype)
