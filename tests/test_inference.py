"""Tests for medjax.inference: MONAI's tiling rule, exact blending, padding, shrinking models."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from medjax import inference


# ---------------------------------------------------------------------------------------------
# Tile positions, worked by hand from MONAI's `_get_scan_interval` + `dense_patch_slices`.


@pytest.mark.parametrize("image, roi, overlap, interval, starts", [
    # interval int(4 * 0.75) = 3; windows while d*3 + 4 < 10: d = 0, 1, 2 (6 + 4 = 10 reaches).
    (10, 4, 0.25, 3, [0, 3, 6]),
    # interval 2; d = 4 is first with 8 + 4 >= 11; the last start 8 overruns by 1 -> 7.
    (11, 4, 0.5, 2, [0, 2, 4, 6, 7]),
    # overlap 0: interval 4; 8 + 4 = 12 overruns 10 by 2 -> 6.
    (10, 4, 0.0, 4, [0, 4, 6]),
    # roi == image: interval = roi, one window.
    (64, 64, 0.25, 64, [0]),
    # int(1 * 0.5) = 0 -> interval 1.
    (3, 1, 0.5, 1, [0, 1, 2]),
    # 144 voxels, roi 64, overlap 0.25: interval 48; 96 + 64 = 160 >= 144 -> 96 moved to 80.
    (144, 64, 0.25, 48, [0, 48, 80]),
])
def test_window_starts_match_monai_rule(image, roi, overlap, interval, starts):
  assert inference.get_scan_interval((image,), (roi,), (overlap,)) == (interval,)
  assert inference.window_starts_1d(image, roi, interval) == starts


def test_window_starts_3d_order():
  starts = inference.window_starts((5, 4, 3), (3, 4, 2), (0.5,) * 3)
  # Per axis: D [0, 1, 2]; H [0] (roi == image); W: interval 1 -> [0, 1].
  expected = [(d, 0, w) for d in (0, 1, 2) for w in (0, 1)]
  np.testing.assert_array_equal(starts, np.asarray(expected))


def test_gaussian_importance_map_values():
  # roi 4, sigma = 0.5: x = -1.5, -0.5, 0.5, 1.5 -> exp(-2 x^2).
  w = inference.importance_map((4, 1, 1), "gaussian", 0.125)
  g = np.exp(-2.0 * np.array([2.25, 0.25, 0.25, 2.25]))
  np.testing.assert_allclose(w[:, 0, 0], g, rtol=1e-6)
  # Clamped below at 1e-3 where the Gaussian falls lower (roi 16: exp(-7.5^2/8) ~ 9e-4).
  w16 = inference.importance_map((16, 1, 1), "gaussian", 0.125)
  assert w16.min() == pytest.approx(1e-3)
  np.testing.assert_array_equal(inference.importance_map((2, 3, 4)), np.ones((2, 3, 4)))


# ---------------------------------------------------------------------------------------------
# Blending: known predictors give known outputs.


def _coords(shape, batch=1):
  """Input whose channels are the global voxel coordinates (d, h, w) plus a batch marker."""
  d, h, w = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
  x = np.stack([d, h, w], -1)[None].repeat(batch, 0)
  marker = np.arange(batch, dtype=np.float32).reshape(batch, 1, 1, 1, 1) * np.ones(
      (batch, *shape, 1), np.float32)
  return np.concatenate([x, marker], -1)


@pytest.mark.parametrize("shape, roi, overlap, mode, sw", [
    ((13, 10, 7), (4, 5, 3), 0.25, "constant", 1),
    ((13, 10, 7), (4, 5, 3), 0.5, "gaussian", 3),   # 3 does not divide the window count
    ((9, 8, 7), (5, 8, 4), 0.0, "gaussian", 2),     # overlap 0, roi == image on one axis
    ((7, 5, 6), (16, 4, 9), 0.25, "gaussian", 2),   # roi larger than the image on two axes
    ((6, 5, 4), (8, 8, 8), 0.25, "constant", 1),    # whole scan inside one roi: single pass
])
def test_identity_and_affine_predictor_recover_input(shape, roi, overlap, mode, sw):
  x = _coords(shape, batch=2)
  out = inference.sliding_window_inference(x, roi, sw, lambda v: v, overlap=overlap, mode=mode)
  assert out.shape == x.shape
  np.testing.assert_allclose(np.asarray(out), x, atol=1e-4)
  # A per-voxel affine map with a different channel count: [2 x0 + 1, x1 - x2, 3].
  fn = lambda v: jnp.stack([2 * v[..., 0] + 1, v[..., 1] - v[..., 2], 0 * v[..., 0] + 3], -1)
  out = inference.sliding_window_inference(x, roi, sw, fn, overlap=overlap, mode=mode)
  np.testing.assert_allclose(np.asarray(out), np.asarray(fn(x)), atol=1e-4)


def test_gaussian_blend_of_position_dependent_predictor_by_hand():
  # Image 6 long, roi 4, overlap 0.5: windows start at 0 and 2. The predictor outputs the local
  # index 0..3 of each voxel in its window; weights g = exp(-2 x^2) at x = -1.5, -0.5, 0.5, 1.5.
  ramp = lambda v: jnp.broadcast_to(jnp.arange(4.0)[None, :, None, None, None], v.shape)
  out = inference.sliding_window_inference(np.zeros((1, 6, 1, 1, 1), np.float32), (4, 1, 1), 1,
                                           ramp, overlap=0.5, mode="gaussian")
  g_edge, g_mid = np.exp(-4.5), np.exp(-0.5)
  expected = [0, 1,
              (g_mid * 2 + g_edge * 0) / (g_mid + g_edge),  # voxel 2: local 2 and local 0
              (g_edge * 3 + g_mid * 1) / (g_mid + g_edge),  # voxel 3: local 3 and local 1
              2, 3]
  np.testing.assert_allclose(np.asarray(out)[0, :, 0, 0, 0], expected, rtol=1e-5)
  # Constant mode: plain averages.
  out = inference.sliding_window_inference(np.zeros((1, 6, 1, 1, 1), np.float32), (4, 1, 1), 1,
                                           ramp, overlap=0.5, mode="constant")
  np.testing.assert_allclose(np.asarray(out)[0, :, 0, 0, 0], [0, 1, 1, 2, 2, 3], rtol=1e-6)


def test_flip_averaging_flips_back():
  # local ramp along D averaged with its mirror (3 - i) -> 1.5 everywhere; identity unchanged.
  ramp = lambda v: jnp.broadcast_to(jnp.arange(4.0)[None, :, None, None, None], v.shape)
  x = np.zeros((1, 6, 2, 3, 1), np.float32)
  out = inference.sliding_window_inference(x, (4, 2, 3), 2, ramp, overlap=0.5,
                                           flip_axes=[(0,)])
  np.testing.assert_allclose(np.asarray(out), 1.5, rtol=1e-6)
  x = _coords((7, 6, 5))
  out = inference.sliding_window_inference(x, (4, 4, 4), 2, lambda v: v, mode="gaussian",
                                           flip_axes=[(0,), (1, 2), 2])
  np.testing.assert_allclose(np.asarray(out), x, atol=1e-4)


def test_shrinking_predictor_matches_valid_box_filter():
  # A valid 3x3x3 mean (roi 6 -> output 4) tiled over the scan equals the same-size mean with
  # zero padding at the border (scipy reference), and the centred crop recovers coordinates.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 11, 9, 7, 1)).astype(np.float32)
  kernel = jnp.ones((3, 3, 3, 1, 1), jnp.float32) / 27.0

  def box(v):
    return jax.lax.conv_general_dilated(v, kernel, (1, 1, 1), "VALID",
                                        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))

  expected = ndimage.uniform_filter(x[0, ..., 0], size=3, mode="constant", cval=0.0)
  for overlap, mode in ((0.25, "gaussian"), (0.0, "constant")):
    out = inference.sliding_window_inference(x, (6, 6, 6), 2, box, overlap=overlap, mode=mode)
    assert out.shape == x.shape
    np.testing.assert_allclose(np.asarray(out)[0, ..., 0], expected, atol=1e-5)
  coords = _coords((9, 5, 8))
  crop = lambda v: v[:, 2:-3, 1:-1, 2:-3]  # 8 -> 3 (uneven margins 2 / 3), 4 -> 2 (1 / 1)
  out = inference.sliding_window_inference(coords, (8, 4, 8), 1, crop, overlap=0.5,
                                           mode="gaussian")
  np.testing.assert_allclose(np.asarray(out), coords, atol=1e-4)


def test_padding_modes_reach_the_predictor():
  # Image [5, 7, 11], roi 6: padded 1 before and 2 after (MONAI's split). A predictor that sums
  # its window along D sees the padded values: constant (-1) [-1 | 5 7 11 | -1 -1] = 20,
  # replicate [5 | .. | 11 11] = 50, reflect [7 | .. | 7 5] = 42, circular [11 | .. | 5 7] = 46.
  x = np.array([5.0, 7.0, 11.0], np.float32).reshape(1, 3, 1, 1, 1)
  total = lambda v: jnp.broadcast_to(v.sum(1, keepdims=True), v.shape)
  expected = {"constant": 20.0, "replicate": 50.0, "reflect": 42.0, "circular": 46.0}
  for padding_mode, value in expected.items():
    out = inference.sliding_window_inference(x, (6, 1, 1), 1, total, padding_mode=padding_mode,
                                             cval=-1.0)
    np.testing.assert_allclose(np.asarray(out)[0, :, 0, 0, 0], [value] * 3, err_msg=padding_mode)


def test_matches_monai_sliding_window_inference():
  torch = pytest.importorskip("torch")
  monai_inferers = pytest.importorskip("monai.inferers")
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 13, 10, 7, 2)).astype(np.float32)
  r = (np.arange(4)[:, None, None] + 0.1 * np.arange(5)[None, :, None]
       + 0.01 * np.arange(3)[None, None, :]).astype(np.float32)
  jfn = lambda v: jnp.concatenate([v * r[None, ..., None], v[..., :1] ** 2], -1)
  tfn = lambda v: torch.cat([v * torch.as_tensor(r)[None, None], v[:, :1] ** 2], 1)
  for overlap, mode, sw in ((0.25, "gaussian", 1), (0.6, "constant", 3)):
    ours = inference.sliding_window_inference(x, (4, 5, 3), sw, jfn, overlap=overlap, mode=mode)
    theirs = monai_inferers.sliding_window_inference(
        torch.as_tensor(np.moveaxis(x, -1, 1)), (4, 5, 3), sw, tfn, overlap=overlap, mode=mode)
    np.testing.assert_allclose(np.asarray(ours), np.moveaxis(theirs.numpy(), 1, -1), atol=1e-5)


def test_predict_volume_with_per_voxel_model():
  # A 1x1x1 conv model is per-voxel, so the blended softmax equals the softmax of one pass.
  class PerVoxel(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool):
      del train
      return nn.Conv(3, (1, 1, 1))(x)

  model = PerVoxel()
  rng = np.random.default_rng(2)
  image = rng.normal(size=(9, 7, 6, 2)).astype(np.float32)
  variables = model.init(jax.random.key(0), image[None], train=False)
  expected = jax.nn.softmax(model.apply(variables, image[None], train=False), -1)[0]
  probs = inference.predict_volume(model, variables, image, roi_size=(4, 4, 4), overlap=0.25,
                                   mode="gaussian", sw_batch_size=2)
  assert probs.shape == (9, 7, 6, 3) and probs.dtype == np.float32
  np.testing.assert_allclose(probs, np.asarray(expected), atol=1e-5)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_predict_volume_members_are_the_flips_and_average_to_tta():
  # A 3x3x3 convolution sees which way the scan runs, so each flip gives its own prediction.
  class Conv3(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool):
      del train
      return nn.Conv(3, (3, 3, 3))(x)

  model = Conv3()
  rng = np.random.default_rng(3)
  image = rng.normal(size=(8, 6, 5, 2)).astype(np.float32)
  variables = model.init(jax.random.key(1), image[None], train=False)
  flips = ((0,), (1,), (2,))
  # One window holding the whole scan: member i is exactly flip(model(flip(scan))).
  members = inference.predict_volume(model, variables, image, roi_size=(8, 6, 5),
                                     flip_axes=flips, members=True)
  assert members.shape == (4, 8, 6, 5, 3)
  for m, axes in zip(members, ((),) + flips):
    flipped = np.flip(image, axes) if axes else image
    expected = jax.nn.softmax(
        model.apply(variables, jnp.asarray(flipped.copy())[None], train=False), -1)[0]
    np.testing.assert_allclose(m, np.flip(np.asarray(expected), axes) if axes else expected,
                               atol=1e-5)
  assert np.abs(members[1] - members[0]).max() > 1e-3
  # Blended windows: the members' mean is the in-window flip average.
  kwargs = dict(roi_size=(4, 4, 4), overlap=0.5, sw_batch_size=3, flip_axes=flips)
  members = inference.predict_volume(model, variables, image, members=True, **kwargs)
  tta = inference.predict_volume(model, variables, image, **kwargs)
  np.testing.assert_allclose(members.mean(0), tta, atol=1e-6)


def test_predict_volume_with_valid_convolution_hyperdensenet():
  # A small HyperDenseNet (2 valid 3x3x3 layers: margin 2) is translation-equivariant, so the
  # sliding-window result equals one pass over the scan zero-padded by the margin.
  from medjax.models import hyperdensenet  # pylint: disable=g-import-not-at-top
  model = hyperdensenet.HyperDenseNet(num_classes=3, growth=(2, 2), fc_features=(4,))
  rng = np.random.default_rng(3)
  image = rng.normal(size=(11, 9, 8, 2)).astype(np.float32)
  padded = np.pad(image, [(2, 2)] * 3 + [(0, 0)])
  variables = model.init(jax.random.key(0), padded[None], train=False)
  expected = jax.nn.softmax(model.apply(variables, padded[None], train=False), -1)[0]
  assert expected.shape == (11, 9, 8, 3)
  probs = inference.predict_volume(model, variables, image, roi_size=(8, 8, 8), overlap=0.5,
                                   mode="gaussian", sw_batch_size=2)
  np.testing.assert_allclose(probs, np.asarray(expected), atol=1e-5)


def test_jitted_partial_predictor_is_compiled_once():
  calls = []

  @jax.jit
  def fn(scale, v):
    calls.append(1)  # runs at trace time only
    return v * scale

  x = _coords((6, 5, 4))
  for scale in (1.0, 2.0):
    out = inference.sliding_window_inference(x, (3, 3, 3), 1, functools.partial(fn, scale))
    np.testing.assert_allclose(np.asarray(out), scale * x, atol=1e-4)
  assert len(calls) == 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(overlap=1.0), "overlap"),
    (dict(overlap=-0.1), "overlap"),
    (dict(mode="linear"), "mode"),
    (dict(padding_mode="zeros"), "padding_mode"),
    (dict(roi_size=(4, 4)), "roi_size"),
    (dict(sw_batch_size=0), "sw_batch_size"),
    (dict(predictor=lambda v: jnp.repeat(v, 2, axis=1)), "larger"),
    (dict(predictor=lambda v: v[0]), "expected"),
    (dict(flip_axes=[(3,)]), "flip_axes"),
    (dict(roi_weight_map=np.ones((2, 2, 2))), "roi_weight_map"),
])
def test_bad_arguments_raise(kwargs, match):
  args = dict(inputs=np.zeros((1, 8, 8, 8, 1), np.float32), roi_size=(4, 4, 4), sw_batch_size=1,
              predictor=lambda v: v)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    inference.sliding_window_inference(**args)
  with pytest.raises(ValueError, match="5 axes"):
    inference.sliding_window_inference(np.zeros((8, 8, 8, 1)), 4, 1, lambda v: v)


# ---------------------------------------------------------------------------------------------
# Short last batch (MONAI's default) vs pad_last_batch=True, and several outputs.


def test_cval_batch_mixing_predictor_monai_case():
  # MONAI's test_cval in 3D: a 3x3(x1) image of ones, roi 5x5(x1) -> padded with cval = -1 to one
  # window of sum 9 - 16 = -7, so `data + data.sum()` gives 1 - 7 = -6. With sw_batch_size 10 the
  # window runs alone (MONAI); with pad_last_batch=True it is repeated 10 times: 1 - 70 = -69.
  x = np.ones((1, 3, 3, 1, 1), np.float32)
  compute = lambda v: v + v.sum()
  kwargs = dict(overlap=0.5, padding_mode="constant", cval=-1.0, mode="constant")
  out = inference.sliding_window_inference(x, (5, 5, 1), 10, compute, **kwargs)
  np.testing.assert_allclose(np.asarray(out), -6.0)
  out = inference.sliding_window_inference(x, (5, 5, 1), 10, compute, pad_last_batch=True,
                                           **kwargs)
  np.testing.assert_allclose(np.asarray(out), -69.0)


def test_short_last_batch_runs_at_its_own_size_by_hand():
  # Two scans of length 10, roi 4, overlap 0.25: windows [0, 4), [3, 7), [6, 10) per scan, six in
  # all, sw_batch_size 4 -> batches {s0w0, s0w1, s0w2, s1w0} and {s1w1, s1w2}. The predictor
  # outputs its batch size n. Scan 0 sees 4 everywhere; scan 1: 4 on [0, 3), (4 + 2) / 2 = 3 at
  # voxel 3 (windows 0 and 1), 2 from voxel 4 on. With pad_last_batch=True every batch has 4.
  x = np.zeros((2, 10, 1, 1, 1), np.float32)
  size = lambda v: jnp.full(v.shape, v.shape[0], jnp.float32)
  out = np.asarray(inference.sliding_window_inference(x, (4, 1, 1), 4, size))[..., 0, 0, 0]
  np.testing.assert_allclose(out, [[4.0] * 10, [4, 4, 4, 3, 2, 2, 2, 2, 2, 2]])
  out = inference.sliding_window_inference(x, (4, 1, 1), 4, size, pad_last_batch=True)
  np.testing.assert_allclose(np.asarray(out), 4.0)
  # The whole-scan path (roi covers the scan): 3 scans, sw_batch_size 2 -> sizes 2, 2, 1.
  x = np.zeros((3, 4, 1, 1, 1), np.float32)
  out = inference.sliding_window_inference(x, (4, 1, 1), 2, size)
  np.testing.assert_allclose(np.asarray(out)[:, 0, 0, 0, 0], [2, 2, 1])
  out = inference.sliding_window_inference(x, (4, 1, 1), 2, size, pad_last_batch=True)
  np.testing.assert_allclose(np.asarray(out), 2.0)


def test_pad_last_batch_compiles_once_default_compiles_the_short_batch():
  # 3 windows per axis-0 (image 10, roi 4), sw_batch_size 2: batches of 2 and 1.
  for pad_last_batch, traces in ((True, 1), (False, 2)):
    calls = []

    @jax.jit
    def fn(v, calls=calls):
      calls.append(v.shape[0])  # runs at trace time only
      return v * 2.0

    x = _coords((10, 3, 3))
    out = inference.sliding_window_inference(x, (4, 3, 3), 2, fn, pad_last_batch=pad_last_batch)
    np.testing.assert_allclose(np.asarray(out), 2 * x, atol=1e-4)
    assert len(calls) == traces, (pad_last_batch, calls)


@pytest.mark.parametrize("shape, roi, sw, flips", [
    ((13, 10, 7), (4, 5, 3), 3, None),       # tiled, short last batch
    ((9, 8, 7), (5, 8, 4), 2, [(0,), (1, 2)]),  # with flip averaging
    ((6, 5, 4), (8, 8, 8), 1, None),         # whole scan in one roi
])
def test_multiple_outputs_keep_their_structure(shape, roi, sw, flips):
  x = _coords(shape, batch=2)
  fn = lambda v: jnp.stack([2 * v[..., 0] + 1, v[..., 1] - v[..., 2]], -1)
  expected = {"identity": x, "affine": np.asarray(fn(x))}
  kwargs = dict(overlap=0.5, mode="gaussian", flip_axes=flips)
  outs = inference.sliding_window_inference(x, roi, sw, lambda v: (v, fn(v)), **kwargs)
  assert isinstance(outs, tuple) and len(outs) == 2
  for out, ref in zip(outs, expected.values()):
    assert out.shape == ref.shape
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)
  outs = inference.sliding_window_inference(x, roi, sw, lambda v: [v, fn(v)], **kwargs)
  assert isinstance(outs, list) and len(outs) == 2
  np.testing.assert_allclose(np.asarray(outs[1]), expected["affine"], atol=1e-4)
  outs = inference.sliding_window_inference(
      x, roi, sw, lambda v: {"identity": v, "affine": fn(v)}, **kwargs)
  assert sorted(outs) == ["affine", "identity"]
  for key, ref in expected.items():
    np.testing.assert_allclose(np.asarray(outs[key]), ref, atol=1e-4, err_msg=key)


def test_multiple_outputs_of_a_shrinking_predictor_and_position_dependent_blend():
  # Both outputs cropped alike (valid-convolution margins 2 / 3 and 1 / 1) recover coordinates.
  coords = _coords((9, 5, 8))
  crop = lambda v: v[:, 2:-3, 1:-1, 2:-3]
  outs = inference.sliding_window_inference(coords, (8, 4, 8), 1,
                                            lambda v: (crop(v), 3 * crop(v)[..., :1]),
                                            overlap=0.5, mode="gaussian")
  np.testing.assert_allclose(np.asarray(outs[0]), coords, atol=1e-4)
  np.testing.assert_allclose(np.asarray(outs[1]), 3 * coords[..., :1], atol=1e-4)
  # Each output blended with the same weights: the hand-computed ramp of the gaussian test.
  ramp = lambda v: jnp.broadcast_to(jnp.arange(4.0)[None, :, None, None, None], v.shape)
  outs = inference.sliding_window_inference(np.zeros((1, 6, 1, 1, 1), np.float32), (4, 1, 1), 1,
                                            lambda v: {"a": ramp(v), "b": 1 - ramp(v)},
                                            overlap=0.5, mode="constant")
  np.testing.assert_allclose(np.asarray(outs["a"])[0, :, 0, 0, 0], [0, 1, 1, 2, 2, 3], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(outs["b"])[0, :, 0, 0, 0], [1, 0, 0, -1, -1, -2],
                             rtol=1e-6)


def test_outputs_of_different_spatial_size_raise():
  x = np.zeros((1, 8, 8, 8, 1), np.float32)
  with pytest.raises(ValueError, match="different spatial sizes"):
    inference.sliding_window_inference(x, (4, 4, 4), 1, lambda v: (v, v[:, ::2, ::2, ::2]))
  with pytest.raises(ValueError, match="expected"):
    inference.sliding_window_inference(x, (4, 4, 4), 1, lambda v: (v, v[0]))


def test_short_last_batch_and_multi_output_match_live_monai():
  torch = pytest.importorskip("torch")
  monai_inferers = pytest.importorskip("monai.inferers")
  rng = np.random.default_rng(7)
  x = rng.normal(size=(2, 11, 9, 7, 2)).astype(np.float32)
  # Batch-mixing: each window shifted by a sum over its batch (a mean would not see repeats).
  # 2 x 18 windows in batches of 5 and 2 x 48 in batches of 7: both leave a short last batch.
  jfn = lambda v: (v + 0.01 * v.sum(), v[..., :1] ** 2)
  tfn = lambda v: (v + 0.01 * v.sum(), v[:, :1] ** 2)
  for overlap, mode, sw in ((0.25, "gaussian", 5), (0.5, "constant", 7)):
    ours = inference.sliding_window_inference(x, (5, 4, 4), sw, jfn, overlap=overlap, mode=mode)
    theirs = monai_inferers.sliding_window_inference(
        torch.as_tensor(np.moveaxis(x, -1, 1)), (5, 4, 4), sw, tfn, overlap=overlap, mode=mode)
    assert isinstance(ours, tuple) and len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
      np.testing.assert_allclose(np.asarray(a), np.moveaxis(b.numpy(), 1, -1), atol=1e-5)
