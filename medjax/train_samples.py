"""The training samples of the input pipeline: whole cases prepared once per process and cached
(`CaseCache`), and the map from a host-local sample index to its crop (`SampleFn`), which fixes
which case, epoch order and crop start every global sample gets (see `medjax.input_pipeline`)."""

from __future__ import annotations

import functools
import threading

import numpy as np

from medjax.data import datasets
from medjax.data import normalize
from medjax.data import sampling


def pad_to(array: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
  pad = [(0, max(0, c - s)) for s, c in zip(array.shape[:3], size)]
  if not any(p for _, p in pad):
    return array
  return np.pad(array, pad + [(0, 0)] * (array.ndim - 3))


class CaseCache:
  """Whole training cases, prepared and ready to crop, loaded once per process."""

  def __init__(self, cases: datasets.Cases, *, preprocessing, crop_size, threshold: float,
               rule: str, foreground_oversampling: float = 0.0):
    self._cases = cases
    self._preprocessing = preprocessing
    self._crop_size, self._threshold, self._rule = crop_size, threshold, rule
    self._foreground_oversampling = foreground_oversampling
    self._entries: dict[int, tuple[np.ndarray, np.ndarray, sampling.CropSampler, str]] = {}
    self._locks = [threading.Lock() for _ in range(len(cases))]

  def __len__(self) -> int:
    return len(self._cases)

  def __getstate__(self):  # grain worker processes rebuild their own cache.
    state = self.__dict__.copy()
    state["_entries"], state["_locks"] = {}, None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._locks = [threading.Lock() for _ in range(len(self._cases))]

  def get(self, record: int) -> tuple[np.ndarray, np.ndarray, sampling.CropSampler, str]:
    """(image [d, h, w, C] float32 prepared, label [d, h, w] uint8, sampler, case id)."""
    entry = self._entries.get(record)
    if entry is not None:
      return entry
    with self._locks[record]:
      if record not in self._entries:
        case = self._cases[record]
        if case.label is None:
          raise ValueError(f"training case {case.case_id} has no label.")
        prepared = self._preprocessing.prepare(case.image, case.affine, case.label)
        image = pad_to(prepared.image, self._crop_size)
        label = pad_to(prepared.label, self._crop_size)
        sampler = sampling.CropSampler(
            label, self._crop_size, threshold=self._threshold, rule=self._rule,
            subject=f"case {case.case_id}",
            foreground_oversampling=self._foreground_oversampling)
        self._entries[record] = (image, label, sampler, case.case_id)
    return self._entries[record]


class SampleFn:
  """Maps a host-local sample index to {'image': [*crop, C] float32, 'label': [*crop] int32}."""

  def __init__(self, *, kind: str, records, seed: int, local_batch: int, global_batch: int,
               process_index: int, mode: str, with_metadata: bool):
    self._kind, self._records, self._seed = kind, records, seed
    self._b, self._B, self._p = local_batch, global_batch, process_index
    self._mode, self._with_metadata = mode, with_metadata

  @functools.lru_cache(maxsize=4)
  def _order(self, epoch: int) -> np.ndarray:
    return sampling.epoch_order(self._seed, epoch, len(self._records))

  def __call__(self, local_index: int) -> dict[str, np.ndarray]:
    step, j = divmod(int(local_index), self._b)
    i = step * self._B + self._p * self._b + j  # global sample index
    epoch, pos = divmod(i, len(self._records))
    record = int(self._order(epoch)[pos])
    if self._kind == "cases":
      image, label, sampler, case_id = self._records.get(record)
      start = sampler.sample(sampling.crop_rng(self._seed, i))
      image = sampling.crop(image, start, sampler.crop_size)
      label = sampling.crop(label, start, sampler.crop_size)
    else:
      ex = self._records[record]
      image = np.stack([normalize.normalize_with_stats(ex[m], ex[f"{m}_stats"], self._mode)
                        for m in ("t1", "t2")], axis=-1)
      label, start = ex["label"], tuple(ex["crop_start"])
      case_id = datasets.case_id_of("iseg2017", ex)
    out = {"image": np.ascontiguousarray(image, np.float32), "label": np.asarray(label, np.int32)}
    if self._with_metadata:
      out["case_id"] = np.asarray(case_id)
      out["crop_start"] = np.asarray(start, np.int32)
    return out
