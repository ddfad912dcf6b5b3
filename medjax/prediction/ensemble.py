"""Combining the members of a prediction: models (e.g. the cross-validation folds) and
test-time flips, each giving class probabilities `[D, H, W, K]` on the scan's own grid.

The ensemble's probabilities are the members' mean, as nnU-Net's `nnUNetv2_ensemble` and
MONAI's `MeanEnsemble` average them; their spread is the per-voxel uncertainty written beside
the prediction on request (`python -m medjax.predict --uncertainty entropy|variance`):

* `entropy`: the predictive entropy of the mean, in nats. Softmax outputs:
  `H = -sum_k p_k log p_k` over the classes (0 when one class is certain, log K when all are
  equally likely). Sigmoid outputs (regions, multi-label): the binary entropies
  `-p log p - (1 - p) log(1 - p)` summed over the outputs. It needs only one member, and grows
  both with the model's own doubt and with disagreement between members.
* `variance`: the variance across members of each output's probability (population variance,
  dividing by M), averaged over the outputs; 0 when all members agree. It needs at least two
  members (`--tta` or several `--workdir`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

UNCERTAINTIES = ("entropy", "variance")


class MemberStats:
  """Running mean (and, for 'variance', mean square) of members added one at a time, so that an
  ensemble of many folds and flips holds two volumes rather than all of its members."""

  def __init__(self, *, keep_squares: bool = False):
    self.count = 0
    self._sum: np.ndarray | None = None
    self._sum_sq: np.ndarray | None = None
    self._keep_squares = keep_squares

  def add(self, probs: np.ndarray) -> None:
    """Adds one member `[D, H, W, K]` (or several, `[M, D, H, W, K]`)."""
    probs = np.asarray(probs, np.float64)
    batch = probs if probs.ndim == 5 else probs[None]
    if batch.ndim != 5:
      raise ValueError(f"member has shape {probs.shape}: expected [D, H, W, K].")
    if self._sum is not None and batch.shape[1:] != self._sum.shape:
      raise ValueError(f"members have different shapes {batch.shape[1:]} and {self._sum.shape}.")
    total = batch.sum(axis=0)
    self._sum = total if self._sum is None else self._sum + total
    if self._keep_squares:
      sq = np.square(batch).sum(axis=0)
      self._sum_sq = sq if self._sum_sq is None else self._sum_sq + sq
    self.count += batch.shape[0]

  def mean(self) -> np.ndarray:
    """The members' mean probabilities `[D, H, W, K]`, float32."""
    if self._sum is None:
      raise ValueError("no members to combine.")
    return (self._sum / self.count).astype(np.float32)

  def uncertainty(self, kind: str, *, activation: str = "softmax") -> np.ndarray:
    """Per-voxel uncertainty `[D, H, W]` float32 (module docstring)."""
    if kind not in UNCERTAINTIES:
      raise ValueError(f"uncertainty {kind!r}: expected one of {UNCERTAINTIES}.")
    if self._sum is None:
      raise ValueError("no members to combine.")
    p = self._sum / self.count
    if kind == "variance":
      if self.count < 2:
        raise ValueError("--uncertainty variance needs at least two members: add --tta or give "
                         "several --workdir.")
      if self._sum_sq is None:
        raise ValueError("MemberStats(keep_squares=True) is needed for the variance.")
      var = np.maximum(self._sum_sq / self.count - np.square(p), 0.0)
      return var.mean(axis=-1).astype(np.float32)
    if activation == "softmax":
      h = -_xlogx(p).sum(axis=-1)
    elif activation == "sigmoid":
      h = -(_xlogx(p) + _xlogx(1.0 - p)).sum(axis=-1)
    else:
      raise ValueError(f"activation {activation!r}: expected 'softmax' or 'sigmoid'.")
    return np.maximum(h, 0.0).astype(np.float32)


def average(members: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
  """The members' mean probabilities `[D, H, W, K]` (float32), from `[M, D, H, W, K]`."""
  stats = MemberStats()
  for m in members:
    stats.add(m)
  return stats.mean()


def uncertainty(members: Sequence[np.ndarray] | np.ndarray, kind: str, *,
                activation: str = "softmax") -> np.ndarray:
  """Per-voxel uncertainty `[D, H, W]` float32 of members `[M, D, H, W, K]` (module docstring).

  Args:
    members: the members' probabilities (softmax over K, or a sigmoid per output).
    kind: 'entropy' or 'variance'.
    activation: 'softmax' or 'sigmoid', how the probabilities were made (entropy only).
  """
  stats = MemberStats(keep_squares=True)
  for m in members:
    stats.add(m)
  return stats.uncertainty(kind, activation=activation)


def _xlogx(p: np.ndarray) -> np.ndarray:
  """p log p with 0 log 0 = 0."""
  return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
