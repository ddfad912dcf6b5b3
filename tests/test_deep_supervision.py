"""nnU-Net's deep supervision: the loss weights, the targets' downsampling, the weighted loss, and
the train step that uses them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import losses
from medjax import models
from medjax.training import mesh as mesh_lib
from medjax.training import step as step_lib
import tiny


def test_weights_by_hand():
  # 1, 1/2, 1/4 with the last set to 0: (1, 1/2, 0) / 1.5; (1, 1/2, 1/4, 0) / 1.75.
  np.testing.assert_allclose(losses.deep_supervision_weights(3), [2 / 3, 1 / 3, 0.0])
  np.testing.assert_allclose(losses.deep_supervision_weights(4), [4 / 7, 2 / 7, 1 / 7, 0.0])
  np.testing.assert_allclose(losses.deep_supervision_weights(2), [1.0, 0.0])
  with pytest.raises(ValueError, match="at least 2 outputs"):
    losses.deep_supervision_weights(1)


def test_downsample_picks_the_voxel_after_each_block_centre():
  # nnU-Net's order-0 resize (torch nearest-exact, skimage order 0): index f * j + f // 2.
  label = np.arange(8)[None, :, None, None] * np.ones((1, 8, 4, 2), np.int64)
  half = losses.downsample_target(jnp.asarray(label), (4, 2, 1))
  np.testing.assert_array_equal(half[0, :, 0, 0], [1, 3, 5, 7])
  quarter = losses.downsample_target(jnp.asarray(label), (2, 1, 1))
  np.testing.assert_array_equal(quarter[0, :, 0, 0], [2, 6])
  # Along every axis, and a region target's channel axis is kept.
  volume = np.arange(4 * 4 * 4).reshape(1, 4, 4, 4)
  assert int(losses.downsample_target(jnp.asarray(volume), (2, 2, 2))[0, 0, 0, 0]) == 16 + 4 + 1
  regions = np.zeros((1, 4, 4, 4, 3))
  assert losses.downsample_target(jnp.asarray(regions), (2, 2, 2)).shape == (1, 2, 2, 2, 3)
  with pytest.raises(ValueError, match="not an integer downsampling"):
    losses.downsample_target(jnp.asarray(volume), (3, 2, 2))


def _ce(logits, labels):
  """Mean softmax cross-entropy in numpy, an independent implementation."""
  logits = np.asarray(logits, np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return -np.mean(np.take_along_axis(logp, np.asarray(labels)[..., None], -1))


def test_loss_is_the_weighted_sum_at_each_resolution():
  rng = np.random.default_rng(0)
  label = rng.integers(0, 3, size=(2, 8, 8, 8))
  outputs = [rng.normal(size=(2, 8 // 2**i, 8 // 2**i, 8 // 2**i, 3)).astype(np.float32)
             for i in range(3)]
  loss = losses.deep_supervision_loss(losses.cross_entropy_loss,
                                      [jnp.asarray(o) for o in outputs], jnp.asarray(label))
  expected = 2 / 3 * _ce(outputs[0], label) + 1 / 3 * _ce(outputs[1], label[:, 1::2, 1::2, 1::2])
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  # The zero-weight lowest output is not evaluated: a NaN there does not reach the loss.
  outputs[2][:] = np.nan
  loss = losses.deep_supervision_loss(losses.cross_entropy_loss,
                                      [jnp.asarray(o) for o in outputs], jnp.asarray(label))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.mark.parametrize("regions", [None, ((1, 2, 3), (2, 3))])
def test_train_step_loss_and_dice_with_deep_supervision(regions):
  overrides = dict(model__num_levels=4, model__conv_method="xla", dataset__crop_size=(8, 8, 8),
                   eval__roi_size=(8, 8, 8), model__deep_supervision=True, loss__name="dice_ce")
  if regions is not None:
    overrides.update(dataset__regions=regions, loss__sigmoid=True, loss__softmax=False)
  config = tiny.tiny_config(**overrides)
  mesh = mesh_lib.create_mesh(jax.devices()[:1])
  model = models.create_model(config)
  init_key, rng = step_lib.init_and_train_keys(0)
  state = step_lib.init_state(config, model, init_key, mesh)
  data = np.random.default_rng(0)
  batch = {"image": data.normal(size=(2, 8, 8, 8, 2)).astype(np.float32),
           "label": data.integers(0, 4, size=(2, 8, 8, 8)).astype(np.int32)}
  # The same forward pass by hand (before the step, which donates the state).
  step_rng = jax.random.fold_in(rng, 0)
  outputs, _ = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                              jnp.asarray(batch["image"]), train=True, mutable=["batch_stats"],
                              rngs={"dropout": jax.random.fold_in(step_rng, 1)})
  assert [o.shape[1:4] for o in outputs] == [(8, 8, 8), (4, 4, 4), (2, 2, 2)]
  loss_fn = step_lib.loss_fn_from_config(config)
  label = jnp.asarray(batch["label"])
  target = label if regions is None else losses.region_targets(label, regions)
  # 2/3 of the full-resolution loss + 1/3 of the half one (target voxels 1, 3, 5, 7); the
  # quarter output has weight 0.
  expected = (2 / 3 * float(loss_fn(outputs[0], target))
              + 1 / 3 * float(loss_fn(outputs[1], target[:, 1::2, 1::2, 1::2])))
  new_state, metrics = step_lib.make_train_step(config, mesh)(state, batch, rng)
  np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
  # The metric is the full-resolution Dice.
  if regions is None:
    dice = losses.per_class_dice(outputs[0], label, num_classes=4)
  else:
    dice = losses.per_class_dice(jax.nn.sigmoid(outputs[0]), target, num_classes=2,
                                 softmax=False)
  np.testing.assert_allclose(metrics["dice"], dice, rtol=1e-5)
  assert int(new_state.step) == 1 and float(metrics["finite"]) == 1.0
