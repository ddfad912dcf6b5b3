"""Multi-hot targets of (possibly overlapping) regions of class ids, for sigmoid losses."""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from medjax.losses._targets import ArrayLike

# BraTS sub-regions on medjax's class ids (0 background, 1 NCR/NET, 2 ED, 3 ET): whole tumour,
# tumour core, enhancing tumour -- the `regions` argument of `region_targets`.
BRATS_REGIONS: tuple[tuple[int, ...], ...] = ((1, 2, 3), (1, 3), (3,))


def region_targets(labels: ArrayLike, regions: Sequence[Sequence[int]]) -> jax.Array:
  r"""Multi-hot region targets from integer class ids, for sigmoid (multi-label) losses.

    target[..., r] = 1 if labels is one of regions[r] else 0

  E.g. BraTS after medjax's label mapping (0 background, 1 NCR/NET, 2 ED, 3 ET) with
  `BRATS_REGIONS = ((1, 2, 3), (1, 3), (3,))`: whole tumour, tumour core, enhancing tumour.
  Regions may overlap. Use with `dice_loss(sigmoid=True, softmax=False)`,
  `binary_cross_entropy_loss`, `dice_ce_loss(sigmoid=True, softmax=False)` or
  `focal_loss(sigmoid=True, softmax=False)` and a model with R output channels.

  Args:
    labels: `[B, ...]` integer class ids.
    regions: R non-empty sequences of class ids.

  Returns:
    `[B, ..., R]` float32.
  """
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"region_targets: labels must hold integer class ids; got dtype "
                     f"{labels.dtype}.")
  if isinstance(regions, (str, bytes)) or not isinstance(regions, Sequence) or not regions:
    raise ValueError(f"region_targets: regions must be a non-empty sequence of sequences of class "
                     f"ids, e.g. ((1, 2, 3), (1, 3), (3,)); got {regions!r}.")
  columns = []
  for r, ids in enumerate(regions):
    if (isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or not ids
        or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids)):
      raise ValueError(f"region_targets: regions[{r}] must be a non-empty sequence of integer "
                       f"class ids; got {ids!r}.")
    columns.append(jnp.any(labels[..., None] == jnp.asarray(ids, labels.dtype), axis=-1))
  return jnp.stack(columns, axis=-1).astype(jnp.float32)
