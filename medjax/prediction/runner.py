"""`run`: restore a workdir's model, segment scans, write their outputs.

The library call behind `python -m medjax.predict`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import tqdm

from medjax import checkpoint
from medjax import metrics
from medjax import outputs
from medjax import postprocessing as postprocessing_lib
from medjax.data import iseg
from medjax.prediction import cases as cases_lib
from medjax.prediction import ensemble
from medjax.prediction import segment as segment_lib
from medjax.prediction import shards as shards_lib
from medjax.prediction import writing
from medjax.training import mesh as mesh_lib


def run(workdir: str | Sequence[str], *, output_dir: str, t1: str | None = None,
        t2: str | None = None, label: str | None = None, input_dir: str | None = None,
        subjects: list[str] | None = None, fmt: str = "nii.gz", values: str = "class_ids",
        save_probabilities: bool = False, which: str = "best", png: bool = True,
        overlap: float | None = None, mode: str | None = None,
        sw_batch_size: int | None = None, tta: bool = False,
        images: list[str] | None = None, uncertainty: str | None = None,
        postprocessing: str | None = None,
        keep_largest_component: Sequence[int] | None = None,
        num_shards: int | None = None, shard_index: int | None = None) -> list[dict[str, Any]]:
  """Restores the model of `workdir`, segments the given scans and writes their outputs.

  Give one of: `t1` (and `t2`) for an iSeg-style pair, `images` (one file per channel, or one
  4-D file) for one case of any dataset, or `input_dir` for every case of a folder.

  Several workdirs (e.g. the folds of `python -m medjax.crossval`) make an ensemble: each model
  prepares the scan with its own preprocessing, its probabilities are taken back to the scan's
  grid, and the members' probabilities are averaged there (with `tta`, every model's four flips
  are members). The models must predict the same classes (or regions) with the same activation.

  `uncertainty` ('entropy' or 'variance', `ensemble.uncertainty`) also writes
  `<name>-uncertainty.<format>`, float32 on the scan's grid. `keep_largest_component` (class
  ids) or `postprocessing` (a `postprocessing.json` from `medjax.crossval`, or its folder) keeps
  only the largest connected component of those classes (`medjax.postprocessing`).

  `num_shards` and `shard_index` (or, without them, the `jax.distributed` job or the
  `MEDJAX_NUM_PROCESSES` / `MEDJAX_PROCESS_ID` variables: `shards.resolve`) segment one share
  of the cases, those whose rank among the sorted case names is `shard_index` modulo
  `num_shards`; N processes with indices 0..N-1 together write exactly the files of one run.
  Each case's files are written atomically and by one process only; `run` writes nothing for
  the folder as a whole, so the processes never write the same file.

  Sliding-window batches are spread over every device of this process (`inference`).

  Returns:
    One dict per case of this shard: `name`, the written `files`, and `dice` per class when a
    label is known.
  """
  if fmt not in writing.FORMATS:
    raise ValueError(f"--format {fmt!r}: expected one of {writing.FORMATS}.")
  if values not in writing.VALUES:
    raise ValueError(f"--values {values!r}: expected one of {writing.VALUES}.")
  if uncertainty is not None and uncertainty not in ensemble.UNCERTAINTIES:
    raise ValueError(f"--uncertainty {uncertainty!r}: expected one of {ensemble.UNCERTAINTIES}.")
  if sum(x is not None and x != [] for x in (t1, input_dir, images)) != 1:
    raise ValueError("Give either --t1 (with --t2 for two-modality models), --images (the "
                     "channel files of one case) or --input_dir.")
  if t1 is None and t2 is not None:
    raise ValueError("--t2 goes with --t1.")
  if input_dir is not None and label is not None:
    raise ValueError("--label goes with --t1 or --images, not with --input_dir.")
  if postprocessing is not None and keep_largest_component is not None:
    raise ValueError("Give --postprocessing or --keep_largest_component, not both.")
  shard = shards_lib.resolve(num_shards, shard_index)
  workdirs = [workdir] if isinstance(workdir, (str, os.PathLike)) else list(workdir)
  if not workdirs:
    raise ValueError("Give at least one --workdir.")
  if uncertainty == "variance" and len(workdirs) < 2 and not tta:
    raise ValueError("--uncertainty variance needs at least two members: add --tta or give "
                     "several --workdir.")
  keep = (postprocessing_lib.load(postprocessing) if postprocessing is not None else
          [int(k) for k in keep_largest_component or ()])
  # Check single inputs before the (slow) restore; folders are loaded lazily.
  if t1 is not None:
    case = cases_lib.load_case(t1, t2, label)
  members = [_Member.load(w, which) for w in workdirs]
  config, names = members[0].config, members[0].preprocessing.names
  for member in members[1:]:
    _check_same_outputs(members[0], member)
  num_classes = int(config.dataset.num_classes)
  if any(not 0 < k < num_classes for k in keep):
    raise ValueError(f"largest-component classes {keep}: expected foreground class ids "
                     f"1..{num_classes - 1}.")
  if t1 is not None:
    named = [(case.name, lambda: case)]
  elif images:
    case = cases_lib.load_images_case(list(images), label, names=names)
    named = [(case.name, lambda: case)]
  else:
    named = cases_lib.select_named_cases(input_dir, subjects, names)
  loaders = shards_lib.select([n for n, _ in named], [load for _, load in named], shard)
  if shard.count > 1:
    print(f"Shard {shard.index} of {shard.count} ({shard.source}): {len(loaders)} of "
          f"{len(named)} case{'' if len(named) == 1 else 's'}.", flush=True)
  if values == "iseg" and names.label_values != iseg.LABEL_VALUES:
    raise ValueError(f"--values iseg needs an iSeg-2017 model (label values "
                     f"{iseg.LABEL_VALUES}); the checkpoint in {workdirs[0]} has label values "
                     f"{names.label_values}: use --values dataset.")
  activation = outputs.output_activation(config)
  results = []  # output_dir is created by the first write, so a failed run leaves no folder
  bar = tqdm.tqdm(loaders, desc="cases", unit="case", disable=len(loaders) < 2)
  for load in bar:
    case = load()
    stats = ensemble.MemberStats(keep_squares=uncertainty == "variance")
    for member in members:
      image = cases_lib.check_modalities(case, member.config, member.workdir)
      stats.add(segment_lib.segment(
          member.model, member.variables, member.config, image, affine=case.affine,
          preprocessing=member.preprocessing, overlap=overlap, mode=mode,
          sw_batch_size=sw_batch_size, tta=tta, progress=len(loaders) < 2,
          members=uncertainty is not None))
    probs = stats.mean()
    spread = (None if uncertainty is None else
              stats.uncertainty(uncertainty, activation=activation))
    del stats
    classes = outputs.output_classes(probs, config)
    if keep:
      classes = postprocessing_lib.keep_largest_component(classes, keep)
    files = writing.write_outputs(case, probs, output_dir, fmt=fmt, values=values,
                                  save_probabilities=save_probabilities, png=png,
                                  label_values=names.label_values, classes=classes,
                                  uncertainty=spread)
    result = {"name": case.name, "files": files}
    if case.label is not None:
      dice = metrics.dice_per_class(classes, case.label, num_classes=num_classes)
      result["dice"] = dice.tolist()
    results.append(result)
    bar.write(_summary_line(result, names.class_names))
  return results


@dataclasses.dataclass
class _Member:
  """One model of an ensemble: its workdir, restored model and variables, training config and
  preprocessing."""
  workdir: str
  model: Any
  variables: Any
  config: Any
  preprocessing: Any

  @classmethod
  def load(cls, workdir: str, which: str) -> "_Member":
    path = checkpoint.resolve_workdir(workdir)
    preprocessing = segment_lib.preprocessing_of(path, checkpoint.load_config(path))
    model, variables, config, restored = checkpoint.restore_model_and_step(path, which=which)
    # Once on every local device, where the sliding windows of every case run.
    variables = jax.device_put(variables, mesh_lib.replicated(mesh_lib.local_mesh()))
    print(f"Model: checkpoint {restored} (--which {which}).", flush=True)
    return cls(workdir, model, variables, config, preprocessing)


def _check_same_outputs(first: _Member, other: _Member) -> None:
  """Models averaged together must mean the same by each output channel."""
  def outputs_of(m: _Member) -> tuple:
    d = m.config.dataset
    return (int(d.num_classes), d.regions, outputs.output_activation(m.config),
            tuple(m.preprocessing.names.class_names), tuple(m.preprocessing.names.label_values),
            len(m.preprocessing.names.channel_names))

  if outputs_of(first) != outputs_of(other):
    raise ValueError(
        f"--workdir {other.workdir} cannot be averaged with {first.workdir}: their models differ "
        f"in (classes, regions, activation, class names, label values, channels): "
        f"{outputs_of(other)} vs {outputs_of(first)}.")


def _summary_line(result: dict[str, Any], class_names: tuple[str, ...]) -> str:
  line = f"{result['name']}: wrote {', '.join(result['files'].values())}"
  if "dice" in result:
    line += "\n  Dice " + ", ".join(f"{n} {d:.4f}" for n, d in
                                   zip(class_names[1:], result["dice"][1:]))
  return line
