"""Region-based training (nnU-Net's, for BraTS): one sigmoid output per region of classes.

With `config.dataset.regions = ((1, 2, 3), (1, 3), (3,))` (BraTS's whole tumour, tumour core and
enhancing tumour, in medjax's class ids 0 background, 1 NCR/NET, 2 ED, 3 ET) the network has one
output channel per region, trained with a sigmoid loss against the multi-hot targets
`losses.region_targets(label, regions)`; regions may overlap. Validation thresholds each region's
probability at 0.5 and scores each region's Dice.

A label map is made back from the region masks as nnU-Net does (`regions_class_order`): starting
from background, each region in turn paints its voxels with the one class it holds that no later
region holds, so nested regions listed from the largest to the smallest give the classes back
(whole tumour -> 2, then tumour core -> 1, then enhancing -> 3).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

Regions = tuple[tuple[int, ...], ...]
# A voxel is in a region when the region's sigmoid probability exceeds this (nnU-Net's).
THRESHOLD = 0.5


def check_regions(regions: Any, num_classes: int, key: str = "config.dataset.regions") -> Regions:
  """`regions` as a tuple of tuples of foreground class ids in `[1, num_classes)`.

  Raises:
    ValueError: not a non-empty sequence of non-empty id sequences, an id out of range, or
      regions from which no label map can be made (`paint_order`).
  """
  example = "e.g. ((1, 2, 3), (1, 3), (3,))"
  if isinstance(regions, (str, bytes)) or not isinstance(regions, Sequence) or not regions:
    raise ValueError(f"{key}={regions!r}: expected a non-empty tuple of class-id tuples, "
                     f"{example}.")
  out = []
  for r, ids in enumerate(regions):
    if (isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or not ids or
        not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids)):
      raise ValueError(f"{key}[{r}]={ids!r}: expected a non-empty tuple of class ids, {example}.")
    bad = [int(i) for i in ids if not 1 <= int(i) < num_classes]
    if bad:
      raise ValueError(f"{key}[{r}]={tuple(ids)} holds {bad}: region ids must be foreground "
                       f"classes in 1..{num_classes - 1}.")
    out.append(tuple(sorted({int(i) for i in ids})))
  regions = tuple(out)
  paint_order(regions, key)
  return regions


def paint_order(regions: Regions, key: str = "regions") -> tuple[int, ...]:
  """The class each region paints: the one id of region r in no later region (nnU-Net's
  `regions_class_order`).

  Raises:
    ValueError: a region that holds no such id, or more than one.
  """
  order = []
  for r, ids in enumerate(regions):
    later = set().union(*regions[r + 1:]) if r + 1 < len(regions) else set()
    own = sorted(set(ids) - later)
    if len(own) != 1:
      raise ValueError(
          f"{key}: region {r} {ids} holds {own or 'no class'} outside the later regions; list "
          "nested regions from the largest to the smallest so that each adds exactly one class "
          "(BraTS: ((1, 2, 3), (1, 3), (3,))).")
    order.append(own[0])
  return tuple(order)


def region_masks(labels: np.ndarray, regions: Regions) -> np.ndarray:
  """`[..., R]` bool: voxel in region r (its class is one of `regions[r]`)."""
  labels = np.asarray(labels)
  return np.stack([np.isin(labels, ids) for ids in regions], axis=-1)


def masks_to_classes(masks: np.ndarray, regions: Regions) -> np.ndarray:
  """Class ids `[...]` (uint8) from region masks `[..., R]`, painted in `paint_order`."""
  masks = np.asarray(masks, bool)
  if masks.shape[-1] != len(regions):
    raise ValueError(f"masks have {masks.shape[-1]} regions; expected {len(regions)}.")
  classes = np.zeros(masks.shape[:-1], np.uint8)
  for r, cls in enumerate(paint_order(regions)):
    classes[masks[..., r]] = cls
  return classes


def region_names(regions: Regions, dataset_regions: dict[str, Sequence[int]]) -> tuple[str, ...]:
  """A name per region: the dataset's name for the same class set, else `region<r>`."""
  by_ids = {tuple(sorted(set(int(i) for i in v))): k for k, v in dataset_regions.items()}
  return tuple(by_ids.get(ids, f"region{r}") for r, ids in enumerate(regions))
