"""Tests for the MedicalZoo model ports: VNET, VNET2, DENSENET1-3, HYPERDENSENET.

Parameter counts use the MedicalZoo widths through `jax.eval_shape` (nothing is allocated);
forward/backward runs use tiny widths and volumes to keep the CPU time small.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import models
from medjax.models import densenet
from medjax.models import hyperdensenet
from medjax.models import vnet
from medjax.models import layers

# MedicalZoo (black0017/MedicalZooPytorch, lib/medzoo) built with 2 input channels, 4 classes.
MEDICALZOO_COUNTS = {
    "VNET": 45_613_956,
    "VNET2": 12_249_988,
    "DENSENET1": 2_697_811,
    "DENSENET3": 2_995_086,
    "HYPERDENSENET": 10_361_922,
}
# MedicalZoo's DENSENET2 has 4,837,382 parameters but cannot run; ours takes the 426 channels its
# paths produce (-2 * 77 * 400) and drops the two path classifiers it never uses (-2 * 600).
DENSENET2_FIXED = 4_837_382 - 2 * 77 * 400 - 2 * 600


def _init(model: nn.Module, x: jax.Array, seed: int = 0) -> dict:
  """Random variables with the model's structure, without running its (slow) initialisers.

  Kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2), BatchNorm at identity (scale 1, mean 0,
  var 1), PReLU slopes 0.25. `model.init` compiles every initialiser call separately on CPU
  (about 10-25 s for these tiny models); this takes milliseconds.
  """
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  rng = np.random.default_rng(seed)

  def make(path, s):
    leaf = path[-1].key
    if leaf == "kernel":
      return jnp.asarray(rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), s.shape), s.dtype)
    if leaf == "bias":
      return jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype)
    if leaf in ("scale", "var"):
      return jnp.ones(s.shape, s.dtype)
    if leaf == "mean":
      return jnp.zeros(s.shape, s.dtype)
    if leaf == "negative_slope":
      return jnp.full(s.shape, 0.25, s.dtype)
    raise AssertionError(f"unexpected variable {path}")

  return jax.tree_util.tree_map_with_path(make, shapes)


def _compile(fn, *args):
  """`jax.jit(fn)` compiled for `args` with XLA's backend optimisations off.

  These tests check values, not speed; unoptimised compilation of the 3D convolutions' backward
  passes takes about half the CPU time on this machine.
  """
  return jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})


def _count(model: nn.Module, spatial: int = 16, channels: int = 2) -> int:
  return layers.count_parameters(model, (1, spatial, spatial, spatial, channels))


@pytest.mark.parametrize("name", sorted(MEDICALZOO_COUNTS))
def test_parameter_count_matches_medicalzoo(name):
  model = models.model_class(name)(num_classes=4)
  spatial = 20 if name == "HYPERDENSENET" else 16
  assert _count(model, spatial) == MEDICALZOO_COUNTS[name]


def test_densenet2_parameter_count_after_channel_fix():
  assert DENSENET2_FIXED == 4_774_582
  assert _count(models.model_class("DENSENET2")(num_classes=4)) == DENSENET2_FIXED
  # Sum fusion: classifier on 150 instead of 300 channels.
  assert _count(densenet.DualPathDenseNet(4, fusion="sum")) == DENSENET2_FIXED - 150 * 4


def test_variant_parameter_counts():
  # The paper's output block: a single 1x1x1 conv 32 -> 4 with bias (132 parameters) instead of
  # conv5 32 -> 4 (16,004) + BN (8) + PReLU (4) + conv1 4 -> 4 (20).
  delta = 132 - (32 * 4 * 125 + 4 + 8 + 4 + 20)
  assert _count(vnet.VNet(4, paper_output_block=True)) == MEDICALZOO_COUNTS["VNET"] + delta
  assert _count(vnet.VNetLight(4, paper_output_block=True)) == MEDICALZOO_COUNTS["VNET2"] + delta
  # ELU has no parameters: minus every per-channel PReLU slope. Per stage l (16 * 2**l channels)
  # the down path has 2 + n_l slopes sets and the up path 2 + m_l (MedicalZoo's layout).
  prelu = 16 + 4  # input and output blocks
  for level, convs in zip(range(1, 5), (1, 2, 3, 2)):
    prelu += 16 * 2**level * (2 + convs)
  for level, convs in zip(range(4), (1, 1, 2, 2)):
    prelu += 16 * 2**level + 32 * 2**level * (1 + convs)
  assert _count(vnet.VNet(4, activation="elu")) == MEDICALZOO_COUNTS["VNET"] - prelu
  # Three modalities build MedicalZoo's 3-path HyperDenseNet (fully_1 takes 4050 channels).
  ins = (1, 75, 150, 225, 375, 525, 675, 900, 1125)
  outs = hyperdensenet.GROWTH
  # PReLU slope + conv weights and bias + BatchNorm (not before the first layer).
  per_path = sum(1 + i * o * 27 + o + (2 * i if k else 0)
                 for k, (i, o) in enumerate(zip(ins, outs)))
  fc = 4050 * 400 + 400 + 400 * 200 + 200 + 200 * 150 + 150 + 150 * 4 + 4
  assert _count(hyperdensenet.HyperDenseNet(4), spatial=20, channels=3) == 3 * per_path + fc


# Tiny versions for forward/backward: (model, input shape, expected output shape).
TINY = {
    "VNET": (vnet.VNet(3, base_features=4), (2, 16, 16, 16, 2), (2, 16, 16, 16, 3)),
    "VNET2": (vnet.VNetLight(3, base_features=4), (2, 8, 16, 8, 2), (2, 8, 16, 8, 3)),
    "DENSENET1": (densenet.SinglePathDenseNet(3, growth=(2, 3), head_features=(6, 5)),
                  (2, 6, 7, 8, 2), (2, 6, 7, 8, 3)),
    "DENSENET2": (densenet.DualPathDenseNet(3, growth=(2, 3), head_features=(6, 5)),
                  (2, 6, 7, 8, 2), (2, 6, 7, 8, 3)),
    "DENSENET3": (densenet.DualSingleDenseNet(3, early_growth=2, growth=(2, 3),
                                              head_features=(6, 5)),
                  (2, 6, 7, 8, 2), (2, 6, 7, 8, 3)),
    # 4 valid layers instead of 9 (margin 4) keeps the compile time small.
    "HYPERDENSENET": (hyperdensenet.HyperDenseNet(3, growth=(2, 3, 2, 3), fc_features=(6, 5)),
                      (2, 9, 10, 11, 2), (2, 1, 2, 3, 3)),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_backward_tiny(name):
  model, in_shape, out_shape = TINY[name]
  x = jax.random.normal(jax.random.key(0), in_shape)
  variables = _init(model, x)
  assert model.output_shape(in_shape[1:4]) == out_shape[1:4]

  def loss_and_grad(params, batch_stats, x):
    def loss_fn(p):
      logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                    mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
      return jnp.mean(jax.nn.log_softmax(logits)[..., 0]), (logits, updates)
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  args = (variables["params"], variables["batch_stats"], x)
  (loss, (logits, updates)), grads = _compile(loss_and_grad, *args)(*args)
  assert logits.shape == out_shape
  assert np.isfinite(loss)
  grad_leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(g).all() for g in grad_leaves)
  assert sum(float(jnp.sum(g**2)) for g in grad_leaves) > 0
  # BatchNorm running statistics moved (momentum 0.9 towards the batch statistics).
  old = jax.tree.leaves(variables["batch_stats"])
  new = jax.tree.leaves(updates["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(old, new))
  # Eval mode is deterministic and has the same shape.
  forward = _compile(lambda v, x: model.apply(v, x, train=False), variables, x)
  y1 = forward(variables, x)
  y2 = forward(variables, x)
  assert y1.shape == out_shape
  np.testing.assert_array_equal(y1, y2)
  assert np.isfinite(y1).all()


@pytest.mark.parametrize("name", sorted(TINY))
def test_bfloat16_compute_gives_float32_logits_and_params(name):
  model, in_shape, out_shape = TINY[name]
  model = model.clone(dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct(in_shape, jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.shape == out_shape and logits.dtype == jnp.float32


def test_registry_names():
  for name in ("VNET", "VNET2", "DENSENET1", "DENSENET2", "DENSENET3", "HYPERDENSENET"):
    assert models.model_class(name.lower())(num_classes=4).num_classes == 4
  assert models.MODELS["VNET2"] is vnet.VNetLight


def _conv_variables(ref: nn.Module, fast: nn.Module, x: jax.Array) -> dict:
  """Random variables for `ref`, after checking `fast` declares the same names and shapes."""
  shapes = jax.eval_shape(lambda: ref.init(jax.random.key(0), x))
  assert jax.eval_shape(lambda: fast.init(jax.random.key(0), x)) == shapes
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)


def test_down_conv_equals_strided_conv():
  x = jax.random.normal(jax.random.key(0), (2, 4, 6, 8, 3))
  ref = nn.Conv(5, (2, 2, 2), strides=(2, 2, 2), padding="VALID")
  fast = layers.DownConv(5)
  variables = _conv_variables(ref, fast, x)
  y = fast.apply(variables, x)
  assert y.shape == (2, 2, 3, 4, 5)
  np.testing.assert_allclose(y, ref.apply(variables, x), rtol=1e-5, atol=1e-5)
  # Hand-computed entry: output (1, 2, 3) sums input voxels (2..3, 4..5, 6..7).
  k, b = variables["params"]["kernel"], variables["params"]["bias"]
  expected = b + jnp.einsum("pqrc,pqrco->o", x[0, 2:4, 4:6, 6:8], k)
  np.testing.assert_allclose(y[0, 1, 2, 3], expected, rtol=1e-5, atol=1e-5)


def test_up_conv_equals_conv_transpose():
  x = jax.random.normal(jax.random.key(0), (2, 2, 3, 4, 3))
  ref = nn.ConvTranspose(5, (2, 2, 2), strides=(2, 2, 2), padding="VALID")
  fast = layers.UpConv(5)
  variables = _conv_variables(ref, fast, x)
  y = fast.apply(variables, x)
  assert y.shape == (2, 4, 6, 8, 5)
  np.testing.assert_allclose(y, ref.apply(variables, x), rtol=1e-5, atol=1e-5)
  # Hand-computed entry: output voxel (1, 2, 5) comes from input voxel (0, 1, 2) and kernel
  # tap (1 - 1, 1 - 0, 1 - 1) (flax flips the kernel of a transposed convolution).
  k, b = variables["params"]["kernel"], variables["params"]["bias"]
  np.testing.assert_allclose(y[0, 1, 2, 5], x[0, 0, 1, 2] @ k[0, 1, 0] + b, rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("method", ["auto", "winograd", "fold_in", "fold_out", "sum", "xla",
                                    "stack2d", "xla3d"])
@pytest.mark.parametrize("kernel,padding", [((5, 3, 5), "SAME"), ((3, 3, 3), "VALID"),
                                            ((5, 5, 5), "VALID")])
def test_conv3d_equals_nn_conv(method, kernel, padding):
  x = jax.random.normal(jax.random.key(0), (2, 6, 7, 8, 3))
  ref = nn.Conv(4, kernel, padding=padding)
  fast = layers.Conv3D(4, kernel, padding=padding, method=method)
  variables = _conv_variables(ref, fast, x)
  y, y_ref = fast.apply(variables, x), ref.apply(variables, x)
  # Winograd's transforms round differently: within a few 1e-6 of the largest output.
  atol = 1e-5 * float(jnp.max(jnp.abs(y_ref))) if method in ("winograd", "auto") else 1e-5
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=atol)
  # Hand-computed entry: the window of output (1, 2, 3) starts at the input voxel (1, 2, 3) minus
  # the padding.
  k, b = variables["params"]["kernel"], variables["params"]["bias"]
  kd, kh, kw = kernel
  pad = (kd // 2, kh // 2, kw // 2) if padding == "SAME" else (0, 0, 0)
  xp = jnp.pad(x, ((0, 0),) + tuple((p, p) for p in pad) + ((0, 0),))
  window = xp[1, 1:1 + kd, 2:2 + kh, 3:3 + kw]
  np.testing.assert_allclose(y[1, 1, 2, 3], b + jnp.einsum("pqrc,pqrco->o", window, k),
                             rtol=1e-5, atol=atol)


def test_prelu_values():
  x = jnp.array([[-2.0, 3.0], [4.0, -1.0]])
  shared = layers.PReLU()
  v = shared.init(jax.random.key(0), x)
  np.testing.assert_allclose(v["params"]["negative_slope"], [0.25])  # PyTorch's init
  np.testing.assert_allclose(shared.apply(v, x), [[-0.5, 3.0], [4.0, -0.25]])
  per_channel = layers.PReLU(2)
  v = {"params": {"negative_slope": jnp.array([0.1, 0.5])}}
  np.testing.assert_allclose(per_channel.apply(v, x), [[-0.2, 3.0], [4.0, -0.5]])
  with pytest.raises(ValueError, match="3 channels"):
    per_channel.init(jax.random.key(0), jnp.ones((2, 3)))


def test_hyperdensenet_output_is_centred_on_the_input():
  # MedicalZoo's 9 valid layers: 64^3 -> 46^3 (as its PyTorch model), 27^3 -> 9^3 (the paper).
  assert hyperdensenet.HyperDenseNet(4).margin == 9
  assert hyperdensenet.HyperDenseNet(4).output_shape((64, 64, 27)) == (46, 46, 9)
  with pytest.raises(ValueError, match=">= 19"):
    hyperdensenet.HyperDenseNet(4).output_shape((18, 30, 30))
  # The logit at (i, j, k) must depend exactly on the input cube of side 2L + 1 centred at
  # (i + L, j + L, k + L), L = margin: that is what label centre-cropping assumes. L = 4 here.
  model = hyperdensenet.HyperDenseNet(2, growth=(2,) * 4, fc_features=(3,))
  assert model.margin == 4
  x = jax.random.normal(jax.random.key(0), (1, 10, 10, 10, 2))
  variables = _init(model, x)
  grad = _compile(jax.grad(lambda x: model.apply(variables, x, train=False)[0, 1, 0, 1, 0]), x)(x)
  # Up to rounding: Winograd's transforms (conv_method 'auto') leave rounding-level values
  # where exact arithmetic gives 0.
  magnitude = np.abs(np.asarray(grad[0])).sum(-1)
  support = np.argwhere(magnitude > 1e-5 * magnitude.max())
  np.testing.assert_array_equal(support.min(0), [1, 0, 1])
  np.testing.assert_array_equal(support.max(0), [1 + 8, 8, 1 + 8])


def test_vnet_input_stage_repeats_channels():
  # With zero convolution weights and BatchNorm at identity, the input stage is
  # PReLU(x repeated along channels): channel j of the 16 holds input channel j mod C.
  model = vnet.VNet(2, depth=1, base_features=16)
  x = jax.random.normal(jax.random.key(0), (1, 2, 2, 2, 3))
  variables = _init(model, x)
  params = jax.tree_util.tree_map_with_path(
      lambda p, a: jnp.zeros_like(a) if "in_conv" in str(p) else a, variables["params"])
  params["in_bn"]["bias"] = jnp.zeros_like(params["in_bn"]["bias"])
  variables = {"params": params, "batch_stats": variables["batch_stats"]}

  def run(variables, x):
    return model.apply(variables, x, train=False,
                       capture_intermediates=lambda mdl, _: mdl.name == "in_act")[1]
  out = _compile(run, variables, x)(variables, x)
  act = out["intermediates"]["in_act"]["__call__"][0]
  expected = jnp.where(x[..., np.arange(16) % 3] >= 0, x[..., np.arange(16) % 3],
                       0.25 * x[..., np.arange(16) % 3])
  np.testing.assert_allclose(act, expected, rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise():
  def init(model, shape):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))

  with pytest.raises(ValueError, match="divisible by 16"):
    init(vnet.VNet(2), (1, 16, 16, 24, 1))
  with pytest.raises(ValueError, match="fusion"):
    init(densenet.DualPathDenseNet(2, fusion="max"), (1, 4, 4, 4, 2))
  with pytest.raises(ValueError, match="activation"):
    init(vnet.VNet(2, depth=1, activation="relu"), (1, 2, 2, 2, 1))
  with pytest.raises(ValueError, match=r"\[B, D, H, W, C\]"):
    init(hyperdensenet.HyperDenseNet(2), (20, 20, 20, 2))
