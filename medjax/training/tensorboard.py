"""The run's TensorBoard event file: opening it for a fresh or resumed run, and the hparams."""

import os
from typing import Any

import ml_collections


def open_writer(workdir: str, config: ml_collections.ConfigDict, start_step: int) -> Any:
  """A `tensorboardX.SummaryWriter` on `<workdir>/tensorboard` for a run starting at `start_step`.

  After a resume, TensorBoard hides what a killed run logged past the checkpoint (purge_step),
  so the curves show each step once. A fresh run records its config as the text `config`.
  """
  import tensorboardX  # pylint: disable=g-import-not-at-top
  writer = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"),
                                      purge_step=start_step + 1 if start_step else None)
  if start_step == 0:
    writer.add_text("config", "```\n" + config.to_json_best_effort(indent=2) + "\n```", 0)
  return writer


def write_hparams(writer: Any, config: ml_collections.ConfigDict, metrics: dict[str, float],
                  step: int) -> None:
  """The flattened config as hparams, with the final validation metrics as `hparam/<name>`."""
  writer.add_hparams(flat_hparams(config), {f"hparam/{k}": v for k, v in metrics.items()},
                     name="hparams", global_step=step)


def flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`config` as `{'dotted.key': value}`; values other than int, float, str, bool as `str`."""
  flat = {}

  def walk(prefix, node):
    for k, v in node.items():
      key = f"{prefix}{k}"
      if isinstance(v, (dict, ml_collections.ConfigDict)):
        walk(key + ".", v)
      elif isinstance(v, (int, float, str, bool)):
        flat[key] = v
      else:
        flat[key] = str(v)
  walk("", config.to_dict())
  return flat
