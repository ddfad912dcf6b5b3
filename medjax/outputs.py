"""What a network's output channels mean, from the config: how many, which activation turns them
into probabilities, and how probabilities become class ids (channels last, `[..., K]`)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from medjax import regions as regions_lib


def num_outputs(config: ml_collections.ConfigDict) -> int | None:
  """The network's output channels: one per region with `dataset.regions`, else per class."""
  if config.dataset.regions is not None:
    return len(config.dataset.regions)
  return config.dataset.num_classes


def output_activation(config: ml_collections.ConfigDict) -> str:
  """'sigmoid' when the outputs are trained with per-channel sigmoids (a sigmoid loss, as
  region-based training needs), else 'softmax': the probabilities inference blends."""
  sigmoid = config.loss.sigmoid or config.loss.name == "binary_cross_entropy"
  return "sigmoid" if sigmoid else "softmax"


def output_classes(probs: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
  """Class ids `[...]` (uint8) from output probabilities `[..., K]`: the argmax, or with
  `dataset.regions` the regions above `regions.THRESHOLD` painted into classes."""
  if config.dataset.regions is None:
    return np.asarray(probs).argmax(-1).astype(np.uint8)
  return regions_lib.masks_to_classes(np.asarray(probs) > regions_lib.THRESHOLD,
                                      config.dataset.regions)


# Probabilities are kept this far from 0 (and, for a sigmoid, from 1: float32 resolves 1 - 1e-6)
# before the log, so that a class the blended prediction rules out exactly gives a large finite
# cross-entropy rather than inf.
_MIN_PROBABILITY = 1e-12
_MIN_PROBABILITY_SIGMOID = 1e-6


def probabilities_as_logits(probs: np.ndarray, config: ml_collections.ConfigDict) -> jax.Array:
  """Scores whose softmax (or sigmoid, for a sigmoid loss) gives back `probs` `[..., K]`.

  The sliding window blends probabilities (those of `output_activation`), while the losses take
  logits: `log p` is such a score for a softmax (`softmax(log p) = p` when the classes sum to
  1), `log(p / (1 - p))` for a sigmoid.
  """
  p = jnp.asarray(probs, jnp.float32)
  if output_activation(config) == "sigmoid":
    p = jnp.clip(p, _MIN_PROBABILITY_SIGMOID, 1.0 - _MIN_PROBABILITY_SIGMOID)
    return jnp.log(p) - jnp.log1p(-p)
  return jnp.log(jnp.maximum(p, _MIN_PROBABILITY))
