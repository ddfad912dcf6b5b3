"""`GeometryRecord`: what undoes `medjax.data.geometry.forward` for one scan (JSON-able)."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def _int3(values: Sequence[Any], name: str) -> tuple[int, int, int]:
  out = tuple(int(v) for v in values)
  if len(out) != 3:
    raise ValueError(f"GeometryRecord.{name} must have 3 entries, got {tuple(values)}.")
  return out


def _float3(values: Sequence[Any], name: str) -> tuple[float, float, float]:
  out = tuple(float(v) for v in values)
  if len(out) != 3:
    raise ValueError(f"GeometryRecord.{name} must have 3 entries, got {tuple(values)}.")
  return out


def _matrix(values: Any, name: str) -> tuple[tuple[float, ...], ...]:
  m = np.asarray(values, dtype=np.float64)
  if m.shape != (4, 4):
    raise ValueError(f"GeometryRecord.{name} must be 4x4, got shape {m.shape}.")
  return tuple(tuple(float(v) for v in row) for row in m)


@dataclasses.dataclass(frozen=True)
class GeometryRecord:
  """Everything that undoes `forward` for one scan. Immutable, comparable, JSON-able.

  Sequences are stored as tuples (affines as 4 rows of 4 floats; `np.asarray` gives the matrix),
  so records compare with `==` and `to_dict()` is exact through `json`.

  Attributes:
    original_shape: `(D0, H0, W0)` of the file's voxel grid.
    original_affine: `[4, 4]` voxel-to-world (mm) affine of the file.
    ornt: the nibabel orientation transform applied, file axes -> canonical axes: row i is
      `(j, flip)`: file axis i became canonical axis j, reversed when flip is -1.
    oriented_shape: `(D1, H1, W1)`, the shape in canonical axes (a permutation of
      original_shape).
    crop_box: `((start, stop),) * 3`, the kept voxels of the canonical grid.
    shape_before_resampling: the cropped shape, `stop - start` per axis.
    shape_after_resampling: `(d, h, w)`, the shape the network sees.
    spacing_before_resampling: voxel size (mm) in canonical axes.
    spacing_after_resampling: voxel size (mm) of the preprocessed grid
      (`spacing_before * shape_before / shape_after`).
    affine: `[4, 4]` affine of the preprocessed grid (write a preprocessed volume with it).
  """
  original_shape: tuple[int, int, int]
  original_affine: tuple[tuple[float, ...], ...]
  ornt: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
  oriented_shape: tuple[int, int, int]
  crop_box: Box
  shape_before_resampling: tuple[int, int, int]
  shape_after_resampling: tuple[int, int, int]
  spacing_before_resampling: tuple[float, float, float]
  spacing_after_resampling: tuple[float, float, float]
  affine: tuple[tuple[float, ...], ...]

  def __post_init__(self):
    def put(name, value):
      object.__setattr__(self, name, value)

    for name in ("original_shape", "oriented_shape", "shape_before_resampling",
                 "shape_after_resampling"):
      put(name, _int3(getattr(self, name), name))
    for name in ("spacing_before_resampling", "spacing_after_resampling"):
      put(name, _float3(getattr(self, name), name))
    for name in ("original_affine", "affine"):
      put(name, _matrix(getattr(self, name), name))
    ornt = np.asarray(self.ornt)
    if ornt.shape != (3, 2) or sorted(ornt[:, 0].tolist()) != [0, 1, 2] or not set(
        ornt[:, 1].tolist()) <= {-1, 1}:
      raise ValueError(
          f"GeometryRecord.ornt must be 3 rows (axis, flip) with axes a permutation of 0, 1, 2 "
          f"and flips +-1, got {self.ornt}.")
    put("ornt", tuple((int(a), int(f)) for a, f in ornt))
    box = np.asarray(self.crop_box)
    if box.shape != (3, 2):
      raise ValueError(f"GeometryRecord.crop_box must be 3 (start, stop) pairs, got "
                       f"{self.crop_box}.")
    put("crop_box", tuple((int(a), int(b)) for a, b in box))
    if self.oriented_shape != tuple(self.original_shape[i] for i in np.argsort(ornt[:, 0])):
      raise ValueError(f"GeometryRecord: oriented_shape {self.oriented_shape} is not "
                       f"original_shape {self.original_shape} permuted by ornt {self.ornt}.")
    for (start, stop), n, size in zip(self.crop_box, self.oriented_shape,
                                      self.shape_before_resampling):
      if not 0 <= start < stop <= n or stop - start != size:
        raise ValueError(
            f"GeometryRecord: crop_box {self.crop_box} does not fit oriented_shape "
            f"{self.oriented_shape} or give shape_before_resampling "
            f"{self.shape_before_resampling}.")

  def to_dict(self) -> dict[str, Any]:
    """A JSON-able dict (lists of ints and floats) that `from_dict` turns back into `self`."""
    return {f.name: _to_lists(getattr(self, f.name)) for f in dataclasses.fields(self)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> GeometryRecord:
    """The record of `to_dict()`; ValueError names the missing or unexpected keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    if set(d) != names:
      raise ValueError(
          f"GeometryRecord.from_dict: missing keys {sorted(names - set(d))}, unexpected keys "
          f"{sorted(set(d) - names)}.")
    return cls(**d)


def _to_lists(value: Any) -> Any:
  if isinstance(value, tuple):
    return [_to_lists(v) for v in value]
  return value
