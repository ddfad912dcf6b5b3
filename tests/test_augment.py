"""Tests for medjax.augment: exact flips and quarter turns, identity, closed forms, determinism."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import ndimage as sp_ndimage

from medjax import augment

ALL_OFF = {key: 0.0 for key in augment._PROBS}  # pylint: disable=protected-access
ALL_ON = {key: 1.0 for key in augment._PROBS}  # pylint: disable=protected-access


def _compile(fn, *args):
  """`jax.jit(fn)` compiled for `args` with XLA's backend optimisations off (faster to build;
  these tests check values, not speed)."""
  return jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})


def _batch(shape=(2, 6, 8, 8, 2), values=(0, 3, 7), seed=0):
  rng = np.random.default_rng(seed)
  image = jnp.asarray(rng.normal(size=shape), jnp.float32)
  label = jnp.asarray(rng.choice(values, size=shape[:4]), jnp.int32)
  return image, label


def _jitted(config, image, label):
  fn = functools.partial(augment.augment_batch, config=config)
  return _compile(fn, jax.random.key(0), image, label)


def test_all_probabilities_zero_returns_the_input_exactly():
  image, label = _batch()
  out_image, out_label = _jitted(ALL_OFF, image, label)(jax.random.key(0), image, label)
  np.testing.assert_array_equal(out_image, image)
  np.testing.assert_array_equal(out_label, label)
  assert out_image.dtype == image.dtype and out_label.dtype == label.dtype


def test_identity_params_through_every_step_return_the_input_exactly():
  image, label = _batch(shape=(1, 6, 8, 8, 2))
  config = augment.resolve_config(dict(ALL_ON, fill_mode="constant"))
  params = augment.identity_params(2)
  fn = _compile(lambda x, y, p: augment.augment_sample(x, y, p, config), image[0], label[0],
                params)
  out_image, out_label = fn(image[0], label[0], params)
  np.testing.assert_array_equal(out_image, image[0])
  np.testing.assert_array_equal(out_label, label[0])


def test_flips_equal_jnp_flip():
  image, label = _batch()
  config = dict(ALL_OFF, flip_prob=1.0, flip_axes=(0, 2))
  out_image, out_label = _jitted(config, image, label)(jax.random.key(1), image, label)
  np.testing.assert_array_equal(out_image, jnp.flip(image, (1, 3)))
  np.testing.assert_array_equal(out_label, jnp.flip(label, (1, 3)))


def test_quarter_turns_equal_jnp_rot90():
  image, label = _batch(shape=(6, 4, 5, 5, 1))
  config = dict(ALL_OFF, rot90_prob=1.0, rot90_axes=(1, 2))
  out_image, out_label = _jitted(config, image, label)(jax.random.key(2), image, label)
  turns = []
  for i in range(image.shape[0]):
    matches = [k for k in (1, 2, 3)
               if np.array_equal(out_image[i], jnp.rot90(image[i], k, (1, 2)))]
    assert len(matches) == 1, f"sample {i} is no quarter turn of its input"
    np.testing.assert_array_equal(out_label[i], jnp.rot90(label[i], matches[0], (1, 2)))
    turns.append(matches[0])
  assert len(set(turns)) > 1  # k is drawn per sample


@functools.lru_cache(maxsize=None)
def _sample_fn(fill_mode: str = "nearest"):
  # Every step traced (probabilities > 0); the explicit params decide what happens. No quarter
  # turns: the test volumes are not square.
  config = augment.resolve_config(dict(ALL_ON, rot90_prob=0.0, fill_mode=fill_mode))
  compiled = {}

  def run(x, y, p):
    if "fn" not in compiled:
      compiled["fn"] = _compile(lambda x, y, p: augment.augment_sample(x, y, p, config), x, y, p)
    return compiled["fn"](x, y, p)
  return run


def _params(num_channels=1, **overrides):
  return augment.identity_params(num_channels)._replace(
      **{k: jnp.asarray(v, jnp.float32) for k, v in overrides.items()})


def _ramp(shape=(9, 10, 11), w=(0.5, -1.25, 2.0), b=3.0):
  grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
  return jnp.asarray(grid @ np.array(w) + b, jnp.float32)[..., None], np.array(w), b


def test_rotation_zoom_and_elastic_match_closed_form_on_a_ramp():
  # Trilinear interpolation reproduces a linear image I(q) = w . q + b exactly wherever the
  # sampled position q stays inside the volume, so out(p) = w . q(p) + b there.
  image, w, b = _ramp()
  shape = np.array(image.shape[:3])
  centre = (shape - 1) / 2
  p = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
  label = jnp.zeros(image.shape[:3], jnp.int32)
  a, s = 0.3, 1.2
  cos, sin = np.cos(a), np.sin(a)
  # Content rotated by a about axis 0 (axis 1 towards axis 2) and zoomed by s: output voxel p
  # reads q = R^T (p - c) / s + c with R^T = [[1, 0, 0], [0, cos, sin], [0, -sin, cos]].
  d = p - centre
  q_axis0 = np.stack([d[..., 0], cos * d[..., 1] + sin * d[..., 2],
                      -sin * d[..., 1] + cos * d[..., 2]], -1) / s + centre
  # About axis 2: axis 0 turns towards axis 1.
  q_axis2 = np.stack([cos * d[..., 0] + sin * d[..., 1], -sin * d[..., 0] + cos * d[..., 1],
                      d[..., 2]], -1) / s + centre
  # Elastic field growing linearly along axis 0 on a 5^3 control grid: u_0 = 0.5 * i at control
  # point i, which sits at voxel i * (D - 1) / 4, so u_0(p) = 0.5 * p_0 * 4 / (D - 1).
  grid = np.zeros((5, 5, 5, 3), np.float32)
  grid[..., 0] = 0.5 * np.arange(5)[:, None, None]
  q_elastic = p.copy()
  q_elastic[..., 0] += 0.5 * p[..., 0] * 4 / (shape[0] - 1)
  cases = [
      (_params(angles=(a, 0.0, 0.0), scale=s), q_axis0),
      (_params(angles=(0.0, 0.0, a), scale=s), q_axis2),
      (_params(displacement=grid), q_elastic),
  ]
  for params, q in cases:
    out, _ = _sample_fn()(image, label, params)
    inside = np.all((q >= 0) & (q <= shape - 1), axis=-1)
    assert inside.mean() > 0.3
    np.testing.assert_allclose(np.asarray(out[..., 0])[inside], (q @ w + b)[inside],
                               rtol=1e-5, atol=1e-4)


def test_affine_and_translation_match_scipy():
  # Independent implementation: scipy.ndimage.affine_transform reads input[M @ o + offset].
  rng = np.random.default_rng(3)
  image = jnp.asarray(rng.normal(size=(9, 10, 11, 1)), jnp.float32)
  label = jnp.asarray(rng.integers(0, 4, size=(9, 10, 11)), jnp.int32)
  angles, scale, shift = np.array([0.2, -0.15, 0.1]), 0.9, np.array([0.7, -1.3, 0.4])
  params = _params(angles=angles, scale=scale,
                   displacement=np.broadcast_to(shift, (5, 5, 5, 3)))
  r = np.asarray(augment.rotation_matrix(jnp.asarray(angles, jnp.float32)), np.float64)
  matrix = r.T / scale
  centre = (np.array(image.shape[:3]) - 1) / 2
  offset = centre - matrix @ centre + shift
  for fill_mode, sp_mode in (("nearest", "nearest"), ("constant", "grid-constant")):
    out_image, out_label = _sample_fn(fill_mode)(image, label, params)
    expected = sp_ndimage.affine_transform(np.asarray(image[..., 0], np.float64), matrix, offset,
                                           order=1, mode=sp_mode, cval=0.0)
    np.testing.assert_allclose(out_image[..., 0], expected, atol=1e-4)
    expected_label = sp_ndimage.affine_transform(np.asarray(label), matrix, offset, order=0,
                                                 mode=sp_mode, cval=0)
    assert np.mean(np.asarray(out_label) == expected_label) > 0.99  # ties may round apart


def test_rotation_matrix_convention():
  r0 = np.asarray(augment.rotation_matrix(jnp.array([np.pi / 2, 0.0, 0.0])))
  np.testing.assert_allclose(r0 @ [0, 1, 0], [0, 0, 1], atol=1e-6)  # axis 1 -> axis 2
  r1 = np.asarray(augment.rotation_matrix(jnp.array([0.0, np.pi / 2, 0.0])))
  np.testing.assert_allclose(r1 @ [0, 0, 1], [1, 0, 0], atol=1e-6)  # axis 2 -> axis 0
  r2 = np.asarray(augment.rotation_matrix(jnp.array([0.0, 0.0, np.pi / 2])))
  np.testing.assert_allclose(r2 @ [1, 0, 0], [0, 1, 0], atol=1e-6)  # axis 0 -> axis 1
  # Composition order R = R_2 R_1 R_0 (rotate about axis 0 first).
  angles = (0.3, -0.2, 0.5)
  parts = [np.asarray(augment.rotation_matrix(jnp.array(np.eye(3)[i] * angles[i])))
           for i in range(3)]
  r = np.asarray(augment.rotation_matrix(jnp.array(angles)))
  np.testing.assert_allclose(r, parts[2] @ parts[1] @ parts[0], atol=1e-6)
  np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-6)


def test_intensity_and_noise():
  image, _ = _batch(shape=(1, 9, 10, 11, 2))
  image = image[0]
  label = jnp.zeros(image.shape[:3], jnp.int32)
  key = jax.random.key(7)
  params = _params(num_channels=2, intensity_scale=(2.0, 0.5), intensity_shift=(1.0, -1.0),
                   noise_std=0.1)._replace(noise_key=key)
  config = augment.resolve_config(dict(ALL_OFF, noise_prob=1.0))
  fn = _compile(lambda x, y, p: augment.augment_sample(x, y, p, config), image, label, params)
  out, _ = fn(image, label, params)
  noise = jax.random.normal(key, image.shape)
  expected = image * jnp.array([2.0, 0.5]) + jnp.array([1.0, -1.0]) + 0.1 * noise
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_default_augmentation_keeps_label_values_and_is_seeded():
  image, label = _batch(shape=(2, 8, 8, 8, 2), values=(0, 3, 7))
  fn = _jitted(augment.default_augmentation_config(), image, label)
  out1 = fn(jax.random.key(10), image, label)
  out2 = fn(jax.random.key(10), image, label)
  out3 = fn(jax.random.key(11), image, label)
  np.testing.assert_array_equal(out1[0], out2[0])
  np.testing.assert_array_equal(out1[1], out2[1])
  assert not np.array_equal(out1[0], out3[0])
  assert set(np.unique(out1[1])) <= {0, 3, 7} and set(np.unique(out3[1])) <= {0, 3, 7}
  assert out1[0].shape == image.shape and out1[1].dtype == label.dtype
  assert np.isfinite(out1[0]).all()


def test_sampled_parameters_respect_the_config():
  config = augment.resolve_config(dict(
      flip_prob=1.0, flip_axes=(1,), rot90_prob=1.0, rotate_prob=1.0, max_rotation_deg=5.0,
      scale_prob=1.0, scale_range=(0.8, 0.9), elastic_prob=0.0, intensity_scale_prob=1.0,
      intensity_scale_range=(1.5, 2.0), intensity_shift_prob=0.0, noise_prob=1.0,
      noise_std=0.3))
  keys = jax.random.split(jax.random.key(0), 64)
  p = _compile(jax.vmap(lambda k: augment.sample_params(k, 3, config)), keys)(keys)
  np.testing.assert_array_equal(p.flip, np.tile([False, True, False], (64, 1)))
  assert set(np.unique(p.rot90_k)) == {1, 2, 3}
  assert np.all(np.abs(p.angles) <= np.radians(5.0)) and np.all(p.angles != 0)
  assert np.all((p.scale >= 0.8) & (p.scale <= 0.9))
  np.testing.assert_array_equal(p.displacement, 0.0)
  assert p.intensity_scale.shape == (64, 3)
  assert np.all((p.intensity_scale >= 1.5) & (p.intensity_scale <= 2.0))
  np.testing.assert_array_equal(p.intensity_shift, 0.0)
  np.testing.assert_allclose(p.noise_std, 0.3)


def test_config_handling_and_errors():
  cfg = ml_collections.ConfigDict({"noise_std": 0.2})
  assert augment.resolve_config(cfg).noise_std == 0.2
  assert augment.resolve_config(True).flip_prob == 0.5
  with pytest.raises(ValueError, match="unknown keys"):
    augment.resolve_config({"flip_probability": 0.5})
  with pytest.raises(ValueError, match="noise_prob"):
    augment.resolve_config({"noise_prob": 1.5})
  with pytest.raises(ValueError, match="scale_range"):
    augment.resolve_config({"scale_range": (1.2, 1.1)})
  image, label = _batch(shape=(1, 4, 5, 6, 1))
  with pytest.raises(ValueError, match="rot90_axes"):
    augment.augment_batch(jax.random.key(0), image, label, config=None)
  with pytest.raises(ValueError, match="integer"):
    augment.augment_batch(jax.random.key(0), image, label.astype(jnp.float32), config=ALL_OFF)
  with pytest.raises(ValueError, match=r"\[B, D, H, W\]"):
    augment.augment_batch(jax.random.key(0), image, label[0], config=ALL_OFF)


# nnU-Net's intensity transforms and the 'nnunet' preset.


def _volume(*channels):
  """`[1, 1, N, C]` image whose channel c holds the values `channels[c]` along W."""
  return jnp.asarray(np.stack(channels, -1)[None, None], jnp.float32)


def test_gamma_matches_hand_computed_values():
  # Channel 0: x = (1, 2, 3, 5), min 1, range 4 -> (0, 1/4, 1/2, 1)^2 = (0, 1/16, 1/4, 1)
  # -> * 4 + 1 = (1, 1.25, 2, 5). Channel 1: (0, 1, 4, 9) -> (0, 1/9, 4/9, 1)^(1/2) * 9 =
  # (0, 3, 6, 9).
  image = _volume((1.0, 2.0, 3.0, 5.0), (0.0, 1.0, 4.0, 9.0))
  gamma = jnp.array([2.0, 0.5])
  fn = _compile(lambda x, g: (augment.adjust_gamma(x, g, retain_stats=False),
                              augment.adjust_gamma(x, g, retain_stats=True),
                              augment.adjust_gamma(x, g, invert=True, retain_stats=False),
                              augment.adjust_gamma(x, jnp.ones(2), retain_stats=True),
                              augment.adjust_gamma(x, jnp.ones(2), invert=True)), image, gamma)
  plain, retained, inverted, gamma_one, inverted_one = fn(image, gamma)
  np.testing.assert_allclose(plain[0, 0, :, 0], [1.0, 1.25, 2.0, 5.0], rtol=1e-6)
  np.testing.assert_allclose(plain[0, 0, :, 1], [0.0, 3.0, 6.0, 9.0], rtol=1e-6, atol=1e-6)
  # Retained stats: the hand-computed curve, standardised back to the input's mean and std
  # (channel 0: mean 2.75, variance 2.1875; the curve has mean 2.3125, variance 2.54296875).
  y = np.array([1.0, 1.25, 2.0, 5.0])
  np.testing.assert_allclose(retained[0, 0, :, 0],
                             (y - 2.3125) * np.sqrt(2.1875 / 2.54296875) + 2.75, rtol=1e-6)
  for c in range(2):
    np.testing.assert_allclose(retained[..., c].mean(), image[..., c].mean(), rtol=1e-6)
    np.testing.assert_allclose(retained[..., c].std(), image[..., c].std(), rtol=1e-6)
  # Inverted, channel 0: -x = (-1, -2, -3, -5), min -5, range 4 -> (1, 3/4, 1/2, 0)^2 * 4 - 5 =
  # (-1, -2.75, -4, -5), negated back: (1, 2.75, 4, 5): gamma > 1 now brightens.
  np.testing.assert_allclose(inverted[0, 0, :, 0], [1.0, 2.75, 4.0, 5.0], rtol=1e-6)
  # Gamma 1 is the identity, plain and inverted (up to the rescaling's rounding).
  np.testing.assert_allclose(gamma_one, image, atol=1e-5)
  np.testing.assert_allclose(inverted_one, image, atol=1e-5)


def test_contrast_keeps_the_mean_and_the_range():
  # x = (0, 1, 2, 5), mean 2: factor 1/2 -> (1, 1.5, 2, 3.5); factor 2 -> (-2, 0, 2, 8), clipped
  # to the former [0, 5] -> (0, 0, 2, 5).
  image = _volume((0.0, 1.0, 2.0, 5.0), (0.0, 1.0, 2.0, 5.0))
  factor = jnp.array([0.5, 2.0])
  fn = _compile(lambda x, f: (augment.adjust_contrast(x, f),
                              augment.adjust_contrast(x, f, preserve_range=False)), image, factor)
  kept, free = fn(image, factor)
  np.testing.assert_allclose(kept[0, 0, :, 0], [1.0, 1.5, 2.0, 3.5], rtol=1e-6)
  np.testing.assert_allclose(kept[0, 0, :, 0].mean(), 2.0, rtol=1e-6)
  np.testing.assert_allclose(kept[0, 0, :, 1], [0.0, 0.0, 2.0, 5.0], atol=1e-6)
  np.testing.assert_allclose(free[0, 0, :, 1], [-2.0, 0.0, 2.0, 8.0], atol=1e-6)


def test_blur_matches_scipy_gaussian_filter():
  rng = np.random.default_rng(5)
  shape = (11, 9, 11)
  noise = rng.normal(size=shape)
  # The delta sits more than a kernel radius (4) from the edges along the blurred axes, so no
  # mirrored copy of it adds to the sum.
  delta = np.zeros(shape)
  delta[5, 4, 5] = 1.0
  image = jnp.asarray(np.stack([noise, delta, np.full(shape, 2.5)], -1), jnp.float32)
  # Sigma 0.6 keeps a shorter kernel (radius 2) than the static one of max_sigma (radius 4);
  # sigma 0 leaves its axis alone (as scipy's).
  sigma = jnp.array([[0.6, 0.8, 1.0], [1.0, 0.0, 0.5], [0.7, 0.9, 0.5]])
  fn = _compile(lambda x, s: augment.gaussian_blur(x, s, max_sigma=1.0), image, sigma)
  out = np.asarray(fn(image, sigma), np.float64)
  for c, source in enumerate((noise, delta)):
    expected = sp_ndimage.gaussian_filter(source, sigma=tuple(np.asarray(sigma[c], float)),
                                          mode="mirror", truncate=4.0)
    np.testing.assert_allclose(out[..., c], expected, atol=1e-6)
  np.testing.assert_allclose(out[..., 1].sum(), 1.0, rtol=1e-6)  # the kernel sums to 1
  np.testing.assert_allclose(out[..., 2], 2.5, rtol=1e-6)  # a constant stays constant


def test_low_resolution_matches_jax_image_resize():
  rng = np.random.default_rng(6)
  image = jnp.asarray(rng.normal(size=(10, 10, 10, 3)), jnp.float32)
  zoom = jnp.array([0.5, 0.7, 1.0])  # 5, 7 and 10 voxels per axis at the low resolution
  fn = _compile(augment.simulate_low_resolution, image, zoom)
  out = fn(image, zoom)
  for c, m in ((0, 5), (1, 7)):
    # An independent resampler: nearest down to m voxels, linear back (half-voxel centres).
    low = jax.image.resize(image[..., c], (m, m, m), "nearest")
    np.testing.assert_allclose(out[..., c], jax.image.resize(low, (10, 10, 10), "linear"),
                               atol=1e-5)
  np.testing.assert_array_equal(out[..., 2], image[..., 2])  # zoom 1 is the identity
  # A smooth ramp at zoom 1/2 stays within one voxel's step of itself.
  ramp, w, _ = _ramp((10, 10, 10), w=(0.1, -0.2, 0.05), b=1.0)
  out = fn(jnp.repeat(ramp, 3, -1), zoom)
  error = np.abs(np.asarray(out[..., 0]) - np.asarray(ramp[..., 0]))
  assert error.max() <= np.abs(w).sum() + 1e-5 and error.mean() < 0.5 * np.abs(w).sum()


def test_intensity_steps_through_augment_sample_and_label_untouched():
  # The shared compiled step (every step traced) with one intensity step drawn at a time equals
  # the step's function; the label never changes.
  image, _, _ = _ramp()
  label = jnp.asarray(np.random.default_rng(7).integers(0, 3, image.shape[:3]), jnp.int32)
  def expected_fn(x):  # each step's function on its own, compiled once
    one = lambda v: jnp.array([v], jnp.float32)  # pylint: disable=unnecessary-lambda-assignment
    return (augment.adjust_gamma(x, one(2.0)),
            augment.adjust_gamma(x, one(0.8), invert=True),
            augment.adjust_contrast(x, one(1.2)), x * 1.2,
            augment.simulate_low_resolution(x, one(0.5)),
            augment.gaussian_blur(x, jnp.array([[0.5, 0.7, 1.0]]), max_sigma=1.0))
  expected = _compile(expected_fn, image)(image)
  params = [_params(gamma=(2.0,)), _params(gamma_inverted=(0.8,)), _params(contrast=(1.2,)),
            _params(brightness=(1.2,)), _params(low_res_zoom=(0.5,)),
            _params(blur_sigma=((0.5, 0.7, 1.0),))]
  cases = zip(params, expected)
  for params, expected in cases:
    out_image, out_label = _sample_fn()(image, label, params)
    np.testing.assert_allclose(out_image, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out_image, image)
    np.testing.assert_array_equal(out_label, label)


def test_nnunet_preset_values_and_explicit_keys_win():
  config = augment.resolve_config({"preset": "nnunet"})
  expected = dict(
      flip_prob=0.5, flip_axes=(0, 1, 2), rot90_prob=0.0, rotate_prob=0.2, max_rotation_deg=30.0,
      scale_prob=0.2, scale_range=(0.7, 1.4), scale_convention="shrink", elastic_prob=0.0,
      intensity_scale_prob=0.0, intensity_shift_prob=0.0, noise_prob=0.1, noise_std=0.1,
      noise_std_uniform=True, blur_prob=0.2, blur_channel_prob=0.5, blur_sigma_range=(0.5, 1.0),
      brightness_prob=0.15, brightness_range=(0.75, 1.25), contrast_prob=0.15,
      contrast_range=(0.75, 1.25), contrast_preserve_range=True, low_res_prob=0.25,
      low_res_channel_prob=0.5, low_res_zoom_range=(0.5, 1.0), gamma_prob=0.3,
      gamma_inverted_prob=0.1, gamma_range=(0.7, 1.5), gamma_retain_stats=True)
  for key, value in expected.items():
    assert config[key] == value, key
  # Plain defaults: nnU-Net's steps off.
  plain = augment.resolve_config({})
  assert plain.preset == "none" and plain.rotate_prob == 0.5 and plain.elastic_prob == 0.25
  assert all(plain[k] == 0.0 for k in ("blur_prob", "brightness_prob", "contrast_prob",
                                       "low_res_prob", "gamma_prob", "gamma_inverted_prob"))
  # A key given wins, even with the plain default's value; None means "the preset's".
  config = augment.resolve_config({"preset": "nnunet", "rotate_prob": 0.5, "elastic_prob": 0.25,
                                   "gamma_prob": None})
  assert (config.rotate_prob, config.elastic_prob, config.gamma_prob) == (0.5, 0.25, 0.3)
  # The run config declares every key None, as the command line leaves them unless set.
  from medjax.configs import default  # pylint: disable=g-import-not-at-top
  run = default.augmentation_config()
  run.preset = "nnunet"
  run.scale_range = (0.8, 1.1)
  config = augment.resolve_config({k: v for k, v in run.items() if k != "enabled"})
  assert config.scale_range == (0.8, 1.1) and config.scale_prob == 0.2
  assert augment.resolve_config({k: v for k, v in default.augmentation_config().items()
                                 if k != "enabled"}) == augment.default_augmentation_config()


def test_sampled_nnunet_parameters():
  config = augment.resolve_config(dict(
      preset="nnunet", noise_prob=1.0, blur_prob=1.0, blur_channel_prob=1.0, brightness_prob=1.0,
      contrast_prob=1.0, low_res_prob=1.0, low_res_channel_prob=1.0, gamma_prob=1.0,
      gamma_inverted_prob=1.0, scale_prob=1.0))
  keys = jax.random.split(jax.random.key(1), 256)
  p = _compile(jax.vmap(lambda k: augment.sample_params(k, 2, config)), keys)(keys)
  assert np.all((p.noise_std >= 0) & (p.noise_std <= 0.1)) and np.std(p.noise_std) > 0.02
  assert p.blur_sigma.shape == (256, 2, 3)
  assert np.all((p.blur_sigma >= 0.5) & (p.blur_sigma <= 1.0))
  assert np.all((p.low_res_zoom >= 0.5) & (p.low_res_zoom <= 1.0))
  # 'shrink': the content zoom is 1 / s with s uniform in (0.7, 1.4).
  assert np.all((p.scale >= 1 / 1.4 - 1e-6) & (p.scale <= 1 / 0.7 + 1e-6))
  for field in (p.brightness, p.contrast):
    assert np.all((field >= 0.75) & (field <= 1.25))
  # BGContrast: half the exponents below 1 although (0.7, 1) is the shorter part of the range.
  for field in (p.gamma, p.gamma_inverted):
    assert np.all((field >= 0.7) & (field <= 1.5)) and 0.4 < np.mean(field < 1) < 0.6


def test_nnunet_preset_batch_is_seeded_and_keeps_labels():
  image, label = _batch(shape=(2, 8, 8, 8, 2), values=(0, 3, 7))
  # Every step certain, so that each one runs on these two samples.
  config = dict(preset="nnunet", rotate_prob=1.0, scale_prob=1.0, noise_prob=1.0, blur_prob=1.0,
                brightness_prob=1.0, contrast_prob=1.0, low_res_prob=1.0, gamma_prob=1.0,
                gamma_inverted_prob=1.0)
  fn = _jitted(config, image, label)
  out1, out2 = fn(jax.random.key(4), image, label), fn(jax.random.key(4), image, label)
  np.testing.assert_array_equal(out1[0], out2[0])
  np.testing.assert_array_equal(out1[1], out2[1])
  assert np.isfinite(out1[0]).all() and set(np.unique(out1[1])) <= {0, 3, 7}
  assert not np.array_equal(out1[0], fn(jax.random.key(5), image, label)[0])


@pytest.mark.parametrize("key, value", [
    ("preset", "nnUNetv2"), ("gamma_prob", 1.5), ("blur_channel_prob", -0.1),
    ("blur_sigma_range", (0.0, 1.0)), ("low_res_zoom_range", (0.5, 1.5)),
    ("gamma_range", (0.0, 1.5)), ("contrast_range", (1.25, 0.75)),
    ("brightness_range", (-0.5, 1.0)), ("scale_convention", "smaller"),
    ("gamma_retain_stats", "yes"), ("noise_std", -0.1)])
def test_bad_values_name_the_key(key, value):
  with pytest.raises(ValueError, match=key):
    augment.resolve_config({key: value})
