"""Input pipeline: seeded sub-volume batches for training, normalised full volumes for eval.

Training batches come from the TFDS dataset `iseg2017/<config.dataset.builder_config>`, read with
random access (`tfds.data_source`) through a grain `MapDataset`:

- `full` (default): crops are cut on the fly from whole subjects, fresh every epoch. Global sample
  i belongs to epoch e = i // N (N training subjects), which visits the subjects in the order
  `epoch_order(seed, e)`; its crop start is drawn by `crop_rng(seed, i)` uniformly among the
  starts that pass `config.dataset.threshold_rule` (see `medjax.data.sampling`). Subjects are
  normalised once as whole volumes and kept in memory.
- `subvolumes*`: the pre-sampled crops, in the order `epoch_order(seed, e)` over the N crops,
  normalised with the subject statistics stored beside each crop (so they equal crops of the
  normalised volume).

Global batch k holds global samples k*B .. k*B + B - 1 (B = config.batch_size); process p of P
takes samples k*B + p*b .. k*B + (p+1)*b - 1 with b = B / P. A batch therefore depends only on
(config.seed, k, p), and resuming at step s starts exactly at batch s.
"""

from __future__ import annotations

import functools
import pathlib
import threading
from typing import Any, Iterator

from absl import logging
import grain
import jax
import ml_collections
import numpy as np

from datasets_tfds.iseg2017 import iseg2017_dataset_builder as iseg2017_builder
from medjax.data import build
from medjax.data import iseg
from medjax.data import normalize
from medjax.data import sampling
from medjax.data import synthetic

_BUILTIN_SUBDIR = "downloads/manual/iseg2017_builtin"


def _dataset_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  ds = config.dataset
  if ds.get("name", "iseg2017") != "iseg2017":
    raise ValueError(f"config.dataset.name must be 'iseg2017', got {ds.name!r}.")
  if ds.get("num_modalities", len(iseg.MODALITIES)) != len(iseg.MODALITIES):
    raise ValueError(
        f"config.dataset.num_modalities must be {len(iseg.MODALITIES)} (T1, T2), got "
        f"{ds.num_modalities}.")
  if ds.get("normalization", "full_volume_mean") not in normalize.MODES:
    raise ValueError(
        f"config.dataset.normalization must be one of {normalize.MODES}, got "
        f"{ds.normalization!r}.")
  return ds


def _clip(ds: ml_collections.ConfigDict) -> tuple[float, float] | None:
  clip = ds.get("clip_percentiles", normalize.DEFAULT_CLIP_PERCENTILES)
  return None if clip is None else tuple(float(c) for c in clip)


def ensure_dataset(config: ml_collections.ConfigDict):
  """Returns the builder of `iseg2017/<config.dataset.builder_config>`, building it if needed.

  When the config is not built in `config.dataset.data_dir`:
  - with `config.dataset.manual_dir` set, builds it from there (`medjax.data.build`); if that
    folder does not exist and `config.dataset.builtin_data.enabled`, first writes built-in
    iSeg-layout data there (`medjax.data.synthetic`; with an empty manual_dir it goes to
    `<data_dir>/downloads/manual/iseg2017_builtin`);
  - otherwise raises FileNotFoundError with the command that builds it.
  """
  ds = _dataset_config(config)
  name = ds.get("builder_config", "full")  # a config name, or an Iseg2017Config for custom crops
  label = getattr(name, "name", name)
  data_dir = pathlib.Path(ds.get("data_dir", "~/tensorflow_datasets")).expanduser()
  if build.is_built(data_dir, name):
    return iseg2017_builder.Builder(config=name, data_dir=str(data_dir))
  manual = ds.get("manual_dir", "") or ""
  builtin = ds.get("builtin_data", None)
  builtin_enabled = bool(builtin is not None and builtin.get("enabled", False))
  if not manual and builtin_enabled:
    manual = str(data_dir / _BUILTIN_SUBDIR)
  if not manual:
    raise FileNotFoundError(
        f"iseg2017/{label} is not built in {data_dir}. Build it from your iSeg-2017 download "
        f"(see README, 'Real data'):\n"
        f"  python -m medjax.data.build --manual_dir=DIR --data_dir={data_dir} --config={label}\n"
        f"or set --config.dataset.manual_dir=DIR to build it on first use (add "
        f"--config.dataset.builtin_data.enabled=True to use built-in data instead).")
  manual_dir = pathlib.Path(manual).expanduser()
  if not manual_dir.exists() and builtin_enabled:
    logging.info("Writing built-in iSeg-layout data to %s.", manual_dir)
    try:
      synthetic.write_iseg_layout(
          manual_dir, shape=tuple(builtin.get("shape", synthetic.REAL_SHAPE)),
          num_train=builtin.get("num_train", 10), num_test=builtin.get("num_test", 0),
          seed=builtin.get("seed", 0))
    except FileExistsError:
      if not manual_dir.is_dir():  # Another process may have written it meanwhile.
        raise
  logging.info("Building iseg2017/%s from %s into %s.", label, manual_dir, data_dir)
  return build.build_iseg2017(manual_dir=manual_dir, data_dir=data_dir, config_name=name)


class _SubjectCache:
  """Whole subjects of one split, normalised and ready to crop, loaded once per process."""

  def __init__(self, source, *, mode: str, clip, crop_size, threshold: float, rule: str):
    self._source = source
    self._mode, self._clip = mode, clip
    self._crop_size, self._threshold, self._rule = crop_size, threshold, rule
    self._entries: dict[int, tuple[np.ndarray, np.ndarray, sampling.CropSampler, int]] = {}
    self._locks = [threading.Lock() for _ in range(len(source))]

  def __len__(self) -> int:
    return len(self._source)

  def __getstate__(self):  # grain worker processes rebuild their own cache.
    state = self.__dict__.copy()
    state["_entries"], state["_locks"] = {}, None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._locks = [threading.Lock() for _ in range(len(self._source))]

  def get(self, record: int) -> tuple[np.ndarray, np.ndarray, sampling.CropSampler, int]:
    """(image [D, H, W, C] float32 normalised, label [D, H, W] uint8, sampler, subject id)."""
    entry = self._entries.get(record)
    if entry is not None:
      return entry
    with self._locks[record]:
      if record not in self._entries:
        ex = self._source[record]
        image = normalize.normalize(np.stack([ex["t1"], ex["t2"]], axis=-1), self._mode,
                                    clip_percentiles=self._clip)
        label = np.asarray(ex["label"], np.uint8)
        sid = int(ex["subject_id"])
        sampler = sampling.CropSampler(label, self._crop_size, threshold=self._threshold,
                                       rule=self._rule, subject=f"subject {sid}")
        self._entries[record] = (image, label, sampler, sid)
    return self._entries[record]


class _SampleFn:
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
    if self._kind == "full":
      image, label, sampler, sid = self._records.get(record)
      start = sampler.sample(sampling.crop_rng(self._seed, i))
      image = sampling.crop(image, start, sampler.crop_size)
      label = sampling.crop(label, start, sampler.crop_size)
    else:
      ex = self._records[record]
      image = np.stack([normalize.normalize_with_stats(ex[m], ex[f"{m}_stats"], self._mode)
                        for m in ("t1", "t2")], axis=-1)
      label, sid, start = ex["label"], int(ex["subject_id"]), tuple(ex["crop_start"])
    out = {"image": np.ascontiguousarray(image, np.float32), "label": np.asarray(label, np.int32)}
    if self._with_metadata:
      out["subject_id"] = np.int32(sid)
      out["crop_start"] = np.asarray(start, np.int32)
    return out


def create_train_dataset(config: ml_collections.ConfigDict, *, start_step: int = 0,
                         process_index: int | None = None, process_count: int | None = None,
                         with_metadata: bool = False) -> grain.MapDataset:
  """The training batches as a grain MapDataset: element k is host-local batch start_step + k.

  Args:
    config: experiment config (reads seed, batch_size and dataset.*).
    start_step: first batch.
    process_index, process_count: default to jax.process_index() / jax.process_count().
    with_metadata: also return 'subject_id' int32 [b] and 'crop_start' int32 [b, 3].

  Returns:
    MapDataset of {'image': float32 [b, cd, ch, cw, 2], 'label': int32 [b, cd, ch, cw]},
    b = config.batch_size // process_count.
  """
  ds = _dataset_config(config)
  p = jax.process_index() if process_index is None else process_index
  n_proc = jax.process_count() if process_count is None else process_count
  global_batch = int(config.batch_size)
  if global_batch < 1 or global_batch % n_proc:
    raise ValueError(
        f"config.batch_size={global_batch} must be a positive multiple of the process count "
        f"{n_proc}.")
  local_batch = global_batch // n_proc
  builder = ensure_dataset(config)
  bconf = builder.builder_config
  crop_size = tuple(int(c) for c in ds.get("crop_size", (64, 64, 64)))
  if len(crop_size) != 3 or min(crop_size) < 1:
    raise ValueError(f"config.dataset.crop_size must be 3 positive ints, got {crop_size}.")
  mode, clip = ds.get("normalization", "full_volume_mean"), _clip(ds)
  rule = ds.get("threshold_rule", "subject_foreground")
  threshold = float(ds.get("threshold", 0.1))
  source = builder.as_data_source("train")
  if bconf.crop_size is None:
    records = _SubjectCache(source, mode=mode, clip=clip, crop_size=crop_size,
                            threshold=threshold, rule=rule)
    kind = "full"
  else:
    if tuple(bconf.crop_size) != crop_size:
      raise ValueError(
          f"config.dataset.crop_size={crop_size} does not match the crops of "
          f"iseg2017/{bconf.name}, {tuple(bconf.crop_size)}.")
    if clip != tuple(bconf.clip_percentiles):
      raise ValueError(
          f"config.dataset.clip_percentiles={clip} does not match the statistics stored in "
          f"iseg2017/{bconf.name}, computed with {tuple(bconf.clip_percentiles)}; use the "
          "'full' config for other clip percentiles.")
    if (threshold, rule) != (bconf.threshold, bconf.threshold_rule):
      logging.warning(
          "iseg2017/%s was sampled with threshold %s (%s); config.dataset asks for %s (%s), "
          "which only applies to the 'full' config.", bconf.name, bconf.threshold,
          bconf.threshold_rule, threshold, rule)
    records, kind = source, "crops"
  if len(records) == 0:
    raise ValueError(f"iseg2017/{bconf.name} has no training examples.")
  fn = _SampleFn(kind=kind, records=records, seed=int(config.seed), local_batch=local_batch,
                 global_batch=global_batch, process_index=p, mode=mode,
                 with_metadata=with_metadata)
  # Index arithmetic stays below 2**63: global index <= local index * process_count.
  samples = grain.MapDataset.range(0, (2**62 // n_proc) // local_batch * local_batch).map(fn)
  batches = samples.batch(local_batch, drop_remainder=True)
  return batches[int(start_step):]


def create_train_iterator(config: ml_collections.ConfigDict, *,
                          start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Endless iterator of host-local training batches, starting at batch `start_step`.

  Yields:
    {'image': float32 [b, cd, ch, cw, 2] (T1, T2 normalised), 'label': int32 [b, cd, ch, cw]}
    with b = config.batch_size // jax.process_count(). Batch k depends only on
    (config.seed, k, jax.process_index()).

  `config.dataset.num_workers` > 0 reads in that many grain worker processes (then the program
  needs absl flags parsed and a `__main__` guard); `config.dataset.get('num_threads', 2)` and
  `get('prefetch', 2)` set grain's reader threads and prefetched batches.
  """
  ds = _dataset_config(config)
  batches = create_train_dataset(config, start_step=start_step)
  it = batches.to_iter_dataset(grain.ReadOptions(
      num_threads=int(ds.get("num_threads", 2)),
      prefetch_buffer_size=int(ds.get("prefetch", 2))))
  workers = int(ds.get("num_workers", 0))
  if workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iter(it)


def load_eval_subjects(config: ml_collections.ConfigDict,
                       split: str = "validation") -> list[dict[str, Any]]:
  """Whole subjects of `split` from the `full` config, normalised like training.

  Returns:
    One dict per subject, sorted by subject id: 'image' float32 [D, H, W, 2] (T1, T2),
    'label' int32 [D, H, W] (None for unlabelled test subjects), 'affine' float64 [4, 4],
    'spacing' (3 floats, mm), 'subject_id' int.
  """
  ds = _dataset_config(config)
  eval_dict = config.to_dict()
  eval_dict["dataset"]["builder_config"] = "full"
  builder = ensure_dataset(ml_collections.ConfigDict(eval_dict))
  if split not in builder.info.splits:
    raise ValueError(
        f"split {split!r} is not in iseg2017/full at {builder.data_dir}; it has "
        f"{sorted(builder.info.splits)}.")
  source = builder.as_data_source(split)
  mode, clip = ds.get("normalization", "full_volume_mean"), _clip(ds)
  subjects = []
  for i in range(len(source)):
    ex = source[i]
    subjects.append({
        "image": normalize.normalize(np.stack([ex["t1"], ex["t2"]], axis=-1), mode,
                                     clip_percentiles=clip),
        "label": np.asarray(ex["label"], np.int32) if ex["has_label"] else None,
        "affine": np.asarray(ex["affine"], np.float64),
        "spacing": tuple(float(s) for s in ex["spacing"]),
        "subject_id": int(ex["subject_id"]),
    })
  return sorted(subjects, key=lambda s: s["subject_id"])
