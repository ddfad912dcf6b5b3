"""The train step: a pure, jitted, data-parallel SGD step, and what it is built from.

`train_step` is pure (same state, batch and key give the same new state and metrics);
`make_train_step` jits it over a `training.mesh` mesh with the state replicated and donated.
The config's loss (`loss_fn_from_config`) and augmentation (`augment_fn_from_config`) are wired
in here.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from medjax import compile_options
from medjax import losses
from medjax import optim
from medjax import regions as regions_lib
from medjax.training import mesh as mesh_lib
from medjax.training import state as state_lib

TrainState = state_lib.TrainState
StepFn = Callable[[TrainState, dict[str, jax.Array], jax.Array],
                  tuple[TrainState, dict[str, jax.Array]]]


def center_crop_to(x: jax.Array, spatial_shape: tuple[int, ...]) -> jax.Array:
  """Crops the spatial axes (1..3) of `x` `[B, D, H, W, ...]` to `spatial_shape`, centred.

  Models with valid convolutions (HyperDenseNet) predict only the centre of their input; the
  label is cropped the same way, to the model's output shape.
  """
  if tuple(x.shape[1:4]) == tuple(spatial_shape):
    return x
  starts = [(n - m) // 2 for n, m in zip(x.shape[1:4], spatial_shape)]
  slices = tuple(slice(s, s + m) for s, m in zip(starts, spatial_shape))
  return x[(slice(None), *slices)]


def loss_fn_from_config(config: ml_collections.ConfigDict) -> Callable[..., jax.Array]:
  """`config.loss.name` with the `config.loss` options that are set (None = the loss's default)."""
  options = {k: v for k, v in config.loss.items() if k != "name" and v is not None}
  if options.get("reduction", "mean") not in ("mean", "sum"):
    raise ValueError(f"config.loss.reduction={options['reduction']!r}: training and validation "
                     "need one number; use 'mean' or 'sum'.")
  takes = losses.loss_options(config.loss.name)
  unknown = sorted(set(options) - takes) if takes is not None else []
  if unknown:  # e.g. a recipe's loss.include_background kept while --config.loss.name changed
    raise ValueError(
        f"config.loss.name={config.loss.name!r} does not take the option(s) {unknown} that the "
        f"experiment (or its recipe) sets; it takes {sorted(takes)}. Leave them out: "
        + " ".join(f"--config.loss.{k}=None" for k in unknown) + ".")
  return losses.get_loss(config.loss.name, **options)


def augment_fn_from_config(config: ml_collections.ConfigDict) -> Callable[..., Any] | None:
  """`augment.augment_batch` with `config.augmentation`'s settings, or None when disabled."""
  settings = config.augmentation
  if isinstance(settings, bool):  # an experiment written before `augmentation.enabled`
    settings = ml_collections.ConfigDict({"enabled": settings})
  if not settings.enabled:
    return None
  from medjax import augment  # pylint: disable=g-import-not-at-top
  aug_config = augment.resolve_config({k: v for k, v in settings.items() if k != "enabled"})
  return functools.partial(augment.augment_batch, config=aug_config)


def global_norm(tree: Any) -> jax.Array:
  """The L2 norm of all leaves of `tree` together, computed in float32."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def all_finite(tree: Any) -> jax.Array:
  """True when every element of every leaf of `tree` is finite (no NaN, no +-inf)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               loss_fn: Callable[..., jax.Array], num_classes: int,
               augment_fn: Callable[..., Any] | None = None,
               regions: regions_lib.Regions | None = None,
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on a global batch. Pure: same inputs, same outputs.

  Args:
    state: the replicated `TrainState`.
    batch: `{'image': float32 [B, D, H, W, C], 'label': int32 [B, D, H, W]}` (NDHWC).
    rng: the run's base key; the step's key is `fold_in(rng, state.step)`.
    loss_fn: `loss_fn(logits, target)`, one number (`loss_fn_from_config`). A model that returns
      a tuple of logits (deep supervision, full resolution first) is trained on
      `losses.deep_supervision_loss` (nnU-Net's weights and nearest-neighbour targets); the
      metrics use the full-resolution logits.
    num_classes: the classes of the per-class soft Dice metric.
    augment_fn: `augment_fn(key, image, label) -> (image, label)`, or None.
    regions: with region-based training, the class-id groups of the outputs: the loss and
      the Dice compare sigmoid outputs with `losses.region_targets(label, regions)`.

  Returns:
    The new state and metrics: `loss`, `dice` (soft, per class `[K]` or per region `[R]`),
    `grad_norm`, `finite` (1.0 when the loss, the gradients and the updated parameters and
    BatchNorm statistics were finite). A non-finite step leaves the state unchanged apart from
    its step counter.
  """
  step_rng = jax.random.fold_in(rng, state.step)
  image, label = batch["image"], batch["label"]
  if augment_fn is not None:
    image, label = augment_fn(step_rng, image, label)

  def compute_loss(params):
    outputs, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, image, train=True,
        mutable=["batch_stats"], rngs={"dropout": jax.random.fold_in(step_rng, 1)})
    # A deeply supervised model returns its logits at every resolution, full resolution first.
    deep = isinstance(outputs, (tuple, list))
    logits = outputs[0] if deep else outputs
    target = center_crop_to(label, logits.shape[1:4])
    if regions is not None:
      target = losses.region_targets(target, regions)
    loss = (losses.deep_supervision_loss(loss_fn, outputs, target) if deep
            else loss_fn(logits, target))
    return loss, (logits, target, updates)

  (loss, (logits, target, updates)), grads = jax.value_and_grad(
      compute_loss, has_aux=True)(state.params)
  grad_norm = global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updated = state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"])
  # An update can overflow even from a finite gradient (e.g. a huge learning rate): the new
  # parameters and BatchNorm statistics must be finite too.
  finite &= all_finite((updated.params, updated.batch_stats))
  # A non-finite loss must not poison the parameters: keep the old ones (the host stops or
  # skips, as configured). The step counter and the learning-rate schedule's count still
  # advance, so that the schedule stays a function of `state.step`.
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated,
                           state.replace(step=updated.step))
  new_state = new_state.replace(
      opt_state=optim.with_schedule_count(new_state.opt_state, updated.opt_state))
  metrics = {
      "loss": loss,
      "dice": (losses.per_class_dice(logits, target, num_classes=num_classes)
               if regions is None else
               losses.per_class_dice(jax.nn.sigmoid(logits.astype(jnp.float32)), target,
                                     num_classes=len(regions), softmax=False)),
      "grad_norm": grad_norm,
      "finite": finite.astype(jnp.float32),
  }
  return new_state, metrics


def make_train_step(config: ml_collections.ConfigDict, mesh: Mesh) -> StepFn:
  """`train_step` jitted over `mesh`: batch sharded on 'data', state replicated and donated."""
  replicated = mesh_lib.replicated(mesh)
  step = functools.partial(train_step, loss_fn=loss_fn_from_config(config),
                           num_classes=config.dataset.num_classes,
                           augment_fn=augment_fn_from_config(config),
                           regions=config.dataset.regions)
  return jax.jit(step, in_shardings=(replicated, mesh_lib.batch_sharded(mesh), replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0,
                 compiler_options=compile_options.for_backend())


def init_state(config: ml_collections.ConfigDict, model: Any, rng: jax.Array,
               mesh: Mesh) -> TrainState:
  """Initialises the train state directly as replicated arrays on `mesh`."""
  init = jax.jit(functools.partial(state_lib.create_train_state, config, model),
                 out_shardings=mesh_lib.replicated(mesh))
  return init(rng)


def init_and_train_keys(seed: int) -> tuple[jax.Array, jax.Array]:
  """The run's two root keys: parameter initialisation and the per-step key of `train_step`.

  Initialisation uses the 'rbg' generator: XLA compiles the default threefry sampler separately
  for every parameter shape, which costs tens of seconds on a CPU; rbg compiles in a fraction.
  """
  return jax.random.key(seed, impl="rbg"), jax.random.key(seed)
