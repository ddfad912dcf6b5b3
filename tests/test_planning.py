"""nnU-Net-style planning (`medjax.planning`): hand-checked plans, the memory estimate against
XLA's, and the plan applied to a training config."""

import functools
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from medjax import input_pipeline
from medjax import models
from medjax import planning
from medjax.configs import default
from medjax.data import datasets
from medjax.training import checks
from medjax.training import mesh as mesh_lib
from medjax.training import state as state_lib
from medjax.training import step as step_lib

from conftest import REPO

KW = dict(num_channels=2, num_classes=4)  # iSeg-2017's T1, T2 and 4 classes


def test_small_median_is_the_crop_rounded_up_to_the_pooling_multiple():
  p = planning.plan((22, 30, 37), num_cases=10, **KW)
  # 22 / 2^2 = 5.5 >= 4 voxels at the bottom, 22 / 2^3 < 4: 2 poolings, multiples of 4.
  assert p.num_levels == 3
  assert p.crop_size == (24, 32, 40)
  assert p.batch_size == 2  # the 5% cap is 0.05 * 10 * (22*30*37) / (24*32*40) < 1; at least 2
  assert p.estimated_memory_mb <= 8000
  assert p.as_overrides() == {"dataset.crop_size": (24, 32, 40), "eval.roi_size": (24, 32, 40),
                              "model.num_levels": 3, "batch_size": 2}
  assert p.command_line() == ("--config.dataset.crop_size=(24,32,40) "
                              "--config.eval.roi_size=(24,32,40) --config.model.num_levels=3 "
                              "--config.batch_size=2")


def test_initial_crop_follows_the_spacing():
  p = planning.plan((200, 400, 400), spacing=(2.0, 1.0, 1.0), memory_budget_mb=1e6,
                    num_cases=10, **KW)
  # 256^3 voxels at the aspect 1/spacing: (161, 322, 322), 4 poolings -> multiples of 16.
  assert (p.crop_size, p.num_levels) == ((176, 336, 336), 5)


def test_small_budget_shrinks_the_axis_largest_relative_to_the_median_first():
  kw = dict(num_cases=10, **KW)
  # Initial crop (128, 256, 256) of a (128, 512, 512) median: axis 0 is at 100% of the median,
  # the others at 50%, so axis 0 shrinks (by 16 at 5 levels) until the step fits at batch 2.
  budget = planning.estimate_memory_mb((64, 256, 256), 2, base_features=32, num_levels=5,
                                       optimizer_slots=1, **KW) + 1
  p = planning.plan((128, 512, 512), memory_budget_mb=budget, **kw)
  assert (p.crop_size, p.num_levels, p.batch_size) == ((64, 256, 256), 5, 2)
  # A cube shrinks evenly: the axes stay within one pooling multiple of each other.
  p = planning.plan((512, 512, 512), memory_budget_mb=2000, **kw)
  assert max(p.crop_size) - min(p.crop_size) <= 2**(p.num_levels - 1)
  assert p.estimated_memory_mb <= 2000


def test_anisotropic_median_limits_the_levels_by_the_short_axis():
  p = planning.plan((20, 256, 256), num_cases=10, **KW)
  # 20 / 2^2 = 5 >= 4, 20 / 2^3 < 4: UNET3D pools all axes together, so 3 levels.
  assert p.num_levels == 3
  assert all(s % 4 == 0 for s in p.crop_size)
  assert p.crop_size[0] <= 20 and p.crop_size[0] // 4 >= 4
  assert p.estimated_memory_mb <= 8000


def test_batch_at_least_two_capped_at_five_percent_and_by_the_budget():
  kw = dict(base_features=2, **KW)
  assert planning.plan((64, 64, 64), num_cases=10, **kw).batch_size == 2
  # crop = median: 5% of 1000 cases is 50 crops.
  assert planning.plan((64, 64, 64), num_cases=1000, **kw).batch_size == 50
  # Enough cases: the budget decides, the largest batch that fits.
  p = planning.plan((64, 64, 64), num_cases=100_000, **kw)
  estimate = functools.partial(planning.estimate_memory_mb, p.crop_size, base_features=2,
                               num_levels=p.num_levels, **KW)
  assert estimate(p.batch_size) <= 8000 < estimate(p.batch_size + 1)
  # Four devices: a multiple of 4, the budget per device.
  p4 = planning.plan((64, 64, 64), num_cases=100_000, num_devices=4, **kw)
  assert p4.batch_size == 4 * p.batch_size


def test_kept_choices_and_bad_budgets():
  p = planning.plan((22, 30, 37), num_cases=10, crop_size=(16, 16, 16), num_levels=2,
                    batch_size=3, **KW)
  assert (p.crop_size, p.num_levels, p.batch_size) == ((16, 16, 16), 2, 3)
  assert p.as_overrides() == {}
  with pytest.raises(ValueError, match="memory_budget_mb=0.001 does not fit"):
    planning.plan((22, 30, 37), num_cases=10, memory_budget_mb=0.001, **KW)
  with pytest.raises(ValueError, match="median_shape"):
    planning.plan((22, 30), num_cases=10, **KW)


def test_parameter_count_is_the_models():
  # The paper network: models/unet3d.py's docstring.
  assert planning.num_parameters(base_features=32, num_levels=4, **KW) == 19_074_724


def test_memory_estimate_matches_xla_memory_analysis():
  config = default.get_config()
  config.dataset.num_modalities, config.dataset.num_classes = 2, 4
  config.dataset.crop_size = (16, 16, 16)
  config.model.base_features, config.model.num_levels = 2, 2
  config.model.conv_method = "xla"
  config.batch_size = 1
  model = models.create_model(config)
  state = jax.eval_shape(functools.partial(state_lib.create_train_state, config, model),
                         jax.random.key(0))
  batch = {"image": jax.ShapeDtypeStruct((1, 16, 16, 16, 2), jnp.float32),
           "label": jax.ShapeDtypeStruct((1, 16, 16, 16), jnp.int32)}
  step = step_lib.make_train_step(config, mesh_lib.create_mesh(jax.devices()[:1]))
  analysis = step.lower(state, batch, jax.random.key(0)).compile().memory_analysis()
  measured = (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes) / 1e6
  estimate = planning.estimate_memory_mb((16, 16, 16), 1, base_features=2, num_levels=2,
                                         optimizer_slots=planning.OPTIMIZER_SLOTS["sgd"], **KW)
  assert measured / 1.5 < estimate < measured * 1.5, (estimate, measured)  # 1.08 MB vs 1.08 MB


def test_plan_of_a_training_config_sets_the_planned_keys(iseg_config, tmp_path):
  config = iseg_config
  assert planning.plan_run(config, None, None, tmp_path) == (config, None)  # off by default
  config.plan.enabled = True
  builder = input_pipeline.ensure_dataset(config)
  config = input_pipeline.resolve_dataset_config(config, datasets.names(builder))
  preprocessing = input_pipeline.fit_preprocessing(config, builder)
  planned, p = planning.plan_run(config, builder, preprocessing, tmp_path)
  # The tiny cases are 24x28x32 (orientation and spacing kept): 2 poolings, multiples of 4.
  assert p.median_shape == (24, 28, 32) and p.num_cases == 2
  assert planned.dataset.crop_size == planned.eval.roi_size == (24, 28, 32)
  assert (planned.model.num_levels, planned.batch_size) == (3, 2)
  assert config.dataset.crop_size == (16, 16, 16)  # the input config is left alone
  # choose_batch off keeps batch_size; a non-UNET3D model is refused.
  kept = config.copy_and_resolve_references()
  kept.plan.choose_batch, kept.batch_size = False, 4
  q = planning.plan_from_config(kept, median_shape=(24, 28, 32), num_cases=2)
  assert planning.apply_plan(kept, q).batch_size == 4
  assert planning.apply_plan(kept, q).dataset.crop_size == (24, 28, 32)
  kept.model.name = "VNET"
  with pytest.raises(ValueError, match="plans UNET3D"):
    planning.plan_from_config(kept, median_shape=(24, 28, 32), num_cases=2)
  # plan.json: a resumed run reads it back; changed settings are refused.
  planning.save(tmp_path, p, planned)
  assert json.loads((tmp_path / "plan.json").read_text())["overrides"]["batch_size"] == 2
  again, p2 = planning.plan_run(config, None, None, tmp_path)
  assert p2 == p and again.dataset.crop_size == (24, 28, 32)
  config.plan.memory_budget_mb = 100.0
  with pytest.raises(ValueError, match="plan.json was planned with"):
    planning.plan_run(config, None, None, tmp_path)


def test_command_line_prints_the_plan(iseg_config):
  config = iseg_config
  args = [f"--config.dataset.data_dir={config.dataset.data_dir}",
          f"--config.dataset.manual_dir={config.dataset.manual_dir}"]
  result = subprocess.run([sys.executable, "-m", "medjax.plan", "--config",
                           "experiments/iseg2017_unet3d.py", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
  assert result.returncode == 0, result.stderr
  assert "median shape 24x28x32 voxels" in result.stdout
  assert ("--config.dataset.crop_size=(24,28,32) --config.eval.roi_size=(24,28,32) "
          "--config.model.num_levels=3 --config.batch_size=2") in result.stdout


def test_config_checks_refuse_bad_plan_settings():
  config = default.get_config()
  config.plan.enabled = True
  config.plan.memory_budget_mb = 0.0
  with pytest.raises(ValueError, match="config.plan.memory_budget_mb=0.0"):
    checks.check_plan_settings(config)
  config.plan.memory_budget_mb, config.model.name = 8000.0, "VNET"
  with pytest.raises(ValueError, match="plans UNET3D"):
    checks.check_plan_settings(config)
