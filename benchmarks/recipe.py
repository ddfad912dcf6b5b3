r"""Training recipes side by side: held-out Dice per class for each recipe and step budget.

  python benchmarks/recipe.py                                  # 600 and 3000 steps, 4 recipes
  python benchmarks/recipe.py --steps=600 --recipes=plain,nnunet --json=/tmp/recipe.json

Each (recipe, budget) pair is one `python -m medjax.train --config experiments/quickstart.py`
run on the built-in brains (10 subjects, 144x192x256, subject 1 held out), with the recipe's
`--config.key=value` overrides and `--config.num_train_steps=N`; it is evaluated once, at the
end, on the held-out subject with the quickstart's sliding window. The runs are the real
command line, one process each, in `--root/runs/<recipe>-<steps>`; a run whose workdir already
holds its final evaluation is read back instead of retrained, so an interrupted benchmark
continues where it stopped (delete the folder to measure again).

Recipes (RECIPES below; the nnU-Net ones are `medjax.configs.recipes`'):
- `plain`: the quickstart's recipe before issue 14 (soft Dice over all classes, Adam 3e-3,
  constant learning rate, crops holding > 10 % foreground, no augmentation).
- `nnunet`: nnU-Net v2's recipe (`recipes.NNUNET`): Dice over the foreground + cross-entropy,
  deep supervision, SGD with Nesterov momentum 0.99 at 1e-2, weight decay 3e-5, poly
  learning-rate decay, a third of the crops centred on foreground, nnU-Net's augmentation.
- `nnunet_adam`: the same with Adam 3e-3 and no weight decay (`recipes.NNUNET_ADAM`).
- `nnunet_adam_noaug`: `nnunet_adam` without augmentation (`recipes.NNUNET_ADAM_NOAUG`; what
  augmentation costs or gives here).
Crop, batch and network (32^3, batch 2, base 8) are the quickstart's in every recipe, so each
budget costs about the same time per step whichever recipe.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Mapping

from absl import app
from absl import flags

from medjax.configs import recipes
from medjax.training import curves

_REPO = pathlib.Path(__file__).resolve().parent.parent
_QUICKSTART = _REPO / "experiments" / "quickstart.py"

# The quickstart's recipe before issue 14, spelt out so that it stays the baseline.
_PLAIN = {
    "loss.name": "dice",
    "loss.include_background": None,  # the loss's default: all classes
    "model.deep_supervision": False,
    "optimizer": "adam",
    "learning_rate": 3e-3,
    "weight_decay": 0.0,
    "lr_schedule": "constant",
    "dataset.foreground_oversampling": 0.0,
    "augmentation.enabled": False,
}

RECIPES: dict[str, Mapping[str, object]] = {
    "plain": _PLAIN,
    "nnunet": recipes.NNUNET,
    "nnunet_adam": recipes.NNUNET_ADAM,
    "nnunet_adam_noaug": recipes.NNUNET_ADAM_NOAUG,
}

_RECIPES = flags.DEFINE_list("recipes", ["plain", "nnunet", "nnunet_adam", "nnunet_adam_noaug"],
                             f"Recipes to run, of {sorted(RECIPES)}.")
_STEPS = flags.DEFINE_list("steps", ["600", "3000"], "Training budgets (steps).")
_ROOT = flags.DEFINE_string("root", "/tmp/medjax_recipe",
                            "Built-in data, its TFDS build and the runs' workdirs go here.")
_SEED = flags.DEFINE_integer("seed", 0, "config.seed of every run.")
_JSON = flags.DEFINE_string("json", None, "Also write the results here.")

_CLASSES = ("CSF", "GM", "WM")


def overrides(recipe: str, steps: int, root: pathlib.Path) -> list[str]:
  """The `--config.key=value` flags of one run."""
  run_values = {
      "num_train_steps": steps,
      "eval_every_steps": steps,  # one evaluation, at the end
      "checkpoint_every_steps": max(steps // 5, 100),
      "seed": _SEED.value,
      "dataset.data_dir": str(root / "tensorflow_datasets"),
      "dataset.manual_dir": str(root / "iseg2017-builtin"),
  }
  return recipes.as_flags(RECIPES[recipe]) + recipes.as_flags(run_values)


def final_eval(workdir: pathlib.Path, steps: int) -> dict[str, float] | None:
  """The run's evaluation at its last step, if it finished."""
  for record in curves.read_log(str(workdir / curves.METRICS_FILE)):
    if record["split"] == "val" and record["step"] == steps:
      return record
  return None


def run(recipe: str, steps: int, root: pathlib.Path) -> dict[str, object]:
  workdir = root / "runs" / f"{recipe}-{steps}"
  seconds = None
  record = final_eval(workdir, steps)
  if record is None:
    cmd = [sys.executable, "-m", "medjax.train", f"--config={_QUICKSTART}",
           f"--workdir={workdir}", *overrides(recipe, steps, root)]
    print(" ".join(cmd), flush=True)
    start = time.perf_counter()
    with open(root / f"{recipe}-{steps}.log", "w") as log:
      subprocess.run(cmd, check=True, cwd=_REPO, stdout=log, stderr=subprocess.STDOUT,
                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.perf_counter() - start
    record = final_eval(workdir, steps)
    if record is None:
      raise RuntimeError(f"{workdir}: no evaluation at step {steps} in {curves.METRICS_FILE}")
  dice = {name: record[f"dice_{name}"] for name in _CLASSES}
  return {"recipe": recipe, "steps": steps, "dice": dice, "dice_mean": record["dice_mean"],
          "seconds": seconds}


def main(argv: list[str]) -> None:
  del argv
  unknown = sorted(set(_RECIPES.value) - set(RECIPES))
  if unknown:
    raise app.UsageError(f"--recipes: unknown {unknown}; known: {sorted(RECIPES)}")
  root = pathlib.Path(_ROOT.value)
  (root / "runs").mkdir(parents=True, exist_ok=True)
  results = []
  for steps in (int(s) for s in _STEPS.value):
    for recipe in _RECIPES.value:
      results.append(run(recipe, steps, root))
      r = results[-1]
      print(f"{recipe} {steps}: " + " ".join(f"{k} {v:.4f}" for k, v in r["dice"].items())
            + f" mean {r['dice_mean']:.4f}", flush=True)

  print(f"\nHeld-out subject 1, Dice per class (base 8, 32^3 crops, batch 2, seed {_SEED.value}):")
  print(f"{'steps':>6} {'recipe':<18}" + "".join(f"{c:>8}" for c in (*_CLASSES, "mean"))
        + f"{'time':>9}")
  for r in results:
    time_s = "" if r["seconds"] is None else f"{r['seconds'] / 60:.1f} min"
    print(f"{r['steps']:>6} {r['recipe']:<18}"
          + "".join(f"{r['dice'][c]:>8.4f}" for c in _CLASSES)
          + f"{r['dice_mean']:>8.4f}{time_s:>9}")
  if _JSON.value:
    pathlib.Path(_JSON.value).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  app.run(main)
