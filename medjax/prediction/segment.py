"""Segmenting one scan: prepare it as the training scans were, slide the model over it, and take
its class probabilities back to the scan's own voxel grid."""

from __future__ import annotations

from typing import Any

import numpy as np

from medjax import inference
from medjax import labels
from medjax import outputs
from medjax.data import datasets
from medjax.data import preprocessing as preprocessing_lib


def preprocessing_of(workdir: str, config: Any) -> preprocessing_lib.Preprocessing:
  """The workdir's `preprocessing.json`, or for runs made before it existed the normalisation
  their config names (iSeg-2017's names)."""
  saved = preprocessing_lib.load(workdir)
  return saved if saved is not None else _config_preprocessing(config)


def _config_preprocessing(config: Any) -> preprocessing_lib.Preprocessing:
  """The normalisation alone that a config names (runs without preprocessing.json)."""
  k, c = int(config.dataset.num_classes), int(config.dataset.num_modalities)
  iseg_names = datasets.ISEG2017_NAMES
  if (k, c) == (len(iseg_names.class_names), len(iseg_names.channel_names)):
    names = iseg_names
  else:
    names = datasets.DatasetNames(tuple(f"channel{i}" for i in range(c)),
                                  labels.default_class_names(k), tuple(range(k)))
  clip = config.dataset.clip_percentiles
  return preprocessing_lib.Preprocessing(
      names=names, normalization=(config.dataset.normalization,) * c,
      clip_percentiles=None if clip is None else tuple(float(v) for v in clip))


def segment(model: Any, variables: Any, config: Any, image: np.ndarray, *,
            affine: np.ndarray | None = None,
            preprocessing: preprocessing_lib.Preprocessing | None = None,
            overlap: float | None = None, mode: str | None = None,
            sw_batch_size: int | None = None, tta: bool = False,
            progress: bool = False, members: bool = False) -> np.ndarray:
  """One scan `image [D, H, W, C]` (raw, the file's voxel order) -> probabilities `[D, H, W, K]`.

  The probabilities are the softmax over the classes, or a sigmoid per output for models trained
  with a sigmoid loss or on regions (`outputs.output_activation`; `output_classes` turns
  either into class ids).

  The scan is prepared with `preprocessing` (default: the normalisation `config` names; pass
  `preprocessing_of(workdir, config)` for models trained with resampling or reorientation, and
  the scan's `affine`), segmented, and its probabilities taken back to the scan's grid.

  With `members`, returns each test-time flip's probabilities `[M, D, H, W, K]` (M = 4 with
  `tta`, else 1; their mean is the `members=False` result) for `ensemble.uncertainty`.
  """
  if preprocessing is None:
    preprocessing = _config_preprocessing(config)
  if affine is None:
    if (preprocessing.orientation, preprocessing.target_spacing,
        preprocessing.crop_nonzero) != (None, None, False):
      raise ValueError("this model reorients, resamples or crops its input: pass the scan's "
                       "affine to segment(..., affine=...).")
    affine = np.eye(4)
  prepared = preprocessing.prepare(image, affine)
  probs = inference.predict_volume(
      model, variables, prepared.image, roi_size=tuple(config.eval.roi_size),
      overlap=config.eval.overlap if overlap is None else overlap,
      mode=(mode or config.eval.mode),
      sw_batch_size=sw_batch_size or config.eval.sw_batch_size,
      flip_axes=((0,), (1,), (2,)) if tta else None, progress=progress,
      activation=outputs.output_activation(config), members=members)
  background = config.dataset.regions is None
  if members:
    return np.stack([preprocessing.restore(p, prepared.record, class0_is_background=background)
                     for p in probs])
  return preprocessing.restore(probs, prepared.record, class0_is_background=background)
