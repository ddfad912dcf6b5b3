"""Seeded sampling of sub-volume crops under a foreground threshold.

A crop of size `(cd, ch, cw)` starting at voxel `(d, h, w)` covers `[d, d + cd) x [h, h + ch) x
[w, w + cw)`; starts run over every position where the crop fits. A start is *valid* when the
crop satisfies the threshold rule:

- `subject_foreground` (MedicalZoo's rule): foreground voxels in the crop / foreground voxels in
  the whole subject >= threshold.
- `crop_fraction`: foreground voxels in the crop / voxels in the crop > threshold.

Foreground is every non-background voxel (class id > 0). MedicalZoo draws random crops until one
passes, with no cap. Here the foreground count of every possible crop comes from one summed-area
table, and a crop is drawn uniformly among the valid starts: the same distribution as
rejection sampling, at constant cost, and an empty valid set is reported at once as a clear error
instead of an endless loop.

Foreground oversampling (nnU-Net's `oversample_foreground_percent`): with probability
`foreground_oversampling` a crop is *forced* instead: a class is drawn uniformly among the
foreground classes present in the subject, then one of its voxels uniformly, and the crop is
centred on it (start = voxel - crop // 2 on each axis, clipped so the crop stays inside the
volume; the voxel is then still inside the crop). Forced crops ignore the threshold rule; a
subject without foreground gets the threshold rule's crop. nnU-Net forces the last
round(B * p) crops of every batch instead of drawing per crop, and lets a forced crop stick out
of the volume (padded); here each crop is drawn alone, so the fraction is p at any batch size.

Randomness is explicit: `crop_rng(seed, index)` gives the generator for sample `index`, so a
sample depends only on (seed, index). Without oversampling the draws are exactly those of a
sampler without the option.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

THRESHOLD_RULES = ("subject_foreground", "crop_fraction")
# Mixed into the seeds so that crops and epoch orders of one seed are independent streams.
_CROP_STREAM = 0x43524F50
_ORDER_STREAM = 0x4F524452


def check_crop_size(volume_shape: Sequence[int], crop_size: Sequence[int], *,
                    what: str = "volume") -> tuple[int, int, int]:
  """Returns `crop_size` as ints, or raises ValueError if it does not fit in `volume_shape`."""
  crop = tuple(int(c) for c in crop_size)
  shape = tuple(int(s) for s in volume_shape)
  if len(crop) != 3 or min(crop) < 1:
    raise ValueError(f"crop_size must be 3 positive ints, got {tuple(crop_size)}.")
  if any(c > s for c, s in zip(crop, shape)):
    raise ValueError(
        f"crop_size {crop} is larger than the {what} of shape {shape}; use a crop no larger "
        "than the volume on every axis.")
  return crop


def crop_foreground_counts(label: np.ndarray, crop_size: Sequence[int]) -> np.ndarray:
  """Foreground voxels in every crop of `crop_size`, from a summed-area table.

  Args:
    label: `[D, H, W]` class ids; foreground is `label > 0`.
    crop_size: `(cd, ch, cw)`.

  Returns:
    `[D - cd + 1, H - ch + 1, W - cw + 1]` int64; entry `(d, h, w)` counts the crop starting there.
  """
  cd, ch, cw = check_crop_size(label.shape, crop_size)
  sat = np.zeros(tuple(s + 1 for s in label.shape), np.int32)
  # int32 holds any count up to 2**31 voxels; numpy would otherwise widen to int64.
  fg = (label > 0).astype(np.int32)
  sat[1:, 1:, 1:] = fg.cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32).cumsum(2, dtype=np.int32)
  d, h, w = (s - c + 1 for s, c in zip(label.shape, (cd, ch, cw)))

  def corner(a: int, b: int, c: int) -> np.ndarray:
    return sat[a:a + d, b:b + h, c:c + w].astype(np.int64)

  return (corner(cd, ch, cw) - corner(0, ch, cw) - corner(cd, 0, cw) - corner(cd, ch, 0)
          + corner(0, 0, cw) + corner(0, ch, 0) + corner(cd, 0, 0) - corner(0, 0, 0))


def valid_crop_starts(label: np.ndarray, crop_size: Sequence[int], *, threshold: float,
                      rule: str = "subject_foreground") -> np.ndarray:
  """Which crop starts satisfy the threshold rule (see the module docstring).

  Args:
    label: `[D, H, W]` class ids.
    crop_size: `(cd, ch, cw)`.
    threshold: the rule's threshold; <= 0 with `subject_foreground` accepts every crop.
    rule: one of THRESHOLD_RULES.

  Returns:
    `[D - cd + 1, H - ch + 1, W - cw + 1]` bool.
  """
  if rule not in THRESHOLD_RULES:
    raise ValueError(f"threshold_rule must be one of {THRESHOLD_RULES}, got {rule!r}.")
  counts = crop_foreground_counts(label, crop_size)
  if rule == "crop_fraction":
    return counts > threshold * float(np.prod(crop_size))
  total = int(np.count_nonzero(label))
  if total == 0:
    return np.full(counts.shape, threshold <= 0)
  return counts >= threshold * total


class CropSampler:
  """Draws crop starts for one subject: uniformly among those passing the threshold rule, or,
  with foreground oversampling, centred on a random foreground voxel (module docstring).

  Attributes:
    shape: the subject's `(D, H, W)`.
    crop_size: `(cd, ch, cw)`.
    num_valid: how many starts pass the rule.
    foreground_oversampling: the probability of a forced (foreground-centred) crop.
  """

  def __init__(self, label: np.ndarray, crop_size: Sequence[int], *, threshold: float,
               rule: str = "subject_foreground", subject: str = "subject",
               foreground_oversampling: float = 0.0):
    """Precomputes the valid starts (and, with oversampling, each class's voxels).

    Args:
      label: `[D, H, W]` class ids.
      crop_size: `(cd, ch, cw)`.
      threshold: see `valid_crop_starts`.
      rule: one of THRESHOLD_RULES.
      subject: how error messages name this subject.
      foreground_oversampling: probability in [0, 1] that a crop is centred on a foreground
        voxel (nnU-Net: 0.33).

    Raises:
      ValueError: the crop does not fit, no crop passes the rule, or the probability is outside
        [0, 1].
    """
    p = float(foreground_oversampling)
    if not 0.0 <= p <= 1.0:
      raise ValueError(f"foreground_oversampling={foreground_oversampling}: expected a "
                       "probability in [0, 1] (nnU-Net: 0.33).")
    self.foreground_oversampling = p
    self.shape = tuple(label.shape)
    self.crop_size = check_crop_size(label.shape, crop_size, what=f"{subject} volume")
    # Forced crops: the flat voxel indices of the foreground sorted by class, and where each
    # present class's run starts and ends (only built when used: int32/int64 per voxel).
    self._fg_voxels, self._fg_bounds = None, None
    if p > 0:
      flat = np.asarray(label).ravel()
      voxels = np.flatnonzero(flat > 0)
      classes = flat[voxels]
      order = np.argsort(classes, kind="stable")
      self._fg_voxels = voxels[order]
      _, first, counts = np.unique(classes[order], return_index=True, return_counts=True)
      self._fg_bounds = np.stack([first, first + counts], axis=1)
    valid = valid_crop_starts(label, self.crop_size, threshold=threshold, rule=rule)
    self._grid = valid.shape
    # int32 halves the memory of this index (up to ~2M starts per full-size subject).
    self._starts = np.flatnonzero(valid).astype(np.int32 if valid.size < 2**31 else np.int64)
    self.num_valid = int(self._starts.size)
    if self.num_valid == 0:
      what = ("of the subject's foreground" if rule == "subject_foreground"
              else "foreground voxels")
      op = ">=" if rule == "subject_foreground" else ">"
      raise ValueError(
          f"{subject}: no crop of size {self.crop_size} in a volume of shape {self.shape} "
          f"holds {op} {threshold:g} {what} (threshold_rule={rule!r}, "
          f"{valid.size} positions checked); lower the threshold or the crop size.")

  @property
  def foreground_classes(self) -> int:
    """How many foreground classes the subject has (0 without oversampling)."""
    return 0 if self._fg_bounds is None else len(self._fg_bounds)

  def sample(self, rng: np.random.Generator) -> tuple[int, int, int]:
    """One crop start `(d, h, w)`: forced with probability `foreground_oversampling`, else
    uniform over the valid starts."""
    return self.sample_with_kind(rng)[0]

  def sample_with_kind(self, rng: np.random.Generator
                       ) -> tuple[tuple[int, int, int], tuple[int, int, int] | None]:
    """`(start, voxel)`: `voxel` is the foreground voxel a forced crop is centred on, or None
    for a crop drawn by the threshold rule."""
    # No extra draw without oversampling, so such runs see the same crops as before it.
    if self.foreground_oversampling > 0 and rng.random() < self.foreground_oversampling:
      if self.foreground_classes:
        lo, hi = self._fg_bounds[rng.integers(self.foreground_classes)]
        flat = self._fg_voxels[lo + rng.integers(hi - lo)]
        voxel = tuple(int(i) for i in np.unravel_index(flat, self.shape))
        start = tuple(int(min(max(v - c // 2, 0), s - c))
                      for v, c, s in zip(voxel, self.crop_size, self.shape))
        return start, voxel
    flat = self._starts[rng.integers(self.num_valid)]
    return tuple(int(i) for i in np.unravel_index(flat, self._grid)), None


def crop(array: np.ndarray, start: Sequence[int], crop_size: Sequence[int]) -> np.ndarray:
  """`array[d:d+cd, h:h+ch, w:w+cw, ...]` (a view)."""
  (d, h, w), (cd, ch, cw) = start, crop_size
  return array[d:d + cd, h:h + ch, w:w + cw]


def crop_affine(affine: np.ndarray, start: Sequence[int]) -> np.ndarray:
  """The affine of a crop starting at voxel `start`: `affine @ translate(start)`, `[4, 4]`."""
  shift = np.eye(4)
  shift[:3, 3] = start
  return np.asarray(affine, np.float64) @ shift


def crop_rng(seed: int, index: int) -> np.random.Generator:
  """The generator for sample `index` of stream `seed` (independent of every other index)."""
  return np.random.default_rng([_CROP_STREAM, int(seed), int(index)])


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """A permutation of `range(n)` for one epoch, fixed by (seed, epoch)."""
  return np.random.default_rng([_ORDER_STREAM, int(seed), int(epoch)]).permutation(n)
