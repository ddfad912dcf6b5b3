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
