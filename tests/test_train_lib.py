"""The train step: purity, the non-finite guard, and 1 vs 4 devices on the same global batch."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medjax import models
from medjax.training import evaluator
from medjax.training import mesh as mesh_lib
from medjax.training import step as step_lib
import tiny


def _batch(config, seed=0, batch_size=None):
  rng = np.random.default_rng(seed)
  b = batch_size or config.batch_size
  shape = (b, *config.dataset.crop_size)
  image = rng.normal(size=(*shape, config.dataset.num_modalities)).astype(np.float32)
  label = rng.integers(0, config.dataset.num_classes, size=shape).astype(np.int32)
  return {"image": image, "label": label}


def test_center_crop_to_takes_the_middle():
  x = jnp.arange(6 * 6 * 6).reshape(1, 6, 6, 6)
  out = step_lib.center_crop_to(x, (2, 4, 6))
  np.testing.assert_array_equal(out, x[:, 2:4, 1:5, :])
  assert step_lib.center_crop_to(x, (6, 6, 6)) is x


def test_train_step_is_deterministic_and_learns():
  config = tiny.tiny_config(**tiny.FAST_COMPILE)
  mesh = mesh_lib.create_mesh(jax.devices()[:1])
  model = models.create_model(config)
  init_key, rng = step_lib.init_and_train_keys(0)
  step = step_lib.make_train_step(config, mesh)
  batch = _batch(config)
  runs = []
  for _ in range(2):
    state = step_lib.init_state(config, model, init_key, mesh)
    losses = []
    for _ in range(5):
      state, metrics = step(state, batch, rng)
      losses.append(float(metrics["loss"]))
    runs.append((losses, jax.device_get(state.params)))
  assert runs[0][0] == runs[1][0]  # bitwise: same seed, same run
  jax.tree.map(np.testing.assert_array_equal, runs[0][1], runs[1][1])
  assert runs[0][0][-1] < runs[0][0][0]  # fitting one batch lowers its loss
  assert int(state.step) == 5


def test_nonfinite_step_keeps_parameters():
  config = tiny.tiny_config(**tiny.FAST_COMPILE)
  mesh = mesh_lib.create_mesh(jax.devices()[:1])
  model = models.create_model(config)
  init_key, rng = step_lib.init_and_train_keys(0)
  state = step_lib.init_state(config, model, init_key, mesh)
  before = jax.device_get((state.params, state.batch_stats, state.opt_state))
  batch = _batch(config)
  batch["image"][0, 0, 0, 0, 0] = np.nan
  state, metrics = step_lib.make_train_step(config, mesh)(state, batch, rng)
  assert float(metrics["finite"]) == 0.0
  assert int(state.step) == 1
  after = jax.device_get((state.params, state.batch_stats, state.opt_state))
  # Everything is kept but the learning-rate schedule's count, which follows state.step.
  is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
  counts = [int(s.count) for s in jax.tree.leaves(after[2], is_leaf=is_schedule)
            if is_schedule(s)]
  assert counts == [1]
  strip = lambda tree: jax.tree.map(lambda x: None if is_schedule(x) else x, tree,
                                    is_leaf=is_schedule)
  jax.tree.map(np.testing.assert_array_equal, strip(before), strip(after))


def test_overflowing_update_from_finite_gradient_keeps_parameters():
  """A finite loss and gradient whose update overflows the parameters (a learning rate of
  1e60, two float32 scales of 1e30: every nonzero gradient entry times 1e60 is inf) is a
  non-finite step: finite=0 and the state is kept."""
  config = tiny.tiny_config(**tiny.FAST_COMPILE)
  mesh = mesh_lib.create_mesh(jax.devices()[:1])
  model = models.create_model(config)
  init_key, rng = step_lib.init_and_train_keys(0)
  state = step_lib.init_state(config, model, init_key, mesh)
  tx = optax.chain(optax.scale(-1e30), optax.scale(1e30))
  state = state.replace(tx=tx, opt_state=tx.init(state.params))
  before = jax.device_get((state.params, state.batch_stats))
  step = jax.jit(functools.partial(step_lib.train_step,
                                   loss_fn=step_lib.loss_fn_from_config(config),
                                   num_classes=config.dataset.num_classes))
  batch = _batch(config)
  grads = jax.device_get(_gradients(config, state, batch, rng))
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert any((g != 0).any() for g in jax.tree.leaves(grads))  # so the update overflows
  new_state, metrics = step(state, batch, rng)
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
  assert float(metrics["finite"]) == 0.0
  assert int(new_state.step) == 1
  jax.tree.map(np.testing.assert_array_equal, before,
               jax.device_get((new_state.params, new_state.batch_stats)))
  # The same step with a sane scale is finite and moves the parameters.
  tx = optax.sgd(0.1)
  new_state, metrics = step(state.replace(tx=tx, opt_state=tx.init(state.params)), batch, rng)
  assert float(metrics["finite"]) == 1.0
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[0]),
                                                     jax.tree.leaves(new_state.params)))


def test_skipped_steps_do_not_shift_the_schedule():
  """With nonfinite=skip, step n's update uses the schedule's rate at n - 1, skipped or not.

  lr_schedule='step' halves the rate every 2 steps: 0.1, 0.1, 0.05, 0.05. Step 2 is non-finite
  and skipped. Plain SGD without momentum or decay, so each finite step moves the parameters
  by exactly -lr * grad; the third step must use 0.05 (the schedule at count 2), not 0.1.
  """
  config = tiny.tiny_config(optimizer="sgd", momentum=0.0, weight_decay=0.0, learning_rate=0.1,
                            lr_schedule="step", lr_decay_steps=2, lr_decay_factor=0.5,
                            nonfinite="skip", **tiny.FAST_COMPILE)
  mesh = mesh_lib.create_mesh(jax.devices()[:1])
  model = models.create_model(config)
  init_key, rng = step_lib.init_and_train_keys(0)
  state = step_lib.init_state(config, model, init_key, mesh)
  step_fn = step_lib.make_train_step(config, mesh)
  good = _batch(config)
  bad = {k: v.copy() for k, v in good.items()}
  bad["image"][0, 0, 0, 0, 0] = np.nan
  state, _ = step_fn(state, good, rng)
  state, metrics = step_fn(state, bad, rng)
  assert float(metrics["finite"]) == 0.0
  before = jax.device_get(state.params)
  grads = jax.device_get(_gradients(config, state, good, rng))
  state, _ = step_fn(state, good, rng)
  after = jax.device_get(state.params)
  assert int(state.step) == 3
  jax.tree.map(lambda a, b, g: np.testing.assert_allclose(a - b, -0.05 * g, rtol=1e-4,
                                                          atol=1e-7), after, before, grads)


def _gradients(config, state, batch, rng):
  """The gradient the train step takes for `batch` at `state` (same key, same crop)."""
  loss_fn = step_lib.loss_fn_from_config(config)
  step_rng = jax.random.fold_in(rng, state.step)

  def compute(params):
    logits, _ = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                               jnp.asarray(batch["image"]), train=True, mutable=["batch_stats"],
                               rngs={"dropout": jax.random.fold_in(step_rng, 1)})
    return loss_fn(logits, jnp.asarray(batch["label"]))
  return jax.grad(compute)(state.params)


_DEVICES_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    sys.path.insert(0, {tests!r})
    import tiny
    from medjax import models
    from medjax.training import mesh as mesh_lib, step as step_lib
    assert jax.device_count() == 4, jax.devices()
    config = tiny.tiny_config(batch_size=4, **tiny.FAST_COMPILE)
    model = models.create_model(config)
    init_key, rng = step_lib.init_and_train_keys(0)
    data = np.random.default_rng(0)
    batches = [dict(image=data.normal(size=(4, 8, 8, 8, 2)).astype(np.float32),
                    label=data.integers(0, 4, size=(4, 8, 8, 8)).astype(np.int32))
               for _ in range(3)]
    out = {{}}
    for n in (1, 4):
      mesh = mesh_lib.create_mesh(jax.devices()[:n])
      state = step_lib.init_state(config, model, init_key, mesh)
      step = step_lib.make_train_step(config, mesh)
      losses = []
      for b in batches:
        b = {{k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in b.items()}}
        state, metrics = step(state, b, rng)
        losses.append(float(metrics["loss"]))
      out[n] = (losses, jax.device_get((state.params, state.batch_stats)))
    leaves1 = jax.tree.leaves(out[1][1]); leaves4 = jax.tree.leaves(out[4][1])
    print(json.dumps(dict(
        losses1=out[1][0], losses4=out[4][0],
        max_param_diff=max(float(np.max(np.abs(a - b))) for a, b in zip(leaves1, leaves4)),
        max_param=max(float(np.max(np.abs(a))) for a in leaves1))))
""")


def test_one_device_equals_four_devices():
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _DEVICES_SCRIPT.format(tests=tests_dir)],
                        capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(result["losses1"], result["losses4"], rtol=1e-5)
  assert result["max_param_diff"] < 1e-5 * max(1.0, result["max_param"])


@pytest.mark.parametrize("loss", ["cross_entropy", "dice_ce", "dice_sigmoid"])
def test_val_loss_is_the_configured_loss(loss):
  """evaluate's val_loss is config.loss on the whole case, written out here in numpy."""
  config = tiny.tiny_config(eval__roi_size=(4, 4, 4), eval__mode="constant",
                            dataset__num_classes=3)
  data = np.random.default_rng(3)
  logits = data.normal(size=(4, 4, 4, 3)).astype(np.float32)
  label = data.integers(0, 3, size=(4, 4, 4)).astype(np.int32)
  onehot = np.eye(3)[label]
  if loss == "dice_sigmoid":
    config.loss.name, config.loss.sigmoid, config.loss.softmax = "dice", True, False
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
  else:
    config.loss.name = loss
    e = np.exp(logits.astype(np.float64))
    probs = e / e.sum(-1, keepdims=True)
  ce = float(np.mean(-np.log(np.sum(probs * onehot, -1))))
  inter, total = np.sum(probs * onehot, (0, 1, 2)), np.sum(probs + onehot, (0, 1, 2))
  dice = float(np.mean(1 - (2 * inter + 1e-5) / (total + 1e-5)))
  expected = {"cross_entropy": ce, "dice_ce": dice + ce, "dice_sigmoid": dice}[loss]

  def predictor(variables, x):  # the "model" outputs the image itself as logits
    del variables
    act = jax.nn.sigmoid if loss == "dice_sigmoid" else jax.nn.softmax
    return act(x)

  subject = {"image": logits, "label": label, "case_id": "c"}
  metrics, _ = evaluator.evaluate(None, {}, [subject], config, predictor)
  np.testing.assert_allclose(metrics["val_loss"], expected, rtol=1e-5)
