"""Tests for medjax.models.layers and the Çiçek et al. 3D U-Net (tiny shapes)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import layers
from medjax.models.ops import batch_norm as batch_norm_lib
from medjax.models.ops import pooling
from medjax.models.ops import resample
from medjax.models import unet3d


def _num_params(tree) -> int:
  return sum(math.prod(p.shape) for p in jax.tree.leaves(tree))


def _random_variables(model, x, seed=0):
  """Variables of `model` for input `x` without running `init`.

  Filled from numpy's generator: on this CPU, XLA takes seconds to compile jax's threefry sampler
  for every new shape, and a jitted U-Net `init` takes ~50 s. Kernels ~ N(0, 1 / fan_in), biases
  ~ N(0, 0.1) so they are exercised, BatchNorm scale ~ 1 + N(0, 0.1), running mean 0 and var 1.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "batch_stats" in name:
      value = np.zeros(leaf.shape) if name.endswith("['mean']") else np.ones(leaf.shape)
    elif name.endswith("['kernel']"):
      value = rng.normal(size=leaf.shape) / math.sqrt(math.prod(leaf.shape[:-1]))
    elif name.endswith("['scale']"):
      value = 1.0 + 0.1 * rng.normal(size=leaf.shape)
    else:
      value = 0.1 * rng.normal(size=leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _normal(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_depth_to_space_layout_and_inverse():
  c = 3
  x = jnp.arange(2 * 2 * 3 * 1 * 8 * c, dtype=jnp.float32).reshape(2, 2, 3, 1, 8 * c)
  y = resample.depth_to_space(x, 2)
  assert y.shape == (2, 4, 6, 2, c)
  xn, yn = np.asarray(x), np.asarray(y)
  for b, i, j, k, p, q, s, ch in [(0, 0, 0, 0, 0, 0, 0, 0), (1, 1, 2, 0, 1, 0, 1, 2),
                                  (0, 1, 1, 0, 0, 1, 1, 1), (1, 0, 2, 0, 1, 1, 0, 0)]:
    assert yn[b, 2 * i + p, 2 * j + q, 2 * k + s, ch] == xn[b, i, j, k, ((p * 2 + q) * 2 + s) * c
                                                             + ch]
  np.testing.assert_array_equal(resample.space_to_depth(y, 2), x)
  with pytest.raises(ValueError, match="divisible by 8"):
    resample.depth_to_space(jnp.zeros((1, 2, 2, 2, 12)), 2)


def test_upconv_equals_conv_transpose_values_and_gradients():
  x = _normal((2, 3, 4, 5, 6), 0)
  fast = layers.UpConv(7)
  reference = nn.ConvTranspose(7, (2, 2, 2), strides=(2, 2, 2), padding="VALID")
  shapes = jax.eval_shape(lambda: fast.init(jax.random.key(1), x))
  # Same parameter tree (names, shapes), so weights are interchangeable: 8*C*O + O values.
  ref_shapes = jax.eval_shape(lambda: reference.init(jax.random.key(1), x))
  assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, ref_shapes)
  assert _num_params(shapes) == 8 * 6 * 7 + 7
  params = {"params": {"kernel": _normal((2, 2, 2, 6, 7), 1), "bias": _normal((7,), 2)}}

  def loss(module, p, x):
    y = module.apply(p, x)
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)

  y_fast, y_ref = fast.apply(params, x), reference.apply(params, x)
  assert y_fast.shape == (2, 6, 8, 10, 7)
  np.testing.assert_allclose(y_fast, y_ref, rtol=1e-5, atol=1e-5)
  g_fast = jax.grad(lambda p, x: loss(fast, p, x), argnums=(0, 1))(params, x)
  g_ref = jax.grad(lambda p, x: loss(reference, p, x), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_max_pool_2x_equals_nn_max_pool():
  x = _normal((2, 4, 6, 8, 3), 3)  # no ties
  ref = lambda x: nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2), padding="VALID")
  np.testing.assert_array_equal(pooling.max_pool_2x(x), ref(x))
  w = _normal((2, 2, 3, 4, 3), 4)
  np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(pooling.max_pool_2x(x) * w))(x),
                                jax.grad(lambda x: jnp.sum(ref(x) * w))(x))
  with pytest.raises(ValueError, match=r"\(1, 3, 4, 4, 2\)"):
    pooling.max_pool_2x(jnp.zeros((1, 3, 4, 4, 2)))


def test_max_pool_2x_gradient_goes_to_the_first_maximum_at_ties():
  # One 2x2x2 window per channel (2 channels): channel 0 all equal, channel 1 with its maximum 5
  # twice, at (0, 1, 1) and (1, 0, 1). PyTorch's max_pool3d sends the gradient to one element,
  # the first in (depth, height, width) order: (0, 0, 0) and (0, 1, 1).
  x = np.ones((1, 2, 2, 2, 2), np.float32)
  x[0, :, :, :, 1] = [[[0, 1], [2, 5]], [[3, 5], [4, 1]]]
  g = jax.grad(lambda x: jnp.sum(pooling.max_pool_2x(x) * jnp.asarray([[[[[2.0, 3.0]]]]])))(
      jnp.asarray(x))
  expected = np.zeros_like(x)
  expected[0, 0, 0, 0, 0] = 2.0
  expected[0, 0, 1, 1, 1] = 3.0
  np.testing.assert_array_equal(g, expected)
  np.testing.assert_array_equal(pooling.max_pool_2x(jnp.asarray(x)).reshape(-1), [1.0, 5.0])


class _FlaxBatchNorm(nn.Module):
  """The reference: flax's BatchNorm, then ReLU if `relu`, differentiated by JAX."""
  relu: bool = True

  @nn.compact
  def __call__(self, x, use_running_average):
    y = nn.BatchNorm(use_running_average=use_running_average, momentum=0.9, epsilon=1e-5,
                     name="bn")(x)
    return nn.relu(y) if self.relu else y


@pytest.mark.parametrize("activation", ["relu", None])
def test_batch_norm_equals_flax_batch_norm_then_activation(activation):
  x = 2.0 * _normal((2, 3, 4, 5, 6), 20) + 0.5
  x = x.at[..., 2].set(1.5)  # a constant channel: variance 0 (or a rounding error below it)
  fused = layers.BatchNorm(activation, name="bn")
  reference = _FlaxBatchNorm(relu=activation == "relu")
  init = lambda m: m.init(jax.random.key(0), x, use_running_average=False)
  v_fused, v_ref = init(fused), init(reference)
  # The same variables (names, shapes, initial values), so checkpoints are interchangeable.
  ref_vars = {"params": v_ref["params"]["bn"], "batch_stats": v_ref["batch_stats"]["bn"]}
  assert jax.tree.structure(v_fused) == jax.tree.structure(ref_vars)
  for a, b in zip(jax.tree.leaves(v_fused), jax.tree.leaves(ref_vars)):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  params = {"scale": 1.0 + 0.3 * _normal((6,), 21), "bias": 0.3 * _normal((6,), 22)}
  stats = {"mean": 0.1 * _normal((6,), 23), "var": 1.0 + jnp.abs(_normal((6,), 24))}
  w = _normal(x.shape, 25)

  def loss(module, wrap, p, x):
    y, updates = module.apply({"params": wrap(p), "batch_stats": wrap(stats)}, x,
                              use_running_average=False, mutable=["batch_stats"])
    new = updates["batch_stats"]["bn"] if "bn" in updates["batch_stats"] else updates[
        "batch_stats"]
    # The running statistics are differentiated too (through the batch mean and variance).
    return jnp.sum(y * w) + jnp.sum(new["mean"] * w[0, 0, 0, 0]) + jnp.sum(new["var"] ** 2), (
        y, new)

  fused_loss = lambda p, x: loss(fused, lambda t: t, p, x)
  ref_loss = lambda p, x: loss(reference, lambda t: {"bn": t}, p, x)
  (l_fused, (y_fused, new_fused)), g_fused = jax.value_and_grad(
      fused_loss, argnums=(0, 1), has_aux=True)(params, x)
  (l_ref, (y_ref, new_ref)), g_ref = jax.value_and_grad(
      ref_loss, argnums=(0, 1), has_aux=True)(params, x)
  np.testing.assert_allclose(y_fused, y_ref, rtol=1e-6, atol=1e-6)
  assert (float(jnp.min(y_fused)) == 0.0) == (activation == "relu")  # the ReLU clipped
  np.testing.assert_allclose(l_fused, l_ref, rtol=1e-6)
  for a, b in zip(jax.tree.leaves((new_fused, g_fused)), jax.tree.leaves((new_ref, g_ref))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # Inference: the running statistics.
  y_eval = fused.apply({"params": params, "batch_stats": stats}, x, use_running_average=True)
  y_eval_ref = reference.apply({"params": {"bn": params}, "batch_stats": {"bn": stats}}, x,
                               use_running_average=True)
  np.testing.assert_allclose(y_eval, y_eval_ref, rtol=1e-6, atol=1e-6)
  # bfloat16 compute: bfloat16 output, statistics still float32.
  z, mean, var = batch_norm_lib.batch_norm(x.astype(jnp.bfloat16), params["scale"],
                                           params["bias"], activation=activation,
                                           dtype=jnp.bfloat16)
  assert z.dtype == jnp.bfloat16 and mean.dtype == var.dtype == jnp.float32
  np.testing.assert_allclose(z.astype(jnp.float32), y_ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("channels_per_slope", ["per_channel", "shared"])
def test_batch_norm_with_prelu_equals_flax_batch_norm_then_prelu(channels_per_slope):
  # layers.BatchNorm(prelu=layers.PReLU(...)) against flax's nn.BatchNorm followed by the same
  # PReLU applied on its own: values, every gradient (slopes included) and running statistics.
  num = 6 if channels_per_slope == "per_channel" else 1
  x = jnp.asarray(np.random.default_rng(7).normal(size=(2, 3, 4, 5, 6)), jnp.float32)
  weights = jnp.asarray(np.random.default_rng(8).normal(size=x.shape), jnp.float32)

  class Fused(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      return layers.BatchNorm(name="bn")(x, use_running_average=not train,
                                         prelu=layers.PReLU(num, name="act"))

  class Reference(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn")(x)
      return layers.PReLU(num, name="act")(y)

  variables = Reference().init(jax.random.key(0), x, train=False)
  params = jax.tree.map(lambda a: a + jnp.asarray(np.random.default_rng(9).normal(
      size=a.shape) * 0.3, a.dtype), variables["params"])
  assert jax.tree.structure(Fused().init(jax.random.key(0), x, train=False)) == jax.tree.structure(
      variables)
  stats = variables["batch_stats"]

  def loss(module):
    def f(p):
      y, new = module.apply({"params": p, "batch_stats": stats}, x, train=True,
                            mutable=["batch_stats"])
      return jnp.sum(jnp.sin(y) * weights), (y, new)
    return jax.value_and_grad(f, has_aux=True)(params)

  (l_fused, (y_fused, new_fused)), g_fused = loss(Fused())
  (l_ref, (y_ref, new_ref)), g_ref = loss(Reference())
  np.testing.assert_allclose(y_fused, y_ref, rtol=1e-5, atol=1e-6)
  assert float(jnp.min(y_fused)) < 0  # the slopes were used
  np.testing.assert_allclose(l_fused, l_ref, rtol=1e-5)
  for a, b in zip(jax.tree.leaves((new_fused, g_fused)), jax.tree.leaves((new_ref, g_ref))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  y_eval = Fused().apply({"params": params, "batch_stats": stats}, x, train=False)
  y_eval_ref = Reference().apply({"params": params, "batch_stats": stats}, x, train=False)
  np.testing.assert_allclose(y_eval, y_eval_ref, rtol=1e-6, atol=1e-6)


def _expected_unet_params(in_channels: int, num_classes: int, base: int, levels: int) -> int:
  """Count from the layer shapes (every conv has a bias, every BatchNorm a scale and offset)."""
  conv = lambda cin, cout, k=3: k**3 * cin * cout + cout
  conv_bn = lambda cin, cout: conv(cin, cout) + 2 * cout
  total, cin = 0, in_channels
  for level in range(levels):  # encoder and bottom: cin -> f -> 2f
    f = base * 2**level
    total += conv_bn(cin, f) + conv_bn(f, 2 * f)
    cin = 2 * f
  for level in reversed(range(levels - 1)):  # up-conv keeps cin; concat skip 2f; -> 2f -> 2f
    f = base * 2**level
    total += conv(cin, cin, k=2) + conv_bn(cin + 2 * f, 2 * f) + conv_bn(2 * f, 2 * f)
    cin = 2 * f
  return total + conv(cin, num_classes, k=1)


def test_parameter_count_of_the_paper_model():
  model = unet3d.UNet3D(num_classes=4, base_features=32)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 64, 2)), train=False))
  count = _num_params(variables["params"])
  assert count == _expected_unet_params(2, 4, 32, 4)
  assert count == 19_074_724
  # Spot-check the paper's channel plan: bottom 256 -> 512, first up-conv 512 -> 512.
  params = variables["params"]
  assert params["encoder_3"]["conv2"]["conv"]["kernel"].shape == (3, 3, 3, 256, 512)
  assert params["decoder_2"]["upconv"]["kernel"].shape == (2, 2, 2, 512, 512)
  assert params["decoder_2"]["conv1"]["conv"]["kernel"].shape == (3, 3, 3, 768, 256)
  assert params["classifier"]["kernel"].shape == (1, 1, 1, 64, 4)
  # Other widths and depths follow the same formula.
  small = unet3d.UNet3D(num_classes=3, base_features=4, num_levels=3)
  variables = jax.eval_shape(
      lambda: small.init(jax.random.key(0), jnp.zeros((1, 8, 8, 8, 1)), train=False))
  assert _num_params(variables["params"]) == _expected_unet_params(1, 3, 4, 3)


@pytest.fixture(scope="module")
def tiny():
  model = unet3d.UNet3D(num_classes=3, base_features=4)
  x = _normal((2, 16, 8, 24, 2), 5)  # D, H, W divisible by 8
  eval_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return model, x, _random_variables(model, x), eval_fn


def test_output_shape_and_eval_mode(tiny):
  _, x, variables, eval_fn = tiny
  logits = eval_fn(variables, x)
  assert logits.shape == (2, 16, 8, 24, 3)
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  # Eval mode uses the running statistics: a sample's logits do not depend on the others.
  other = eval_fn(variables, x.at[1].set(0.0))
  np.testing.assert_allclose(other[0], logits[0], rtol=1e-4, atol=1e-5)
  assert not np.allclose(other[1], logits[1])


def test_train_mode_updates_batch_stats_with_momentum(tiny):
  model, x, variables, eval_fn = tiny
  logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, x)
  assert logits.shape == (2, 16, 8, 24, 3)
  old, new = variables["batch_stats"], updates["batch_stats"]
  assert jax.tree.structure(old) == jax.tree.structure(new)
  for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)):
    assert not np.allclose(a, b)
  # First BatchNorm: running mean = 0.9 * 0 + 0.1 * (batch mean of the conv output), running
  # var = 0.9 * 1 + 0.1 * (batch variance), the PyTorch momentum-0.1 rule.
  conv_params = variables["params"]["encoder_0"]["conv1"]["conv"]
  h = nn.Conv(4, (3, 3, 3), padding="SAME").apply({"params": conv_params}, x)
  stats = new["encoder_0"]["conv1"]["bn"]
  np.testing.assert_allclose(stats["mean"], 0.1 * h.mean(axis=(0, 1, 2, 3)), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * h.var(axis=(0, 1, 2, 3)), rtol=1e-4)
  # Train mode normalises with batch statistics, so the output differs from eval mode.
  assert not np.allclose(logits, eval_fn(variables, x), atol=1e-3)


def test_bfloat16_compute_gives_float32_logits(tiny):
  _, x, variables, eval_fn = tiny
  bf16 = unet3d.UNet3D(num_classes=3, base_features=4, dtype=jnp.bfloat16)
  logits = jax.jit(lambda v, x: bf16.apply(v, x, train=False))(variables, x)
  assert logits.dtype == jnp.float32
  reference = eval_fn(variables, x)
  # Same parameters, bfloat16 activations: close to the float32 model (8-bit mantissa).
  scale = float(jnp.max(jnp.abs(reference)))
  assert float(jnp.max(jnp.abs(logits - reference))) < 0.05 * scale
  # Parameters stay float32 (param_dtype).
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(
      jax.eval_shape(lambda: bf16.init(jax.random.key(0), x, train=False))["params"]))


def test_indivisible_input_raises():
  model = unet3d.UNet3D(num_classes=2, base_features=2)
  with pytest.raises(ValueError, match=r"divisible by 8.*\(1, 16, 12, 16, 2\)"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 12, 16, 2)),
                                      train=False))
  with pytest.raises(ValueError, match=r"\[B, D, H, W, C\]"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((16, 16, 16, 2)),
                                      train=False))


def test_deep_supervision_heads_outputs_and_unchanged_main_path(tiny):
  model, x, variables, eval_fn = tiny
  deep = unet3d.UNet3D(num_classes=3, base_features=4, deep_supervision=True)
  shapes = jax.eval_shape(lambda: deep.init(jax.random.key(0), x, train=False))
  # The main path keeps its names and shapes; one 1x1x1 head per lower decoder level (1, 2),
  # on that level's 2 * 4 * 2^l output channels.
  extra = {k: v for k, v in shapes["params"].items() if k not in variables["params"]}
  assert sorted(extra) == ["ds_classifier_1", "ds_classifier_2"]
  assert extra["ds_classifier_1"]["kernel"].shape == (1, 1, 1, 16, 3)
  assert extra["ds_classifier_2"]["kernel"].shape == (1, 1, 1, 32, 3)
  main = {k: v for k, v in shapes["params"].items() if k in variables["params"]}
  assert jax.tree.map(lambda a: a.shape, main) == jax.tree.map(
      lambda a: a.shape, dict(variables["params"]))
  rng = np.random.default_rng(1)
  heads = {name: {"kernel": jnp.asarray(rng.normal(size=p["kernel"].shape), jnp.float32),
                  "bias": jnp.asarray(rng.normal(size=p["bias"].shape), jnp.float32)}
           for name, p in extra.items()}
  deep_vars = {"params": {**variables["params"], **heads},
               "batch_stats": variables["batch_stats"]}
  # Inference: the full-resolution logits only, equal to the plain model's.
  np.testing.assert_array_equal(
      jax.jit(lambda v, x: deep.apply(v, x, train=False))(deep_vars, x), eval_fn(variables, x))
  # Training: full resolution first, then 1/2 and 1/4, each the head applied to the decoder
  # output of its level (read from the plain model's intermediates).
  outputs, _ = deep.apply(deep_vars, x, train=True, mutable=["batch_stats"])
  assert [o.shape for o in outputs] == [(2, 16, 8, 24, 3), (2, 8, 4, 12, 3), (2, 4, 2, 6, 3)]
  assert all(o.dtype == jnp.float32 for o in outputs)
  plain, state = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"],
                             capture_intermediates=True)
  np.testing.assert_allclose(outputs[0], plain, rtol=1e-5, atol=1e-5)
  for i, level in ((1, 1), (2, 2)):
    decoded = state["intermediates"][f"decoder_{level}"]["__call__"][0]
    head = heads[f"ds_classifier_{level}"]
    expected = jnp.einsum("bdhwc,ck->bdhwk", decoded, head["kernel"][0, 0, 0]) + head["bias"]
    np.testing.assert_allclose(outputs[i], expected, rtol=1e-4, atol=1e-4)


def test_deep_supervision_needs_three_levels_and_a_unet():
  two = unet3d.UNet3D(num_classes=2, base_features=2, num_levels=2, deep_supervision=True)
  with pytest.raises(ValueError, match="deep_supervision needs num_levels >= 3"):
    jax.eval_shape(lambda: two.init(jax.random.key(0), jnp.zeros((1, 8, 8, 8, 1)), train=False))
  from medjax import models  # pylint: disable=g-import-not-at-top
  from medjax.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.dataset.num_classes, config.dataset.num_modalities = 4, 2
  config.model.name, config.model.deep_supervision = "VNET", True
  with pytest.raises(ValueError, match=r"\['deep_supervision'\] that model 'VNET' does not"):
    models.create_model(config)
  config.model.name = "UNET3D"
  assert models.create_model(config).deep_supervision
