"""The optimiser: one visible `optax.chain` built from the config.

The chain is `add_decayed_weights -> {sgd | adam | rmsprop} -> scale_by_learning_rate`. Weight decay
is added to the gradient *before* the optimiser's moment estimates, which is exactly what PyTorch's
`SGD/Adam/RMSprop(weight_decay=...)` do (L2 regularisation, as MedicalZoo trains), and it touches
every parameter (kernels, biases and BatchNorm scales/offsets, as in PyTorch) unless
`config.weight_decay_mask == 'kernels'`, which restricts it to convolution/dense kernels.
"""

from typing import Any

import jax
import ml_collections
import optax

OPTIMIZERS = ("sgd", "adam", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step", "poly")


def create_learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning rate per step from `config.lr_schedule` ('constant' is MedicalZoo's behaviour)."""
  name = config.lr_schedule
  lr = config.learning_rate
  if name == "constant":
    return optax.constant_schedule(lr)
  if name == "cosine":
    return optax.cosine_decay_schedule(lr, decay_steps=max(config.num_train_steps, 1))
  if name == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=config.warmup_steps,
        decay_steps=max(config.num_train_steps, 1))
  if name == "step":
    # Multiply by `lr_decay_factor` every `lr_decay_steps` steps (torch StepLR).
    if config.lr_decay_steps <= 0:
      raise ValueError(f"config.lr_decay_steps={config.lr_decay_steps}: expected a positive "
                       "number of steps for lr_schedule='step'.")
    return optax.exponential_decay(lr, transition_steps=config.lr_decay_steps,
                                   decay_rate=config.lr_decay_factor, staircase=True)
  if name == "poly":
    # nnU-Net's PolyLRScheduler: lr * (1 - step / num_train_steps) ** poly_exponent. optax's
    # polynomial schedule is (init - end) * (1 - count / transition_steps) ** power + end with
    # count clipped to [0, transition_steps], so end_value=0 gives exactly that, and 0 after the
    # last step.
    if config.poly_exponent <= 0:
      raise ValueError(f"config.poly_exponent={config.poly_exponent}: expected a positive "
                       "exponent for lr_schedule='poly' (nnU-Net: 0.9).")
    return optax.polynomial_schedule(init_value=lr, end_value=0.0, power=config.poly_exponent,
                                     transition_steps=max(config.num_train_steps, 1))
  raise ValueError(f"Unknown config.lr_schedule {name!r}; expected one of {SCHEDULES}.")


def _kernel_mask(params: Any) -> Any:
  """True for convolution/dense kernels (leaf named 'kernel'), False for biases and norms."""
  def is_kernel(path, _):
    return getattr(path[-1], "key", None) == "kernel"
  return jax.tree_util.tree_map_with_path(is_kernel, params)


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Builds the optax chain named by `config.optimizer`.

  PyTorch equivalents (same update rule, same defaults):
    sgd:     torch.optim.SGD(lr, momentum=config.momentum, weight_decay=config.weight_decay,
                             nesterov=config.nesterov)
    adam:    torch.optim.Adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=...)
    rmsprop: torch.optim.RMSprop(lr, alpha=0.99, eps=1e-8, momentum=config.momentum, ...)
  """
  name = config.optimizer.lower()
  if config.nesterov and name != "sgd":
    raise ValueError(f"config.nesterov=True is SGD's (torch.optim.SGD(nesterov=True)); "
                     f"config.optimizer is {config.optimizer!r}.")
  if name == "sgd":
    if config.nesterov and not config.momentum:
      raise ValueError("config.nesterov=True needs a momentum (torch: 'Nesterov momentum "
                       f"requires a momentum'); config.momentum={config.momentum}.")
    # torch's SGD: buf = momentum * buf + g (buf = g at the first step: optax's trace starts at
    # 0, the same), then the step is buf, or g + momentum * buf with Nesterov: optax's trace.
    core = (optax.trace(decay=config.momentum, nesterov=config.nesterov) if config.momentum
            else optax.identity())
  elif name == "adam":
    core = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
  elif name == "rmsprop":
    # torch adds eps outside the square root and starts the average at 0.
    core = optax.chain(
        optax.scale_by_rms(decay=0.99, eps=1e-8, initial_scale=0.0, eps_in_sqrt=False),
        optax.trace(decay=config.momentum) if config.momentum else optax.identity())
  else:
    raise ValueError(f"Unknown config.optimizer {config.optimizer!r}; expected one of {OPTIMIZERS}.")

  mask_name = config.weight_decay_mask
  if mask_name not in ("all", "kernels"):
    raise ValueError(f"Unknown config.weight_decay_mask {mask_name!r}; expected 'all' or 'kernels'.")
  decay = optax.add_decayed_weights(
      config.weight_decay, mask=_kernel_mask if mask_name == "kernels" else None)
  return optax.chain(
      decay, core, optax.scale_by_learning_rate(create_learning_rate_schedule(config)))


def _is_schedule_state(node: Any) -> bool:
  return isinstance(node, optax.ScaleByScheduleState)


def with_schedule_count(kept: Any, advanced: Any) -> Any:
  """The optimiser state `kept`, with the learning-rate schedule's count taken from `advanced`.

  A skipped (non-finite) step keeps the old moments and parameters but must still move the
  schedule on, or the schedule would lag `state.step` by the number of skipped steps. Adam's own
  bias-correction count stays with its moments in `kept`.
  """
  return jax.tree.map(lambda k, a: a if _is_schedule_state(k) else k, kept, advanced,
                      is_leaf=_is_schedule_state)
