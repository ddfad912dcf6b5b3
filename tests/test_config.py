"""The config surface: every key declared once, settable from the command line, read directly.

* Every key of every experiment accepts a command-line override (the value parses to its type).
* Every `--config.key=value` that README, docs or an error message names is a declared key.
* The code reads only declared keys, and never `config.get(key, default)`.
* Unknown keys and `--config.key=None` through `python -m medjax.train` itself.
* Every documented option (each lr_schedule, optimiser, loss, normalisation, nonfinite=skip)
  runs: a train step per training option, `Preprocessing.prepare` per normalisation.
"""

import pathlib
import re
import subprocess
import sys

from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
import pytest

from medjax import losses
from medjax import optim
from medjax import models
from medjax.configs import cli
from medjax.configs import default
from medjax.configs import recipes
from medjax.data import datasets
from medjax.data import layouts
from medjax.data import normalize
from medjax.data import preprocessing
from medjax.data import synthetic
from medjax.training import checks
from medjax.training import mesh as mesh_lib
from medjax.training import step as step_lib
import tiny

REPO = pathlib.Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted((REPO / "experiments").glob("*.py"))
# A value of each type that differs from any default, for keys whose default is None.
_SAMPLES = {int: ("3", 3), float: ("0.25", 0.25), bool: ("True", True), str: ("xyz", "xyz"),
            tuple: ("(1,2)", (1, 2))}


def _parse(config_path, overrides):
  """`--config=<path> --config.k=v ...` through a fresh flag set; returns the config."""
  flag_values = flags.FlagValues()
  argv = ["prog", f"--config={config_path}", *overrides]
  # config_flags finds the overrides in the argv it is given at definition (else sys.argv).
  # `--config.key=None` as medjax's CLI takes it (cli.parse_flags): set after the others.
  argv, none_keys = cli._split_none_overrides(argv, "config")  # pylint: disable=protected-access
  holder = config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values,
                                           lock_config=True, sys_argv=argv)
  flag_values(argv)
  for key in none_keys:
    *parents, leaf = key.split(".")
    node = holder.value
    for name in parents:
      node = node[name]
    node[leaf] = None
  return holder.value


def _field_type(config, key):
  parts = key.split(".")
  node = config
  for part in parts[:-1]:
    node = node[part]
  field = node._fields[parts[-1]]  # pylint: disable=protected-access
  if isinstance(field, ml_collections.FieldReference):
    return field.get_type()
  return type(field)


def _override(config, key):
  """A command-line value for `key` and the value it must parse to."""
  value = config[key] if "." not in key else _get(config, key)
  if value is None:
    return _SAMPLES[_field_type(config, key)]
  if isinstance(value, bool):
    return str(not value), not value
  if isinstance(value, int):
    return str(value + 1), value + 1
  if isinstance(value, float):
    return repr(value * 2 + 1), value * 2 + 1
  if isinstance(value, tuple):
    return "(" + ",".join(repr(v) for v in value) + ",)", value
  if isinstance(value, str):
    return value + "x", value + "x"
  raise AssertionError(f"{key}: a value of type {type(value).__name__} in a config")


def _get(config, key):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_key_of_every_experiment_takes_a_command_line_override(path):
  config = cli.load_config_file(str(path))
  keys = cli.flat_keys(config)
  assert set(keys) == set(cli.flat_keys(default.get_config())), (
      "an experiment must not add keys: declare them in medjax/configs/default.py")
  expected, argv = {}, []
  for key in keys:
    text, value = _override(config, key)
    argv.append(f"--config.{key}={text}")
    expected[key] = value
  parsed = _parse(path, argv)
  for key, value in expected.items():
    assert _get(parsed, key) == value, key


def test_documented_overrides_are_declared_keys():
  """`--config.key=value` in README, docs, experiments and the code's messages."""
  sources = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *EXPERIMENTS,
             *(REPO / "medjax").rglob("*.py")]
  found = {}
  for source in sources:
    for match in re.finditer(r"--config\.([a-z_][a-z_0-9.]*)=([^\s`'\"\]\\]+|'[^']*')",
                             source.read_text()):
      found.setdefault(match.group(1), (source.name, match.group(2)))
  assert len(found) >= 10
  config = default.get_config()
  for key, (source, _) in found.items():
    if key == "key":  # README's placeholder `--config.key=value`
      continue
    assert cli.missing_key(config, key) is None, f"{source}: --config.{key} is not declared"
  # README's table of keys: `| `key`, `key` | default | meaning |`.
  readme = (REPO / "README.md").read_text()
  table = readme[readme.index("| key | default"):].split("\n\n")[0].splitlines()
  table_keys = [k for line in table[2:] for k in re.findall(r"`([a-z_.]+)`", line.split("|")[1])]
  assert "lr_schedule" in table_keys
  for key in table_keys:
    assert cli.missing_key(config, key) is None, f"README's table names undeclared {key}"


_READ = re.compile(r"(?<![-\w.])config\.((?:[a-z_][a-z_0-9]*\.)*[a-z_][a-z_0-9]*)")
_METHODS = {"get", "items", "keys", "values", "to_dict", "to_json_best_effort", "update",
            "unlocked", "lock", "copy_and_resolve_references", "get_ref", "json"}


# The modules whose `config` is always the experiment config.
_EXPERIMENT_CONFIG_READERS = ("train_lib.py", "optim.py", "state.py", "outputs.py",
                              "input_pipeline.py", "predict.py", "train.py", "evaluate.py",
                              # medjax/training/
                              "checks.py", "evaluator.py", "loop.py", "step.py",
                              "tensorboard.py", "workdir.py")


def test_code_reads_only_declared_keys():
  config = default.get_config()
  for source in [*(REPO / "medjax").rglob("*.py")]:
    text = source.read_text()
    assert "config.get(" not in text, f"{source.name} reads config.get(...) with a default"
    for match in _READ.finditer(text):
      parts = match.group(1).split(".")
      if source.name not in _EXPERIMENT_CONFIG_READERS and parts[0] not in config:
        continue  # another object named config (an augmentation config, a TFDS config...)
      node = config
      for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part in _METHODS:
          break  # an attribute of a value (`config.optimizer.lower`) or a ConfigDict method
        assert part in node, f"{source.name} reads undeclared config.{'.'.join(parts[:i + 1])}"
        node = node[part]


def _run_train(*args, timeout=120):
  return subprocess.run([sys.executable, "-m", "medjax.train", *args], capture_output=True,
                        text=True, timeout=timeout, cwd=REPO)


def test_unknown_key_is_one_error_with_the_nearest_keys(tmp_path):
  result = _run_train("--config", "experiments/quickstart.py", "--config.dataset.crop_szie=(8,8,8)",
                      f"--workdir={tmp_path}/w")
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert "--config.dataset.crop_szie: the config has no key" in result.stderr
  assert "Did you mean config.dataset.crop_size" in result.stderr
  result = _run_train("--config", "experiments/quickstart.py", "--config.foo=1",
                      f"--workdir={tmp_path}/w")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "no key 'foo'" in result.stderr and "batch_size" in result.stderr
  assert not (tmp_path / "w").exists()


def test_none_overrides(tmp_path):
  """`=None` sets keys declared as optional and is refused for the others."""
  script = (
      "import sys\n"
      "from absl import flags\n"
      "from ml_collections import config_flags\n"
      "from medjax.configs import cli\n"
      "C = config_flags.DEFINE_config_file('config', None, '', lock_config=True)\n"
      "cli.parse_flags(sys.argv, prog='t')\n"
      "print(C.value.dataset.fold, C.value.model.base_features, C.value.dataset.num_classes)\n")
  ok = subprocess.run(
      [sys.executable, "-c", script, "--config=experiments/decathlon_unet3d.py",
       "--config.dataset.fold=None", "--config.model.base_features=None",
       "--config.dataset.num_classes=3"], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert ok.returncode == 0, ok.stderr
  assert ok.stdout.split() == ["None", "None", "3"]
  refused = subprocess.run(
      [sys.executable, "-c", script, "--config=experiments/decathlon_unet3d.py",
       "--config.batch_size=None"], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert refused.returncode == 2
  assert "--config.batch_size=None: this key cannot be None" in refused.stderr


# ---------------------------------------------------------------------------------------------
# Every documented option runs, set the way a user sets it: as a command-line override.

# The tiny settings with the smallest UNet that trains, as command-line overrides (an option
# under test comes later on the command line, so it wins).
_TINY_STEP = tiny.cli_overrides(**tiny.FAST_COMPILE)


def _one_step(overrides, nan=False):
  config = _parse(REPO / "experiments" / "quickstart.py", _TINY_STEP + overrides)
  checks.check_config(config)
  mesh = mesh_lib.create_mesh(jax.devices()[:1])
  model = models.create_model(config)
  init_key, rng = step_lib.init_and_train_keys(0)
  state = step_lib.init_state(config, model, init_key, mesh)
  data = np.random.default_rng(0)
  shape = (2, *config.dataset.crop_size)
  batch = {"image": data.normal(size=(*shape, 2)).astype(np.float32),
           "label": data.integers(0, 4, size=shape).astype(np.int32)}
  if nan:
    batch["image"][0, 0, 0, 0, 0] = np.nan
  state, metrics = step_lib.make_train_step(config, mesh)(state, batch, rng)
  return config, state, jax.device_get(metrics)


_TRAINING_OPTIONS = (
    [[f"--config.lr_schedule={s}", "--config.warmup_steps=2", "--config.lr_decay_steps=2"]
     for s in optim.SCHEDULES]
    + [[f"--config.optimizer={o}"] for o in optim.OPTIMIZERS]
    + [[f"--config.loss.name={name}"] for name in sorted(losses.LOSSES)]
    + [["--config.loss.name=dice", "--config.loss.jaccard=True", "--config.loss.batch=True",
        "--config.loss.class_weights=(1,2,2,2)"],
       ["--config.loss.name=cross_entropy", "--config.loss.label_smoothing=0.1",
        "--config.loss.ignore_index=0"],
       ["--config.loss.name=tversky", "--config.loss.alpha=0.3", "--config.loss.beta=0.7"],
       ["--config.loss.name=focal", "--config.loss.gamma=1.0", "--config.loss.reduction=sum"],
       ["--config.loss.name=dice_ce", "--config.loss.sigmoid=True", "--config.loss.softmax=False"],
       ["--config.weight_decay_mask=kernels", "--config.weight_decay=0.01"],
       ["--config.augmentation.enabled=True"],
       ["--config.nesterov=True", "--config.momentum=0.99", "--config.lr_schedule=poly"],
       ["--config.model.deep_supervision=True", "--config.model.num_levels=3"]])


@pytest.mark.parametrize("overrides", _TRAINING_OPTIONS, ids=lambda o: " ".join(o))
def test_each_training_option_runs_a_step(overrides):
  _, state, metrics = _one_step(overrides)
  assert metrics["finite"] == 1.0 and np.isfinite(metrics["loss"])
  assert int(state.step) == 1


def test_unreduced_loss_is_refused():
  config = _parse(REPO / "experiments" / "quickstart.py", ["--config.loss.reduction=none"])
  with pytest.raises(ValueError, match="config.loss.reduction='none'"):
    checks.check_config(config)


def test_nonfinite_skip_runs_and_stop_is_the_default():
  assert default.get_config().nonfinite == "stop"
  config, state, metrics = _one_step(["--config.nonfinite=skip"], nan=True)
  assert config.nonfinite == "skip" and metrics["finite"] == 0.0 and int(state.step) == 1


@pytest.mark.parametrize("mode", normalize.ALL_MODES + ("auto", "max_min,ct"))
def test_each_normalization_prepares_a_scan(mode):
  config = _parse(REPO / "experiments" / "quickstart.py",
                  [f"--config.dataset.normalization={mode}"])
  image, label, affine = synthetic.generate_case((12, 12, 12), num_channels=2, seed=1)
  names = datasets.DatasetNames(("T1", "T2"), ("background", "a", "b", "c"), (0, 1, 2, 3))
  cases = [layouts.Case("c1", image, label, affine, (1.0, 1.0, 1.0))]
  prep = preprocessing.fit(config.dataset, names, cases)
  out = prep.prepare(image, affine).image
  assert out.shape == image.shape and np.all(np.isfinite(out))


@pytest.mark.parametrize("name", ["NNUNET", "NNUNET_ADAM"])
def test_recipe_applied_equals_its_command_line_flags(name):
  """A recipe set in Python (experiments) and passed as flags (benchmarks/recipe.py) agree."""
  recipe = getattr(recipes, name)
  applied = recipes.apply(default.get_config(), recipe)
  parsed = _parse(REPO / "medjax" / "configs" / "default.py", recipes.as_flags(recipe))
  assert applied.to_dict() == parsed.to_dict()
  assert applied.loss.name == "dice_ce" and applied.model.deep_supervision is True
  assert applied.dataset.foreground_oversampling == 0.33
  assert applied.lr_schedule == "poly" and applied.augmentation.preset == "nnunet"


def test_recipe_with_an_undeclared_key_is_refused():
  with pytest.raises(KeyError, match="loss.nmae"):
    recipes.apply(default.get_config(), {"loss.nmae": "dice"})


@pytest.mark.parametrize("name", ["iseg2017_unet3d.py", "decathlon_unet3d.py"])
def test_experiment_takes_a_recipe_after_its_path(name):
  path = REPO / "experiments" / name
  plain = cli.load_config_file(str(path))
  nnunet = _parse(f"{path}:nnunet", ["--config.batch_size=4"])
  assert nnunet.to_dict() == recipes.apply(plain, recipes.NNUNET).to_dict() | {"batch_size": 4}
  assert nnunet.dataset.name == plain.dataset.name  # the experiment's data, the recipe's training


def test_unknown_recipe_is_one_clear_error():
  result = _run_train("--config", "experiments/iseg2017_unet3d.py:nnunx")
  assert result.returncode == 2
  assert ("--config=experiments/iseg2017_unet3d.py:nnunx: Unknown recipe 'nnunx'"
          in result.stderr), result.stderr
  assert "Traceback" not in result.stderr


def test_quickstart_with_another_loss_says_which_recipe_options_to_leave_out():
  config = _parse(REPO / "experiments" / "quickstart.py", ["--config.loss.name=cross_entropy"])
  assert config.loss.include_background is False  # the quickstart's recipe sets it
  with pytest.raises(ValueError, match=re.escape(
      "config.loss.name='cross_entropy' does not take the option(s) ['include_background'] "
      "that the experiment (or its recipe) sets")) as e:
    step_lib.loss_fn_from_config(config)
  assert str(e.value).endswith("Leave them out: --config.loss.include_background=None.")
  config = _parse(REPO / "experiments" / "quickstart.py", [
      "--config.loss.name=cross_entropy", "--config.loss.include_background=None"])
  step_lib.loss_fn_from_config(config)  # as the message says


def test_default_workdir_keeps_recipes_apart():
  from medjax import train  # pylint: disable=g-import-not-at-top
  assert train.default_workdir("experiments/quickstart.py") == "workdirs/quickstart"
  assert train.default_workdir("x/quickstart.py:nnunet") == "workdirs/quickstart-nnunet"
