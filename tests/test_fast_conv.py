"""Tests for the 3D convolution (`ops.conv.conv3d`, `layers.Conv3D`) and its use in the U-Net."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import layers
from medjax.models.ops import conv as conv_lib
from medjax.models.ops import conv2d as conv2d_lib
from medjax.models.ops import tiling
from medjax.models.ops import winograd
from medjax.models import unet3d

FAST_METHODS = ("winograd", "fold_in", "fold_out", "sum", "im2col", "auto")


def _normal(shape, seed, scale=1.0):
  return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.fixture
def tiny_pieces(monkeypatch):
  """Cuts every 2D batch into pieces of one or two slices, so that piece boundaries, the zero
  rows between volumes and the in-flight ties are all exercised on tiny inputs."""
  monkeypatch.setattr(tiling, "PIECE_BYTES", 256)


def _direct_conv3d(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """SAME stride-1 3D convolution by its definition, in float64 loops over the taps."""
  kd, kh, kw = kernel.shape[:3]
  pd, ph, pw = kd // 2, kh // 2, kw // 2
  b, d, h, w, _ = x.shape
  xp = np.pad(x.astype(np.float64), [(0, 0), (pd, pd), (ph, ph), (pw, pw), (0, 0)])
  y = np.zeros((b, d, h, w, kernel.shape[-1]))
  for a, p, q in itertools.product(range(kd), range(kh), range(kw)):
    y += xp[:, a:a + d, p:p + h, q:q + w] @ kernel[a, p, q].astype(np.float64)
  return y


@pytest.mark.parametrize("method", FAST_METHODS + ("xla",))
def test_conv3d_equals_the_definition(method, tiny_pieces):
  x, kernel = _normal((2, 4, 3, 5, 2), 0), _normal((3, 3, 3, 2, 3), 1)
  y = conv_lib.conv3d(x, kernel, method=method)
  assert y.shape == (2, 4, 3, 5, 3) and y.dtype == jnp.float32
  np.testing.assert_allclose(y, _direct_conv3d(np.asarray(x), np.asarray(kernel)), rtol=1e-5,
                             atol=1e-5)
  # One hand-checked value: the centre tap only, x = 1 at one voxel, gives the kernel's centre.
  delta = jnp.zeros((1, 3, 3, 3, 2)).at[0, 1, 1, 1, 1].set(1.0)
  np.testing.assert_allclose(conv_lib.conv3d(delta, kernel, method=method)[0, 1, 1, 1],
                             kernel[1, 1, 1, 1], rtol=1e-6)


@pytest.mark.parametrize("method", FAST_METHODS)
@pytest.mark.parametrize("kernel_size", [(3, 3, 3), (1, 3, 5), (5, 1, 3)])
def test_fast_forms_match_nn_conv_values_and_gradients(method, kernel_size, tiny_pieces):
  x = _normal((2, 5, 4, 6, 3), 2)
  kernel = _normal((*kernel_size, 3, 4), 3, scale=0.3)
  weights = _normal((2, 5, 4, 6, 4), 4)
  reference = nn.Conv(4, kernel_size, padding="SAME", use_bias=False)

  def loss(conv, x, kernel):  # nonlinear, so gradients see every output value
    return jnp.sum(jnp.sin(conv(x, kernel)) * weights)

  fast = lambda x, k: conv_lib.conv3d(x, k, method=method)
  plain = lambda x, k: reference.apply({"params": {"kernel": k}}, x)
  np.testing.assert_allclose(fast(x, kernel), plain(x, kernel), rtol=1e-5, atol=1e-5)
  g_fast = jax.grad(lambda x, k: loss(fast, x, k), argnums=(0, 1))(x, kernel)
  g_plain = jax.grad(lambda x, k: loss(plain, x, k), argnums=(0, 1))(x, kernel)
  for a, b in zip(g_fast, g_plain):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_jitted_gradient_with_default_pieces():
  # Default piece sizes (one piece here), under jit, float32 and a batch of 3 volumes.
  x, kernel = _normal((3, 6, 5, 4, 2), 5), _normal((3, 3, 3, 2, 5), 6, scale=0.3)

  def loss(method):
    return lambda x, k: jnp.sum(conv_lib.conv3d(x, k, method=method) ** 2)

  g_fast = jax.jit(jax.grad(loss("auto"), argnums=(0, 1)))(x, kernel)
  g_xla = jax.jit(jax.grad(loss("xla"), argnums=(0, 1)))(x, kernel)
  for a, b in zip(g_fast, g_xla):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_row_pieces_cover_all_rows_within_budget(monkeypatch):
  monkeypatch.setattr(tiling, "PIECE_BYTES", 100)
  pieces = tiling.row_pieces(10, 30)  # 300 bytes over 100-byte pieces: 3 or more pieces
  assert pieces[0][0] == 0 and pieces[-1][1] == 10
  assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
  assert all((r1 - r0) * 30 <= 100 for r0, r1 in pieces) and len(pieces) == 4
  assert tiling.row_pieces(5, 1000) == [(i, i + 1) for i in range(5)]  # one row at least
  assert len(tiling.row_pieces(1000, 1000)) == tiling.MAX_PIECES
  assert tiling.row_pieces(7, 1) == [(0, 7)]
  # The backward pass: half as many pieces, but two where the forward pass has two or more.
  assert len(tiling.row_pieces(10, 30, backward=True)) == 2
  assert len(tiling.row_pieces(20, 30, backward=True)) == 4  # forward: 7 pieces
  assert len(tiling.row_pieces(4, 50, backward=True)) == 2  # forward: 2 pieces
  assert tiling.row_pieces(7, 1, backward=True) == [(0, 7)]


@pytest.mark.parametrize("method", FAST_METHODS + ("xla",))
def test_conv3d_of_several_inputs_equals_conv_of_their_concatenation(method, tiny_pieces):
  skip, up = _normal((2, 4, 3, 5, 2), 30), _normal((2, 4, 3, 5, 3), 31)
  kernel, w = _normal((3, 3, 3, 5, 4), 32, scale=0.3), _normal((2, 4, 3, 5, 4), 33)
  loss = lambda y: jnp.sum(y * w)
  y = conv_lib.conv3d([skip, up], kernel, method=method)
  y_ref = conv_lib.conv3d(jnp.concatenate([skip, up], axis=-1), kernel, method="xla")
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  grads = jax.grad(lambda s, u, k: loss(conv_lib.conv3d((s, u), k, method=method)),
                   argnums=(0, 1, 2))(skip, up, kernel)
  grads_ref = jax.grad(lambda s, u, k: loss(conv_lib.conv3d(jnp.concatenate([s, u], -1), k,
                                                          method="xla")),
                       argnums=(0, 1, 2))(skip, up, kernel)
  for a, b in zip(grads, grads_ref):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # The module: one kernel over the summed channels, as nn.Conv on the concatenation.
  variables = layers.Conv3D(4, method=method).init(jax.random.key(0), [skip, up])
  assert variables["params"]["kernel"].shape == (3, 3, 3, 5, 4)


def test_auto_is_winograd_on_cpu():
  x, kernel = _normal((1, 8, 4, 4, 3), 20), _normal((3, 3, 3, 3, 2), 21)
  np.testing.assert_array_equal(conv_lib.conv3d(x, kernel),
                                conv_lib.conv3d(x, kernel, method="winograd"))


@pytest.mark.parametrize("m,r", [(2, 3), (4, 3), (4, 5), (2, 1)])
def test_winograd_matrices_compute_correlation(m, r):
  at, g, bt = winograd.matrices(m, r)
  assert at.shape == (m, m + r - 1) and g.shape == (m + r - 1, r) and bt.shape == (m + r - 1,) * 2
  rng = np.random.default_rng(m * 10 + r)
  for _ in range(3):
    kernel, inputs = rng.normal(size=r), rng.normal(size=m + r - 1)
    direct = [sum(kernel[k] * inputs[i + k] for k in range(r)) for i in range(m)]
    np.testing.assert_allclose(at @ ((g @ kernel) * (bt @ inputs)), direct, rtol=1e-12,
                               atol=1e-12)
  if (m, r) == (2, 3):  # Lavin & Gray's F(2, 3), up to the order of the points
    np.testing.assert_array_equal(np.abs(bt).sum(1), [2, 2, 2, 2])
    np.testing.assert_array_equal(at, [[1, 1, 1, 0], [0, 1, -1, 1]])


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("kernel_size", [(3, 3, 3), (5, 1, 3), (1, 3, 3)])
def test_winograd_any_depth_values_and_gradients(depth, kernel_size, tiny_pieces):
  # Depths that are not a multiple of the block (zero padding inside the last block), depth 1
  # and 2 (blocks of 2), several pieces per volume and two volumes.
  x = _normal((2, depth, 3, 4, 3), 22 + depth)
  kernel = _normal((*kernel_size, 3, 2), 23, scale=0.3)
  weights = _normal((2, depth, 3, 4, 2), 24)
  loss = lambda method: lambda x, k: jnp.sum(
      jnp.sin(conv_lib.conv3d(x, k, method=method)) * weights)
  np.testing.assert_allclose(conv_lib.conv3d(x, kernel, method="winograd"),
                             _direct_conv3d(np.asarray(x), np.asarray(kernel)), rtol=1e-5,
                             atol=1e-5)
  g_fast = jax.grad(loss("winograd"), argnums=(0, 1))(x, kernel)
  g_xla = jax.grad(loss("xla"), argnums=(0, 1))(x, kernel)
  for a, b in zip(g_fast, g_xla):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


BLOCK_BYTES = 4 * (3 * 4 * 3 * 4)  # 4 slices of 3 x 4 x 3 float32


@pytest.mark.parametrize("piece_bytes", [3 * BLOCK_BYTES, 5 * BLOCK_BYTES, 2**20])
def test_winograd_pieces_spanning_volumes(piece_bytes, monkeypatch):
  # Three volumes of depth 9 (3 blocks of 4 each) in pieces of 3 blocks (one per volume), of 5
  # (pieces cross the volume boundaries), and one piece for the whole batch.
  monkeypatch.setattr(tiling, "PIECE_BYTES", piece_bytes)
  x = _normal((3, 9, 3, 4, 3), 40)
  kernel = _normal((3, 3, 3, 3, 2), 41, scale=0.3)
  weights = _normal((3, 9, 3, 4, 2), 42)
  pieces = winograd._pieces(3, 3, tiling.slice_bytes([x]), 4)
  blocks = [(v, i) for piece in pieces for v, i0, i1 in piece for i in range(i0, i1)]
  assert blocks == [(v, i) for v in range(3) for i in range(3)]  # each block once, in order
  assert len(pieces) == {3 * BLOCK_BYTES: 3, 5 * BLOCK_BYTES: 2, 2**20: 1}[piece_bytes]
  np.testing.assert_allclose(conv_lib.conv3d(x, kernel, method="winograd"),
                             _direct_conv3d(np.asarray(x), np.asarray(kernel)), rtol=1e-5,
                             atol=1e-5)
  loss = lambda method: lambda x, k: jnp.sum(
      jnp.sin(conv_lib.conv3d(x, k, method=method)) * weights)
  g_fast = jax.grad(loss("winograd"), argnums=(0, 1))(x, kernel)
  g_xla = jax.grad(loss("xla"), argnums=(0, 1))(x, kernel)
  for a, b in zip(g_fast, g_xla):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel_size", [(5, 5, 5), (3, 3, 3), (1, 3, 5)])
def test_few_outputs_kernel_grad_equals_the_transposed_convolution(kernel_size, monkeypatch):
  # Several pieces per volume (256-byte pieces) and two volumes; XLA's own transpose of its 3D
  # convolution as the reference.
  monkeypatch.setattr(tiling, "PIECE_BYTES", 256)
  x, g = _normal((2, 6, 5, 7, 3), 50), _normal((2, 6, 5, 7, 2), 51)
  conv = lambda k: jax.lax.conv_general_dilated(
      x, k, (1, 1, 1), [(s // 2, s // 2) for s in kernel_size],
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  want = jax.linear_transpose(conv, jax.ShapeDtypeStruct((*kernel_size, 3, 2), jnp.float32))(g)[0]
  got = conv2d_lib.few_outputs_kernel_grad(x, g, (*kernel_size, 3, 2))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("channels", [(40, 8), (8, 40)])
def test_conv2d_kernel_grad_both_forms(channels):
  # Many inputs and few outputs take the per-tap matrix products, the rest XLA's transpose.
  c, o = channels
  x, g = _normal((2, 5, 6, c), 25), _normal((2, 5, 6, o), 26)
  k_struct = jax.ShapeDtypeStruct((3, 3, c, o), jnp.float32)
  reference = jax.linear_transpose(lambda k: conv2d_lib.conv2d(x, k, (1, 1)), k_struct)(g)[0]
  np.testing.assert_allclose(conv2d_lib.conv2d_kernel_grad(x, g, (3, 3)), reference, rtol=1e-4,
                             atol=1e-4)


def test_bfloat16_compute():
  x, kernel = _normal((1, 4, 4, 4, 8), 7), _normal((3, 3, 3, 8, 8), 8, scale=0.2)
  y = conv_lib.conv3d(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
  assert y.dtype == jnp.bfloat16
  reference = conv_lib.conv3d(x, kernel, method="xla")
  scale = float(jnp.max(jnp.abs(reference)))
  assert float(jnp.max(jnp.abs(y.astype(jnp.float32) - reference))) < 0.03 * scale
  g = jax.grad(lambda k: jnp.sum(conv_lib.conv3d(x.astype(jnp.bfloat16), k).astype(jnp.float32)))(
      kernel.astype(jnp.bfloat16))
  assert g.dtype == jnp.bfloat16


def test_conv3d_rejects_bad_arguments():
  x = jnp.zeros((1, 4, 4, 4, 2))
  with pytest.raises(ValueError, match="method"):
    conv_lib.conv3d(x, jnp.zeros((3, 3, 3, 2, 2)), method="fft")
  with pytest.raises(ValueError, match=r"odd kernel sizes.*\(2, 3, 3, 2, 2\)"):
    conv_lib.conv3d(x, jnp.zeros((2, 3, 3, 2, 2)))
  with pytest.raises(ValueError, match=r"sum C_i = C.*kernel shape \(3, 3, 3, 3, 2\)"):
    conv_lib.conv3d(x, jnp.zeros((3, 3, 3, 3, 2)))
  with pytest.raises(ValueError, match=r"\(1, 4, 4, 4, 2\), \(1, 4, 4, 2, 1\)"):
    conv_lib.conv3d([x, jnp.zeros((1, 4, 4, 2, 1))], jnp.zeros((3, 3, 3, 3, 2)))
  with pytest.raises(ValueError, match="conv_method"):
    layers.ConvBNReLU(4, conv_method="fft").init(jax.random.key(0), x, train=False)


def test_conv3d_module_is_interchangeable_with_nn_conv():
  x = _normal((2, 4, 4, 4, 3), 9)
  fast, plain = layers.Conv3D(5), nn.Conv(5, (3, 3, 3), padding="SAME")
  v_fast, v_plain = fast.init(jax.random.key(3), x), plain.init(jax.random.key(3), x)
  # Same names, shapes and initial values (lecun-normal kernel, zero bias).
  assert jax.tree.structure(v_fast) == jax.tree.structure(v_plain)
  for a, b in zip(jax.tree.leaves(v_fast), jax.tree.leaves(v_plain)):
    np.testing.assert_array_equal(a, b)
  params = {"params": {"kernel": _normal((3, 3, 3, 3, 5), 10), "bias": _normal((5,), 11)}}
  np.testing.assert_allclose(fast.apply(params, x), plain.apply(params, x), rtol=1e-5, atol=1e-5)


def test_conv_bn_relu_fast_equals_plain_in_training(tiny_pieces):
  x = _normal((2, 4, 6, 4, 3), 12)
  blocks = {m: layers.ConvBNReLU(4, conv_method=m) for m in ("plain", "auto")}
  variables = blocks["plain"].init(jax.random.key(0), x, train=False)
  assert (jax.tree.map(jnp.shape, jax.eval_shape(
      lambda: blocks["auto"].init(jax.random.key(0), x, train=False)))
          == jax.tree.map(jnp.shape, variables))

  def run(block, params):
    y, updates = block.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                             train=True, mutable=["batch_stats"])
    return jnp.sum(y * jnp.cos(y)), (y, updates)

  results = {m: jax.value_and_grad(lambda p, b=b: run(b, p), has_aux=True)(variables["params"])
             for m, b in blocks.items()}
  (_, (y_plain, up_plain)), g_plain = results["plain"]
  (_, (y_fast, up_fast)), g_fast = results["auto"]
  np.testing.assert_allclose(y_fast, y_plain, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves((up_fast, g_fast)), jax.tree.leaves((up_plain, g_plain))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_unet3d_fast_and_remat_equal_plain():
  # Two levels keep XLA's compile time (three variants) within seconds.
  x = _normal((2, 4, 6, 8, 2), 13)
  labels = jnp.asarray(np.random.default_rng(14).integers(0, 3, size=(2, 4, 6, 8)))
  models = {name: unet3d.UNet3D(num_classes=3, base_features=4, num_levels=2, **kw)
            for name, kw in [("plain", dict(conv_method="plain")), ("auto", {}),
                             ("remat", dict(remat=True))]}
  shapes = {name: jax.eval_shape(lambda m=m: m.init(jax.random.key(0), x, train=False))
            for name, m in models.items()}
  for name in models:  # the same checkpoint layout whatever the options
    assert jax.tree.map(jnp.shape, shapes[name]) == jax.tree.map(jnp.shape, shapes["plain"])
  # Random values from numpy (jax's `init` compiles a sampler per shape: slow on this CPU).
  rng = np.random.default_rng(15)
  variables = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), s.dtype),
                           shapes["plain"])
  variables["batch_stats"] = jax.tree.map(jnp.abs, variables["batch_stats"])  # var > 0

  def step(model):
    def loss_fn(params):
      logits, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                    x, train=True, mutable=["batch_stats"])
      onehot = jax.nn.one_hot(labels, 3)
      return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * onehot, -1)), (logits, updates)
    return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])

  (loss_ref, (logits_ref, stats_ref)), grads_ref = step(models["plain"])
  for name in ("auto", "remat"):
    (loss, (logits, stats)), grads = step(models[name])
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    for a, b in zip(jax.tree.leaves((stats, grads)), jax.tree.leaves((stats_ref, grads_ref))):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("method", FAST_METHODS + ("xla",))
@pytest.mark.parametrize("kernel_size", [(3, 3, 3), (5, 3, 1)])
def test_valid_padding_matches_nn_conv_values_and_gradients(method, kernel_size, tiny_pieces):
  x = _normal((2, 6, 5, 7, 3), 40)
  kernel = _normal((*kernel_size, 3, 4), 41, scale=0.3)
  reference = nn.Conv(4, kernel_size, padding="VALID", use_bias=False)
  plain = lambda x, k: reference.apply({"params": {"kernel": k}}, x)
  fast = lambda x, k: conv_lib.conv3d(x, k, method=method, padding="VALID")
  y = fast(x, kernel)
  assert y.shape == (2, 7 - kernel_size[0], 6 - kernel_size[1], 8 - kernel_size[2], 4)
  np.testing.assert_allclose(y, plain(x, kernel), rtol=1e-5, atol=1e-5)
  weights = _normal(y.shape, 42)
  grads = [jax.grad(lambda x, k, f=f: jnp.sum(jnp.sin(f(x, k)) * weights), argnums=(0, 1))(
      x, kernel) for f in (fast, plain)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_old_method_names_are_aliases():
  x, kernel = _normal((1, 5, 4, 4, 3), 43), _normal((5, 3, 3, 3, 2), 44)
  for old, new in [("stack2d", "fold_in"), ("xla3d", "xla"), ("plain", "xla")]:
    assert conv_lib.canonical_method(old) == new
    np.testing.assert_array_equal(conv_lib.conv3d(x, kernel, method=old),
                                  conv_lib.conv3d(x, kernel, method=new))
  with pytest.raises(ValueError, match=r"Conv3D method must be one of .*'fft'"):
    layers.Conv3D(2, method="fft").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="padding"):
    conv_lib.conv3d(x, kernel, padding="FULL")


def test_auto_method_per_backend_and_kernel():
  assert conv_lib.auto_method((3, 3, 3, 8, 8), "gpu") == "xla"
  assert conv_lib.auto_method((5, 5, 5, 8, 8), "tpu") == "xla"
  assert conv_lib.auto_method((3, 3, 3, 8, 8), "cpu") == "winograd"
  assert conv_lib.auto_method((5, 5, 5, 32, 32), "cpu") == "winograd"
  assert conv_lib.auto_method((5, 5, 5, 32, 4), "cpu") == "sum"
  assert conv_lib.auto_method((1, 3, 3, 8, 8), "cpu") == "sum"
  assert conv_lib.auto_method((1, 1, 1, 64, 4), "cpu") == "im2col"  # a matrix product
  # A network's deepest level: a few voxels, one matrix product.
  assert conv_lib.auto_method((5, 5, 5, 256, 256), "cpu", (4, 4, 4)) == "im2col"
  assert conv_lib.auto_method((3, 3, 3, 8, 8), "cpu", (2, 4, 8)) == "im2col"
  assert conv_lib.auto_method((3, 3, 3, 8, 8), "cpu", (8, 8, 8)) == "winograd"
  assert conv_lib.auto_method((3, 3, 3, 8, 8), "gpu", (4, 4, 4)) == "xla"
