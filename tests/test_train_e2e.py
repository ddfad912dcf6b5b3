"""End to end: train -> checkpoint -> resume, the CLI, and the training loop's bad-input errors."""

import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from medjax import checkpoint
from medjax import input_pipeline
from medjax import train_lib
from medjax.training import curves
import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def _params(workdir, which="latest"):
  _, variables, _ = checkpoint.restore_model(workdir, which=which)
  return jax.device_get(variables)


def test_resume_continues_exactly(iseg_config, tmp_path):
  config = tiny.shrink(iseg_config, num_train_steps=6, eval_every_steps=6)
  straight = tmp_path / "straight"
  metrics = train_lib.train_and_evaluate(config, str(straight))
  assert set(metrics) >= {"val_loss", "val_dice_CSF", "val_dice_GM", "val_dice_WM", "val_dice_mean"}
  assert 0.0 <= metrics["val_dice_mean"] <= 1.0

  resumed = tmp_path / "resumed"
  first = tiny.shrink(iseg_config, num_train_steps=4, eval_every_steps=6)
  train_lib.train_and_evaluate(first, str(resumed))
  assert checkpoint.create_manager(str(resumed), read_only=True).latest_step() == 4
  train_lib.train_and_evaluate(config, str(resumed))  # the same command, longer: resumes at 4

  a, b = _params(straight), _params(resumed)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  saved = checkpoint.load_config(str(resumed))
  assert saved.model.base_features == 2 and tuple(saved.dataset.crop_size) == (16, 16, 16)
  assert os.listdir(straight / "tensorboard")
  assert any(f.endswith(".png") for f in os.listdir(straight / "eval"))
  # metrics.jsonl: each step once across the resume, the same train curve as the straight run.
  logs = {w: curves.read_log(str(w / curves.METRICS_FILE)) for w in (straight, resumed)}
  train = {w: [r for r in log if r["split"] == "train"] for w, log in logs.items()}
  assert [r["step"] for r in train[resumed]] == list(range(1, 7))
  assert train[resumed] == train[straight]
  assert [r["step"] for r in logs[resumed] if r["split"] == "val"] == [4, 6]
  assert logs[straight][-1]["dice_mean"] == pytest.approx(metrics["val_dice_mean"])
  assert (straight / curves.CURVES_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(iseg_config, tmp_path, monkeypatch):
  create = input_pipeline.create_train_iterator

  def poisoned(config, *, start_step=0, **kwargs):
    for step, batch in enumerate(create(config, start_step=start_step, **kwargs),
                                 start=start_step + 1):
      if step == 3:
        batch = dict(batch, image=np.full_like(batch["image"], np.nan))
      yield batch

  monkeypatch.setattr(input_pipeline, "create_train_iterator", poisoned)
  config = tiny.shrink(iseg_config, checkpoint_every_steps=2)
  with pytest.raises(FloatingPointError, match="step 3.*last good checkpoint is step 2"):
    train_lib.train_and_evaluate(config, str(tmp_path / "w"))
  params = _params(tmp_path / "w")
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))

  skip = tiny.shrink(iseg_config, nonfinite="skip")
  metrics = train_lib.train_and_evaluate(skip, str(tmp_path / "skip"))
  assert np.isfinite(metrics["val_loss"])


def test_unwritable_workdir_is_reported_before_work(iseg_config, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(PermissionError, match="a_file/run is not writable"):
    train_lib.train_and_evaluate(tiny.shrink(iseg_config), str(blocker / "run"))


def test_missing_dataset_says_how_to_build_it(iseg_config, tmp_path):
  config = tiny.shrink(iseg_config)
  config.dataset.data_dir = str(tmp_path / "empty")
  config.dataset.manual_dir = ""
  with pytest.raises(FileNotFoundError, match="medjax.data.build"):
    train_lib.train_and_evaluate(config, str(tmp_path / "w"))


def test_batch_not_divisible_by_devices(iseg_config, tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda: 3)
  with pytest.raises(ValueError, match="batch_size=2 is not divisible by the 3 devices"):
    train_lib.train_and_evaluate(tiny.shrink(iseg_config), str(tmp_path / "w"))


def test_cli_trains_and_prints_dice(iseg_raw_dir, iseg_data_dir, tmp_path):
  workdir = tmp_path / "cli"
  cmd = [sys.executable, "-m", "medjax.train", "--config", "experiments/quickstart.py",
         f"--workdir={workdir}", f"--config.dataset.data_dir={iseg_data_dir}",
         f"--config.dataset.manual_dir={iseg_raw_dir}", *tiny.cli_overrides(num_train_steps=2)]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Validation Dice per tissue" in proc.stdout and "WM" in proc.stdout
  assert (workdir / "config.json").exists()

  bad = subprocess.run([*cmd[:5], f"--workdir={workdir}", "--config.no_such_key=1"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and "no_such_key" in bad.stderr
  bad_model = subprocess.run([*cmd, "--config.model.name=NO_SUCH_NET"], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
  assert bad_model.returncode == 1 and "Unknown model name 'NO_SUCH_NET'" in bad_model.stderr


def test_valid_convolution_model_trains_and_evaluates(iseg_config, tmp_path):
  """HyperDenseNet predicts only the centre of its input: labels are cropped, windows padded."""
  config = tiny.shrink(iseg_config, num_train_steps=2, eval_every_steps=2)
  config.model = ml_collections.ConfigDict(
      dict(name="HYPERDENSENET", growth=(2, 3, 2, 3), fc_features=(6, 5)))
  metrics = train_lib.train_and_evaluate(config, str(tmp_path / "w"))
  assert np.isfinite(metrics["val_loss"]) and 0.0 <= metrics["val_dice_mean"] <= 1.0


def test_cli_other_model_with_augmentation(iseg_raw_dir, iseg_data_dir, tmp_path):
  """`--config.model.name=VNET2` on the UNet experiment, with on-device augmentation."""
  cmd = [sys.executable, "-m", "medjax.train", "--config", "experiments/quickstart.py",
         f"--workdir={tmp_path / 'vnet2'}", f"--config.dataset.data_dir={iseg_data_dir}",
         f"--config.dataset.manual_dir={iseg_raw_dir}",
         *tiny.cli_overrides(num_train_steps=2, eval_every_steps=2),
         "--config.model.name=VNET2", "--config.augmentation.enabled=True"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "training VNET2" in proc.stdout and "Validation Dice per tissue" in proc.stdout
