"""What every loss shares: the input checks, the target (one-hot class ids or a float target),
the probabilities, the class weights and the reductions (conventions in `medjax.losses`)."""

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = Any

_REDUCTIONS = ("mean", "sum", "none")

def _concrete(x: jax.Array) -> np.ndarray | None:
  """`x` as a numpy array, or None when it is traced (under `jit`, `grad`, `vmap`)."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _check_reduction(reduction: str, fn_name: str,
                     allowed: tuple[str, ...] = _REDUCTIONS) -> None:
  if reduction not in allowed:
    raise ValueError(f"{fn_name}: reduction must be one of {list(allowed)}; got {reduction!r}.")


def _check_inputs(logits: ArrayLike, labels: ArrayLike,
                  fn_name: str) -> tuple[jax.Array, jax.Array, bool]:
  """`(logits, labels, is_ids)`: integer ids `[B, ...]`, or a float target of logits' shape."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  if logits.ndim < 2:
    raise ValueError(f"{fn_name}: logits must be [B, ..., K]; got shape {logits.shape}.")
  if tuple(labels.shape) == tuple(logits.shape[:-1]):
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise ValueError(f"{fn_name}: labels of shape logits.shape[:-1] = "
                       f"{tuple(logits.shape[:-1])} must hold integer class ids; got dtype "
                       f"{labels.dtype} (a float target must have the logits' shape "
                       f"{tuple(logits.shape)}).")
    return logits, labels, True
  if tuple(labels.shape) == tuple(logits.shape):
    return logits, labels.astype(jnp.float32), False
  raise ValueError(f"{fn_name}: labels must have shape logits.shape[:-1] = "
                   f"{tuple(logits.shape[:-1])} (integer class ids) or logits.shape = "
                   f"{tuple(logits.shape)} (a float target); got labels shape "
                   f"{tuple(labels.shape)} for logits shape {tuple(logits.shape)}.")


def _check_ids(labels: jax.Array, num_ids: int, fn_name: str,
               ignore_index: int | None = None, one_channel: bool = False) -> None:
  """Raises for ids outside `[0, num_ids)` (other than `ignore_index`) when `labels` are
  concrete; traced labels cannot be checked (see the module docstring)."""
  values = _concrete(labels)
  if values is None:
    return
  bad = (values < 0) | (values >= num_ids)
  if ignore_index is not None:
    bad &= values != ignore_index
  if np.any(bad):
    allowed = f"[0, {num_ids})"
    if ignore_index is not None:
      allowed += f" or ignore_index={ignore_index}"
    if one_channel:
      allowed += " (one channel: the target is labels == 1)"
    raise ValueError(f"{fn_name}: labels must be class ids in {allowed}; got "
                     f"values {np.unique(values[bad])[:8].tolist()}.")


def _check_no_ignore_index(ignore_index: int | None, target: jax.Array, fn_name: str) -> None:
  if ignore_index is not None:
    raise ValueError(f"{fn_name}: ignore_index={ignore_index} needs integer class ids as labels; "
                     f"got a float target of shape {tuple(target.shape)} (as torch, which does "
                     f"not support ignore_index with probability targets).")


def _target(logits: jax.Array, labels: ArrayLike, fn_name: str, *,
            ignore_index: int | None = None) -> tuple[jax.Array, jax.Array | None, bool]:
  """`(target [B, ..., K] float32, valid [B, ...] float32 or None, is_ids)`.

  Integer ids are one-hot encoded (with one channel: `labels == 1`); `valid` is 0 where the id is
  `ignore_index` (None without one). A float target is returned as given.
  """
  logits, labels, is_ids = _check_inputs(logits, labels, fn_name)
  num_classes = logits.shape[-1]
  if not is_ids:
    _check_no_ignore_index(ignore_index, labels, fn_name)
    return labels, None, False
  _check_ids(labels, 2 if num_classes == 1 else num_classes, fn_name, ignore_index,
             one_channel=num_classes == 1)
  valid = None
  if ignore_index is not None:
    keep = labels != ignore_index
    valid = keep.astype(jnp.float32)
    labels = jnp.where(keep, labels, -1)
  if num_classes == 1:
    target = (labels == 1)[..., None].astype(jnp.float32)
  else:
    target = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return target, valid, True


def _probabilities(logits: jax.Array, *, softmax: bool, sigmoid: bool,
                   fn_name: str) -> jax.Array:
  if softmax and sigmoid:
    raise ValueError(f"{fn_name}: softmax=True and sigmoid=True are not compatible.")
  x = jnp.asarray(logits, jnp.float32)
  if sigmoid:
    return jax.nn.sigmoid(x)
  if softmax:
    if x.shape[-1] == 1:
      # MONAI's rule and message: a softmax over one channel would be 1 everywhere (no gradient).
      warnings.warn("single channel prediction, `softmax=True` ignored.", stacklevel=3)
      return x
    return jax.nn.softmax(x, axis=-1)
  return x


def _class_weights(class_weights: ArrayLike | None, num_classes: int, include_background: bool,
                   fn_name: str, arg: str = "class_weights") -> jax.Array | None:
  """Weights for the classes a loss keeps: `[K]`, or `[K - 1]` without the background.

  One number is the same weight for every kept class (MONAI's scalar `weight`).
  """
  if class_weights is None:
    return None
  w = jnp.asarray(class_weights, jnp.float32)
  kept = num_classes if include_background else num_classes - 1
  if w.ndim == 0:
    w = jnp.full((kept,), w)
  if w.ndim != 1 or w.shape[0] not in (num_classes, kept):
    expected = (f"{num_classes}" if include_background
                else f"{num_classes} (one per class id) or {kept} (without the background)")
    raise ValueError(f"{fn_name}: {arg} must be a vector of length {expected}; got shape "
                     f"{tuple(w.shape)}.")
  values = _concrete(w)
  if values is not None and np.any(values < 0):
    raise ValueError(f"{fn_name}: {arg} must be >= 0; got {values.tolist()}.")
  if w.shape[0] == num_classes and not include_background:
    w = w[1:]
  return w


def _keeps_background(include_background: bool, num_classes: int) -> bool:
  """MONAI: `include_background=False` with one channel is ignored, with a warning."""
  if not include_background and num_classes == 1:
    warnings.warn("single channel prediction, `include_background=False` ignored.", stacklevel=3)
    return True
  return include_background


def _reduce_axes(ndim: int, batch: bool) -> tuple[int, ...]:
  """Axes summed over: the spatial ones, plus the batch axis when `batch`."""
  return tuple(range(0 if batch else 1, ndim - 1))


def _reduce(values: jax.Array, reduction: str) -> jax.Array:
  if reduction == "mean":
    return jnp.mean(values)
  if reduction == "sum":
    return jnp.sum(values)
  return values
