r"""Prints the nnU-Net-style plan of an experiment's crop and batch size, without training.

  python -m medjax.plan --config experiments/X.py [--config.key=value]

Reads the training cases (building the dataset first if the config says how, as medjax.train
does), fits the preprocessing, and prints `medjax.planning.plan_dataset`'s crop, batch size and
UNET3D levels for `config.plan` (its budget and choices; `config.plan.enabled` need not be set),
with the `--config.` overrides that train with them. `--config.plan.enabled=True` makes
medjax.train plan the same at its start.
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from medjax import cli_errors
from medjax import input_pipeline
from medjax import planning
from medjax.configs import cli
from medjax.data import datasets

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to an experiment config file (experiments/*.py).", lock_config=True)


def format_plan(p: planning.Plan, dataset: str) -> str:
  """The report `main` prints: the plan, where it came from, and its overrides."""
  shape = lambda s: "x".join(str(v) for v in s)
  kept = lambda planned: "planned" if planned else "kept (config.plan says so)"
  lines = [
      f"medjax.plan: {dataset}, {p.num_cases} training cases, median shape "
      f"{shape(p.median_shape)} voxels after the preprocessing (spacing "
      f"{', '.join(f'{s:g}' for s in p.spacing or (1, 1, 1))} mm)",
      f"  crop_size / roi_size  {shape(p.crop_size)}  {kept(p.plans_crop)}",
      f"  num_levels            {p.num_levels}  {kept(p.plans_crop)}",
      f"  batch_size            {p.batch_size}  {kept(p.plans_batch)}",
      f"  memory per step       ~{p.estimated_memory_mb:,.0f} MB per device (budget "
      f"{p.memory_budget_mb:,.0f} MB)",
  ]
  overrides = p.command_line()
  lines.append("Train with these overrides:\n  " + overrides if overrides else
               "config.plan chooses nothing (choose_crop and choose_batch are off).")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  cli_errors.no_positional_arguments(argv)
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # the plan only; `-v 0` brings back INFO logs
  config = _CONFIG.value
  with cli_errors.exit_on_error("medjax.plan", (ValueError, OSError)):
    builder = input_pipeline.ensure_dataset(config)
    config = input_pipeline.resolve_dataset_config(config, datasets.names(builder))
    preprocessing = input_pipeline.fit_preprocessing(config, builder)
    p = planning.plan_dataset(config, builder, preprocessing, num_devices=jax.device_count())
  print(format_plan(p, f"{builder.name}/{builder.builder_config.name}"), flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, prog="medjax.plan"))
