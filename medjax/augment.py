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
   in `scale_range` (`scale_convention='enlarge'`), or s = 1 / s' with s' uniform in it
   ('shrink', nnU-Net's convention: a factor > 1 shrinks the content); otherwise a = 0, s = 1,
   u = 0 and the pass returns its input exactly.
   Positions outside the volume take the nearest edge voxel (`fill_mode='nearest'`) or 0
   (`'constant'`, background 0 for labels);
4. intensity, per channel: x <- x * m + b with m uniform in `intensity_scale_range` (probability
   `intensity_scale_prob`, else 1) and b uniform in `intensity_shift_range` (probability
   `intensity_shift_prob`, else 0), in the units of the normalised image;
5. additive Gaussian noise N(0, sigma^2) with probability `noise_prob`: sigma = `noise_std`, or
   uniform in [0, noise_std] per sample when `noise_std_uniform` (nnU-Net's);

then nnU-Net's intensity transforms (nnU-Net v2's `nnUNetTrainer.get_training_transforms`, in its
order), each per channel c over that channel's whole volume:

6. Gaussian blur with probability `blur_prob`, each channel with probability
   `blur_channel_prob`: a separable Gaussian with its own sigma per axis, uniform in
   `blur_sigma_range` (voxels), truncated at floor(4 sigma + 0.5) voxels (scipy's
   `gaussian_filter` kernel), edges mirrored (d c b | a b c d, as nnU-Net's torch 'reflect');
7. multiplicative brightness with probability `brightness_prob`: x <- x * f_c;
8. contrast with probability `contrast_prob`: x <- (x - mean_c) * f_c + mean_c, clipped to the
   channel's former [min, max] when `contrast_preserve_range`;
9. simulated low resolution with probability `low_res_prob`, each channel with probability
   `low_res_channel_prob`: zoom z_c uniform in `low_res_zoom_range`, the same on every axis; an
   axis of n voxels is resampled to round(n z_c) voxels by nearest neighbour and back to n by
   linear interpolation (half-voxel centres, edge values held: torch's 'nearest-exact' then
   'trilinear', as nnU-Net), in one gather per axis so the shapes stay static under jit;
10. inverted gamma with probability `gamma_inverted_prob`, then gamma with probability
    `gamma_prob`, both with gamma_c from `gamma_range`: with y = x (or -x when inverted),
    y <- ((y - min) / (max - min))^gamma_c (max - min) + min; with `gamma_retain_stats` y is then
    shifted and scaled back to its former mean and standard deviation; inverted: x <- -y.

Factors f_c and gamma_c are drawn as nnU-Net's `BGContrast`: when the range (lo, hi) contains 1,
with probability 1/2 uniform in [lo, 1], else uniform in [1, hi] (for (0.75, 1.25) that is
uniform in the range; for gamma (0.7, 1.5) half the draws are below 1); otherwise uniform in it.
The label map is never touched by steps 4-10.

A step whose probability is 0 is not traced at all, so it costs nothing in the compiled step.

Defaults (`default_augmentation_config()`): rotation +-10 degrees as MedicalZoo's augment3D,
zoom 0.9-1.1 (MedicalZoo's `RandomZoom` is 0.8-1.1; set `scale_range` for it), nnU-Net's steps
6-10 off. Augmentation is off unless `config.augmentation.enabled`; docs/medicalzoo.md says how
MedicalZoo's own augmentation differs (one transform of three per sample).

Presets (`preset`): 'none' starts from `default_augmentation_config()`, 'nnunet' from
`nnunet_augmentation_config()` (nnU-Net v2's default 3D training augmentation). The rule for
which wins is in `resolve_config`: every key given with a value other than None is the user's;
only the keys not given, or given as None, come from the preset.
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
    preset ('none'): whose values the keys not set take, 'none' (these) or 'nnunet'
      (`nnunet_augmentation_config()`); see `resolve_config`.
    flip_prob (0.5): probability of flipping each axis in `flip_axes`.
    flip_axes ((0, 1, 2)): spatial axes that may be flipped (0 = D, 1 = H, 2 = W).
    rot90_prob (0.25): probability of 1, 2 or 3 quarter turns in `rot90_axes`.
    rot90_axes ((1, 2)): plane of the quarter turns; its two sizes must be equal.
    rotate_prob (0.5): probability of a small rotation about all three axes.
    max_rotation_deg (10.0): each angle is uniform in [-max_rotation_deg, max_rotation_deg].
    scale_prob (0.5): probability of an isotropic zoom.
    scale_range ((0.9, 1.1)): zoom factor range.
    scale_convention ('enlarge'): 'enlarge' (a factor > 1 enlarges the content) or 'shrink'
      (nnU-Net's: a factor > 1 shrinks it; the content is zoomed by 1 / factor).
    elastic_prob (0.25): probability of an elastic deformation.
    elastic_control_points (5): control points per axis of the displacement grid (>= 2).
    elastic_std (2.0): standard deviation of the control-point displacements, in voxels.
    intensity_scale_prob (0.5), intensity_scale_range ((0.9, 1.1)): per-channel multiplier.
    intensity_shift_prob (0.5), intensity_shift_range ((-0.1, 0.1)): per-channel offset.
    noise_prob (0.5), noise_std (0.05): additive Gaussian noise.
    noise_std_uniform (False): each sample's noise standard deviation uniform in
      [0, noise_std] instead of noise_std (nnU-Net's).
    blur_prob (0.0): probability of a Gaussian blur of the sample.
    blur_channel_prob (0.5): probability that a channel of a blurred sample is blurred.
    blur_sigma_range ((0.5, 1.0)): the blur's sigma, drawn per channel and axis, in voxels (> 0).
    brightness_prob (0.0), brightness_range ((0.75, 1.25)): per-channel multiplier, after the
      blur (nnU-Net's order; `intensity_scale_*` acts before the noise).
    contrast_prob (0.0), contrast_range ((0.75, 1.25)): per-channel contrast factor.
    contrast_preserve_range (True): clip each channel to its former [min, max].
    low_res_prob (0.0): probability of simulating a lower resolution.
    low_res_channel_prob (0.5): probability that a channel of such a sample is resampled.
    low_res_zoom_range ((0.5, 1.0)): the per-channel zoom, in (0, 1].
    gamma_inverted_prob (0.0): probability of a gamma transform of the negated image.
    gamma_prob (0.0): probability of a gamma transform (after the inverted one).
    gamma_range ((0.7, 1.5)): the exponent range of both (> 0).
    gamma_retain_stats (True): restore each channel's mean and standard deviation after gamma.
    fill_mode ('nearest'): 'nearest' (edge voxel) or 'constant' (0) outside the volume.
  """
  c = ml_collections.ConfigDict()
  c.preset = "none"
  c.flip_prob = 0.5
  c.flip_axes = (0, 1, 2)
  c.rot90_prob = 0.25
  c.rot90_axes = (1, 2)
  c.rotate_prob = 0.5
  c.max_rotation_deg = 10.0
  c.scale_prob = 0.5
  c.scale_range = (0.9, 1.1)
  c.scale_convention = "enlarge"
  c.elastic_prob = 0.25
  c.elastic_control_points = 5
  c.elastic_std = 2.0
  c.intensity_scale_prob = 0.5
  c.intensity_scale_range = (0.9, 1.1)
  c.intensity_shift_prob = 0.5
  c.intensity_shift_range = (-0.1, 0.1)
  c.noise_prob = 0.5
  c.noise_std = 0.05
  c.noise_std_uniform = False
  # nnU-Net's transforms are off; their ranges are nnU-Net's, so that a probability alone
  # switches one on as nnU-Net has it.
  c.blur_prob = 0.0
  c.blur_channel_prob = 0.5
  c.blur_sigma_range = (0.5, 1.0)
  c.brightness_prob = 0.0
  c.brightness_range = (0.75, 1.25)
  c.contrast_prob = 0.0
  c.contrast_range = (0.75, 1.25)
  c.contrast_preserve_range = True
  c.low_res_prob = 0.0
  c.low_res_channel_prob = 0.5
  c.low_res_zoom_range = (0.5, 1.0)
  c.gamma_inverted_prob = 0.0
  c.gamma_prob = 0.0
  c.gamma_range = (0.7, 1.5)
  c.gamma_retain_stats = True
  c.fill_mode = "nearest"
  return c


def nnunet_augmentation_config() -> ml_collections.ConfigDict:
  """nnU-Net v2's default 3D training augmentation: the values of preset 'nnunet'.

  From `nnUNetTrainer.get_training_transforms` and
  `configure_rotation_dummyDA_mirroring_and_inital_patch_size`
  (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py) for a 3D patch that is not anisotropic,
  with batchgeneratorsv2's transforms. Not reproduced: the 'dummy 2D' augmentation of
  anisotropic patches (in-plane rotation up to 180 degrees, low resolution in-plane only), the
  enlarged crop the spatial transform cuts its patch from, and the labels' linear resampling of
  one-hot maps (medjax samples them by nearest neighbour). nnU-Net mirrors last, medjax first:
  the intensity steps commute with a flip, but for where the low-resolution grid falls.
  """
  c = default_augmentation_config()
  c.preset = "nnunet"
  # MirrorTransform(allowed_axes=mirror_axes), mirror_axes = (0, 1, 2) for 3D; batchgeneratorsv2's
  # MirrorTransform flips each allowed axis with probability 0.5.
  c.flip_prob = 0.5
  c.flip_axes = (0, 1, 2)
  c.rot90_prob = 0.0  # the default trainer has no quarter turns
  # SpatialTransform(p_rotation=0.2, rotation=rotation_for_DA): one draw per sample, then one
  # angle per axis uniform in rotation_for_DA = (-30, 30) degrees (3D, not anisotropic).
  c.rotate_prob = 0.2
  c.max_rotation_deg = 30.0
  # SpatialTransform(p_scaling=0.2, scaling=(0.7, 1.4), p_synchronize_scaling_across_axes=1):
  # one factor for all axes, and "larger numbers = smaller objects" (batchgeneratorsv2's
  # spatial.py multiplies the sampling grid by it), hence 'shrink'.
  c.scale_prob = 0.2
  c.scale_range = (0.7, 1.4)
  c.scale_convention = "shrink"
  c.elastic_prob = 0.0  # SpatialTransform(p_elastic_deform=0)
  # No additive shift in nnU-Net; its multiplier is the brightness step (after noise and blur).
  c.intensity_scale_prob = 0.0
  c.intensity_shift_prob = 0.0
  # RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1,
  # synchronize_channels=True), apply_probability=0.1). batchgeneratorsv2 passes the drawn
  # "variance" to np.random.normal as its standard deviation, so sigma ~ U(0, 0.1). (It adds
  # one noise field to all channels; here each channel draws its own.)
  c.noise_prob = 0.1
  c.noise_std = 0.1
  c.noise_std_uniform = True
  # RandomTransform(GaussianBlurTransform(blur_sigma=(0.5, 1.), synchronize_channels=False,
  # synchronize_axes=False, p_per_channel=0.5), apply_probability=0.2).
  c.blur_prob = 0.2
  c.blur_channel_prob = 0.5
  c.blur_sigma_range = (0.5, 1.0)
  # RandomTransform(MultiplicativeBrightnessTransform(multiplier_range=BGContrast((0.75, 1.25)),
  # synchronize_channels=False, p_per_channel=1), apply_probability=0.15).
  c.brightness_prob = 0.15
  c.brightness_range = (0.75, 1.25)
  # RandomTransform(ContrastTransform(contrast_range=BGContrast((0.75, 1.25)),
  # preserve_range=True, synchronize_channels=False, p_per_channel=1), apply_probability=0.15).
  c.contrast_prob = 0.15
  c.contrast_range = (0.75, 1.25)
  c.contrast_preserve_range = True
  # RandomTransform(SimulateLowResolutionTransform(scale=(0.5, 1), synchronize_channels=False,
  # synchronize_axes=True, p_per_channel=0.5), apply_probability=0.25).
  c.low_res_prob = 0.25
  c.low_res_channel_prob = 0.5
  c.low_res_zoom_range = (0.5, 1.0)
  # RandomTransform(GammaTransform(gamma=BGContrast((0.7, 1.5)), p_invert_image=1,
  # synchronize_channels=False, p_per_channel=1, p_retain_stats=1), apply_probability=0.1),
  # then the same with p_invert_image=0 and apply_probability=0.3.
  c.gamma_inverted_prob = 0.1
  c.gamma_prob = 0.3
  c.gamma_range = (0.7, 1.5)
  c.gamma_retain_stats = True
  # fill_mode stays 'nearest'. nnU-Net pads with zeros, but cuts its patch from a crop enlarged
  # for the rotation and zoom (get_patch_size), so it seldom reads outside; medjax turns the crop
  # itself, where zeros would blank its corners.
  return c


PRESETS = {"none": default_augmentation_config, "nnunet": nnunet_augmentation_config}

_PROBS = ("flip_prob", "rot90_prob", "rotate_prob", "scale_prob", "elastic_prob",
          "intensity_scale_prob", "intensity_shift_prob", "noise_prob", "blur_prob",
          "blur_channel_prob", "brightness_prob", "contrast_prob", "low_res_prob",
          "low_res_channel_prob", "gamma_inverted_prob", "gamma_prob")
_RANGES = ("scale_range", "intensity_scale_range", "intensity_shift_range", "blur_sigma_range",
           "brightness_range", "contrast_range", "low_res_zoom_range", "gamma_range")
_BOOLS = ("noise_std_uniform", "contrast_preserve_range", "gamma_retain_stats")


def resolve_config(config: Any) -> ml_collections.ConfigDict:
  """The preset's values, overridden by the keys of `config` that are set.

  `config` is a ConfigDict, mapping or dataclass (None or True: the defaults). Its `preset`
  ('none' when absent or None) picks the base, `default_augmentation_config()` or
  `nnunet_augmentation_config()`. Every other key of `config` whose value is not None replaces
  the base's value, whatever it is (a value equal to the plain default too); a key that is
  absent or None keeps the preset's. `medjax/configs/default.py` declares every key but
  `enabled` and `preset` as None, so in a run exactly the keys set by the experiment file or on
  the command line (`--config.augmentation.rotate_prob=0.5`) are the user's.

  Raises `ValueError` for an unknown key or preset or an out-of-range value, naming it.
  """
  if config is None or config is True:
    return default_augmentation_config()
  if isinstance(config, ml_collections.ConfigDict):
    given = config.to_dict()
  elif isinstance(config, Mapping):
    given = dict(config)
  elif dataclasses.is_dataclass(config) and not isinstance(config, type):
    given = dataclasses.asdict(config)
  else:
    raise ValueError("augmentation config must be a ConfigDict, a mapping, a dataclass, None or "
                     f"True; got {type(config).__name__}.")
  known = default_augmentation_config()
  unknown = sorted(set(given) - set(known))
  if unknown:
    raise ValueError(f"augmentation config has unknown keys {unknown}; known keys: "
                     f"{sorted(known)}.")
  preset = given.get("preset") or "none"
  if preset not in PRESETS:
    raise ValueError(f"augmentation config preset must be one of {sorted(PRESETS)}; got "
                     f"{preset!r}.")
  out = PRESETS[preset]()
  for key, value in given.items():
    if value is not None and key != "preset":
      try:
        out[key] = tuple(value) if isinstance(value, list) else value
      except TypeError as e:  # the ConfigDict's type check: say which key, as a ValueError
        raise ValueError(f"augmentation config {key} has the wrong type: {e}") from None
  for key in _PROBS:
    if not 0.0 <= float(out[key]) <= 1.0:
      raise ValueError(f"augmentation config {key} must be in [0, 1]; got {out[key]}.")
  for key in _RANGES:
    if len(out[key]) != 2 or out[key][0] > out[key][1]:
      raise ValueError(f"augmentation config {key} must be (low, high) with low <= high; got "
                       f"{tuple(out[key])}.")
  for key in _BOOLS:
    if not isinstance(out[key], bool):
      raise ValueError(f"augmentation config {key} must be True or False; got {out[key]!r}.")
  positive = {"scale_range": "positive", "blur_sigma_range": "positive (sigma in voxels)",
              "gamma_range": "positive"}
  for key, what in positive.items():
    if out[key][0] <= 0:
      raise ValueError(f"augmentation config {key} must be {what}; got {tuple(out[key])}.")
  for key in ("brightness_range", "contrast_range"):
    if out[key][0] < 0:
      raise ValueError(f"augmentation config {key} must be >= 0; got {tuple(out[key])}.")
  if not 0 < out.low_res_zoom_range[0] <= out.low_res_zoom_range[1] <= 1:
    raise ValueError("augmentation config low_res_zoom_range must lie in (0, 1] (a zoom > 1 "
                     f"would not lower the resolution); got {tuple(out.low_res_zoom_range)}.")
  if out.noise_std < 0:
    raise ValueError(f"augmentation config noise_std must be >= 0; got {out.noise_std}.")
  if out.scale_convention not in ("enlarge", "shrink"):
    raise ValueError("augmentation config scale_convention must be 'enlarge' or 'shrink'; got "
                     f"{out.scale_convention!r}.")
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
    blur_sigma: float32 `[C, 3]`, blur sigma per channel and axis in voxels (0: not blurred).
    brightness: float32 `[C]`, brightness multiplier (1: none).
    contrast: float32 `[C]`, contrast factor (1: none).
    low_res_zoom: float32 `[C]`, simulated-resolution zoom (1: none).
    gamma_inverted: float32 `[C]`, exponent of the inverted gamma (1: none).
    gamma: float32 `[C]`, exponent of the gamma (1: none).
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
  blur_sigma: jax.Array
  brightness: jax.Array
  contrast: jax.Array
  low_res_zoom: jax.Array
  gamma_inverted: jax.Array
  gamma: jax.Array


def identity_params(num_channels: int, *, control_points: int = 5,
                    noise_key: jax.Array | None = None) -> AugmentParams:
  """Parameters that leave a sample unchanged."""
  g, ones = control_points, jnp.ones((num_channels,), jnp.float32)
  return AugmentParams(
      flip=jnp.zeros((3,), bool), rot90_k=jnp.zeros((), jnp.int32),
      angles=jnp.zeros((3,), jnp.float32), scale=jnp.ones((), jnp.float32),
      displacement=jnp.zeros((g, g, g, 3), jnp.float32),
      intensity_scale=ones, intensity_shift=jnp.zeros((num_channels,), jnp.float32),
      noise_std=jnp.zeros((), jnp.float32),
      noise_key=jax.random.key(0) if noise_key is None else noise_key,
      blur_sigma=jnp.zeros((num_channels, 3), jnp.float32), brightness=ones, contrast=ones,
      low_res_zoom=ones, gamma_inverted=ones, gamma=ones)


def _split_uniform(key: jax.Array, lo: float, hi: float, shape: tuple[int, ...]) -> jax.Array:
  """nnU-Net's `BGContrast` draw: for lo < 1 < hi, with probability 1/2 uniform in [lo, 1], else
  in [1, hi] (so factors below and above 1 are equally likely); otherwise uniform in [lo, hi]."""
  if not lo < 1.0 < hi:
    return jax.random.uniform(key, shape, jnp.float32, lo, hi)
  side, low, high = jax.random.split(key, 3)
  return jnp.where(jax.random.bernoulli(side, 0.5, shape),
                   jax.random.uniform(low, shape, jnp.float32, lo, 1.0),
                   jax.random.uniform(high, shape, jnp.float32, 1.0, hi))


def sample_params(rng: jax.Array, num_channels: int,
                  config: ml_collections.ConfigDict) -> AugmentParams:
  """Draws one sample's `AugmentParams` from `rng` under a resolved config."""
  keys = jax.random.split(rng, 16)
  # nnU-Net's draws come from the key the original steps left unused, so that those steps draw
  # the same values as before these were added.
  extra = jax.random.split(keys[15], 15)
  c = num_channels

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
  if config.scale_convention == "shrink":
    scale = 1.0 / scale
  g = int(config.elastic_control_points)
  displacement = jnp.where(
      coin(keys[7], config.elastic_prob),
      config.elastic_std * jax.random.normal(keys[8], (g, g, g, 3), jnp.float32), 0.0)
  intensity_scale = jnp.where(coin(keys[9], config.intensity_scale_prob),
                              uniform(keys[10], *config.intensity_scale_range, (c,)), 1.0)
  intensity_shift = jnp.where(coin(keys[11], config.intensity_shift_prob),
                              uniform(keys[12], *config.intensity_shift_range, (c,)), 0.0)
  noise_std = (uniform(extra[0], 0.0, config.noise_std) if config.noise_std_uniform
               else jnp.float32(config.noise_std))
  noise_std = jnp.where(coin(keys[13], config.noise_prob), noise_std, 0.0)
  blurred = coin(extra[1], config.blur_prob) & coin(extra[2], config.blur_channel_prob, (c,))
  blur_sigma = jnp.where(blurred[:, None], uniform(extra[3], *config.blur_sigma_range, (c, 3)),
                         0.0)
  brightness = jnp.where(coin(extra[4], config.brightness_prob),
                         _split_uniform(extra[5], *config.brightness_range, (c,)), 1.0)
  contrast = jnp.where(coin(extra[6], config.contrast_prob),
                       _split_uniform(extra[7], *config.contrast_range, (c,)), 1.0)
  low_res = coin(extra[8], config.low_res_prob) & coin(extra[9], config.low_res_channel_prob,
                                                       (c,))
  low_res_zoom = jnp.where(low_res, uniform(extra[10], *config.low_res_zoom_range, (c,)), 1.0)
  gamma_inverted = jnp.where(coin(extra[11], config.gamma_inverted_prob),
                             _split_uniform(extra[12], *config.gamma_range, (c,)), 1.0)
  gamma = jnp.where(coin(extra[13], config.gamma_prob),
                    _split_uniform(extra[14], *config.gamma_range, (c,)), 1.0)
  def f32(x):
    return jnp.asarray(x, jnp.float32)

  return AugmentParams(
      flip=flip, rot90_k=rot90_k, angles=f32(angles), scale=f32(scale),
      displacement=f32(displacement), intensity_scale=f32(intensity_scale),
      intensity_shift=f32(intensity_shift), noise_std=f32(noise_std), noise_key=keys[14],
      blur_sigma=f32(blur_sigma), brightness=f32(brightness), contrast=f32(contrast),
      low_res_zoom=f32(low_res_zoom), gamma_inverted=f32(gamma_inverted), gamma=f32(gamma))


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


_SPATIAL = (0, 1, 2)


def gaussian_blur(image: jax.Array, sigma: jax.Array, *, max_sigma: float,
                  truncate: float = 4.0) -> jax.Array:
  """Separable Gaussian blur of each channel: image `[D, H, W, C]`, sigma `[C, 3]` in voxels.

  The kernel of sigma s has radius floor(truncate s + 0.5) voxels and sums to 1
  (scipy.ndimage.gaussian_filter's); the edges are mirrored (d c b | a b c d: scipy's 'mirror',
  numpy's and torch's 'reflect', as nnU-Net pads). Sigma 0 leaves that axis unchanged.

  Args:
    image: float image, channels last.
    sigma: per channel and spatial axis, in [0, max_sigma].
    max_sigma: the largest sigma (a Python float): it fixes the kernel length under jit.
    truncate: kernel radius in sigmas.

  Returns:
    The blurred image, same shape and dtype.
  """
  radius = int(truncate * max_sigma + 0.5)
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  s = jnp.asarray(sigma, jnp.float32)[..., None]  # [C, 3, 1]
  weights = jnp.exp(-0.5 * (offsets / jnp.where(s > 0, s, 1.0)) ** 2)
  # Each sigma's own truncation inside the common (static) kernel length.
  weights = jnp.where(jnp.abs(offsets) <= jnp.floor(truncate * s + 0.5), weights, 0.0)
  weights = jnp.where(s > 0, weights, (offsets == 0).astype(jnp.float32))
  weights = weights / weights.sum(-1, keepdims=True)  # [C, 3, 2 radius + 1]
  out = image.astype(jnp.float32)
  for axis in _SPATIAL:
    n = out.shape[axis]
    pad = [(0, 0)] * 4
    pad[axis] = (radius, radius)
    padded = jnp.pad(out, pad, mode="reflect")
    out = sum(weights[:, axis, k] * jax.lax.slice_in_dim(padded, k, k + n, axis=axis)
              for k in range(2 * radius + 1))
  return out.astype(image.dtype)


def adjust_contrast(image: jax.Array, factor: jax.Array, *,
                    preserve_range: bool = True) -> jax.Array:
  """x <- (x - mean_c) f_c + mean_c per channel, clipped to the channel's former [min, max].

  Args:
    image: float image `[D, H, W, C]`.
    factor: `[C]` contrast factors (1: unchanged, < 1 flatter, > 1 steeper).
    preserve_range: clip to each channel's [min, max] before the change (nnU-Net's).
  """
  mean = image.mean(_SPATIAL)
  out = (image - mean) * factor + mean
  if preserve_range:
    out = jnp.clip(out, image.min(_SPATIAL), image.max(_SPATIAL))
  return out


def adjust_gamma(image: jax.Array, gamma: jax.Array, *, invert: bool = False,
                 retain_stats: bool = True, eps: float = 1e-7) -> jax.Array:
  """Gamma transform per channel, nnU-Net's (batchgeneratorsv2 `GammaTransform`).

  With y = x (or -x when `invert`), min m and range r = max - m of each channel:
  y <- ((y - m) / max(r, eps))^gamma_c r + m; with `retain_stats` y is then shifted and scaled
  to its former mean and standard deviation; inverted, the result is negated back.

  Args:
    image: float image `[D, H, W, C]`.
    gamma: `[C]` exponents (> 0; 1: unchanged up to rounding).
    invert: transform -x, so gamma < 1 darkens instead of brightening.
    retain_stats: restore each channel's mean and standard deviation.
    eps: smallest range and standard deviation divided by.
  """
  x = -image if invert else image
  lo = x.min(_SPATIAL)
  span = x.max(_SPATIAL) - lo
  y = ((x - lo) / jnp.maximum(span, eps)) ** gamma * span + lo
  if retain_stats:
    y = (y - y.mean(_SPATIAL)) * (x.std(_SPATIAL) / jnp.maximum(y.std(_SPATIAL), eps))
    y = y + x.mean(_SPATIAL)
  return -y if invert else y


def simulate_low_resolution(image: jax.Array, zoom: jax.Array) -> jax.Array:
  """Each channel down to zoom_c of its voxels per axis (nearest) and back up (linear).

  As nnU-Net's `SimulateLowResolutionTransform` (torch `interpolate`, 'nearest-exact' down to
  round(n z) voxels, then 'trilinear' with align_corners=False back to n), but with static
  shapes: an axis of n voxels and m = max(round(n z), 1) coarse voxels maps output voxel i to
  the coarse position x = max((i + 1/2) m / n - 1/2, 0), blends coarse voxels j = floor(x) and
  min(j + 1, m - 1) with weights 1 - (x - j) and x - j, and coarse voxel j copies fine voxel
  min(floor((j + 1/2) n / m), n - 1). Both resamplings are separable, so one gather per axis
  does both.

  Args:
    image: float image `[D, H, W, C]`.
    zoom: `[C]` zoom per channel in (0, 1], the same on every axis (1: unchanged).
  """
  z = jnp.asarray(zoom, jnp.float32)
  out = image
  for axis in _SPATIAL:
    n = image.shape[axis]
    m = jnp.maximum(jnp.round(n * z), 1.0)  # [C]
    i = jnp.arange(n, dtype=jnp.float32)[:, None]
    x = jnp.maximum((i + 0.5) * (m / n) - 0.5, 0.0)  # [n, C]
    j0 = jnp.floor(x)
    j1 = jnp.minimum(j0 + 1.0, m - 1.0)
    shape = [1, 1, 1, image.shape[-1]]
    shape[axis] = n

    def fine(j, shape=shape, n=n, m=m):
      index = jnp.minimum(jnp.floor((j + 0.5) * (n / m)), n - 1).astype(jnp.int32)
      return jnp.take_along_axis(out, jnp.broadcast_to(index.reshape(shape), out.shape), axis)

    t = (x - j0).reshape(shape).astype(image.dtype)
    out = (1 - t) * fine(j0) + t * fine(j1)
  return out


def augment_sample(image: jax.Array, label: jax.Array, params: AugmentParams,
                   config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """Applies `params` to one sample: image `[D, H, W, C]`, label `[D, H, W]` (same shapes out).

  Steps whose probability in `config` is 0 are not traced at all (no cost in the compiled step)
  and their fields of `params` are ignored: quarter turns when `rot90_prob` is 0, the elastic
  field when `elastic_prob` is 0, the whole resampling pass when `rotate_prob`, `scale_prob` and
  `elastic_prob` are all 0, the noise when `noise_prob` is 0, and each of nnU-Net's steps when
  its probability (or its per-channel probability) is 0. A channel whose draw is the identity
  (sigma 0, factor, zoom or gamma 1) is passed on unchanged, bit for bit.
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
  # nnU-Net's transforms, in its order. `jnp.where` keeps the channels not drawn exact (the
  # formulas at the identity still round).
  if config.blur_prob > 0 and config.blur_channel_prob > 0:
    blurred = gaussian_blur(image, params.blur_sigma, max_sigma=config.blur_sigma_range[1])
    image = jnp.where(jnp.any(params.blur_sigma > 0, -1), blurred, image)
  if config.brightness_prob > 0:
    image = image * params.brightness.astype(image.dtype)
  if config.contrast_prob > 0:
    contrasted = adjust_contrast(image, params.contrast,
                                 preserve_range=config.contrast_preserve_range)
    image = jnp.where(params.contrast != 1, contrasted, image)
  if config.low_res_prob > 0 and config.low_res_channel_prob > 0:
    image = jnp.where(params.low_res_zoom != 1,
                      simulate_low_resolution(image, params.low_res_zoom), image)
  for prob, gamma, invert in ((config.gamma_inverted_prob, params.gamma_inverted, True),
                              (config.gamma_prob, params.gamma, False)):
    if prob > 0:
      adjusted = adjust_gamma(image, gamma, invert=invert,
                              retain_stats=config.gamma_retain_stats)
      image = jnp.where(gamma != 1, adjusted, image)
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
