"""Reliability (issue #7): crash-safe resume, determinism, non-finite stops and bad input.

The crash tests run the real CLI (`python -m medjax.train`'s `main`) in subprocesses through a
fault-injecting driver, this file run as a script:

  python tests/test_reliability.py --fault=KIND:STEP[:PATH] <medjax.train flags>

KIND is one of
  kill_in_step              SIGKILL right after step STEP is dispatched (it is still running)
  kill_in_eval              SIGKILL in the middle of the evaluation at step STEP
  kill_in_checkpoint_write  SIGKILL when checkpoint STEP is fully written to its temporary
                            folder but not yet renamed into place (orbax's commit point)
  wait_for_signal           after dispatching step STEP, touch PATH and wait until the run's
                            SIGTERM/SIGINT handler has seen a signal (the test sends a real one)
  nan_at                    the batch of step STEP is all NaN
  enospc_at                 writing checkpoint STEP fails with OSError(ENOSPC) (disk full)
so each fault lands at a known point, deterministically. One chain of reruns in one workdir
goes through all of them and must end with the parameters of an uninterrupted run, bitwise.

Every process compiles the same tiny model (tests/tiny.py): the uninterrupted reference run
fills a JAX persistent compilation cache that the fault runs then read, which makes each of
them take ~10 s instead of ~30 s. The determinism twin compiles on its own, without the cache.

The bad-input matrix of issue #7: each row and the tests that cover it. "here" is this file;
"builder" is test_bad_input_clear_error_and_nothing_left in
datasets_tfds/iseg2017/iseg2017_dataset_builder_test.py, which also checks that nothing is left
in data_dir.

  row                           test(s)
  ----------------------------  -------------------------------------------------------------
  missing modality file         test_iseg.py::test_find_subjects_errors; builder[missing_img]
  T1/T2 shape mismatch          test_iseg.py::test_load_subject_rejects; builder[shape];
                                test_predict_evaluate.py::test_load_case_checks_geometry
  T1/label shape mismatch       here: test_label_shape_mismatch_names_file_and_builds_nothing
  affine mismatch               test_iseg.py::test_load_subject_rejects; builder[affine];
                                test_predict_evaluate.py::test_load_case_checks_geometry
  unexpected label values       test_iseg.py::test_label_mapping, ::test_load_subject_rejects;
                                builder[label_values]
  NaN voxels                    test_iseg.py::test_load_subject_rejects_non_finite;
                                builder[non_finite]
  not a medical image file      test_io.py::test_not_an_image; builder[unreadable];
                                test_iseg.py::test_load_subject_unreadable;
                                test_predict_evaluate.py::test_load_case_checks_geometry
  empty / missing manual dir    test_iseg.py::test_find_subjects_errors; builder[empty_dir],
                                builder[wrong_dir]
  dataset not built             test_train_e2e.py::test_missing_dataset_says_how_to_build_it;
                                test_input_pipeline.py::test_ensure_dataset_builtin_and_missing
  unknown model/loss/optimizer  here: test_unknown_names_fail_before_anything_is_written;
                                test_optim.py::test_unknown_names_raise;
                                test_losses.py::test_get_loss_and_errors;
                                test_train_e2e.py::test_cli_trains_and_prints_dice (CLI)
  crop larger than the volume   here: test_crop_larger_than_volume_writes_nothing;
                                test_input_pipeline.py::test_clear_errors;
                                test_sampling.py::test_sampler_errors
  crop/ROI not divisible by the here: test_crop_not_divisible_fails_at_config_check
    down-sampling factor
  wrong input channels or       test_predict_evaluate.py::test_train_then_predict_in_fresh_processes
    architecture for a          (predict given 1 of 2 modalities); here:
    checkpoint                  test_changed_model_cannot_resume_and_changes_nothing
  corrupt or missing checkpoint here: test_corrupt_and_missing_checkpoints
  unwritable workdir            test_train_e2e.py::test_unwritable_workdir_is_reported_before_work
  full disk while checkpointing here: test_kill_anywhere_then_rerun_continues_exactly (enospc_at)
  batch not divisible by        test_train_e2e.py::test_batch_not_divisible_by_devices;
    devices / hosts             test_input_pipeline.py::test_hosts_get_disjoint_parts_of_the_...
  NaN/Inf loss or gradient      test_train_e2e.py::test_nonfinite_loss_stops_and_keeps_last_...
                                (library, stop and skip); test_train_lib.py::
                                test_nonfinite_step_keeps_parameters; here: the CLI's exit code
                                and message (test_kill_anywhere_..., nan_at)
"""

import errno
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from medjax import checkpoint
from medjax import checkpoint_integrity
from medjax import inference
from medjax import input_pipeline
from medjax import io
from medjax import train_lib
from medjax.training import evaluator
from medjax.training import preemption
from medjax.training import step as step_lib
from medjax.data import build
from medjax.data import iseg
from tensorboardX.proto import event_pb2
import tiny

REPO = pathlib.Path(__file__).resolve().parent.parent
NUM_STEPS = 8  # tiny.TINY_OVERRIDES: checkpoint every 2 steps, evaluate every 4
SUBPROCESS_TIMEOUT = 600


# ---------------------------------------------------------------------------------------------
# The fault-injecting driver (runs in the child process).


def _install_fault(kind: str, at: int, path: str | None) -> None:
  """Patches medjax/orbax in this process so that fault `kind` happens at step `at`."""
  from orbax.checkpoint._src.path import async_path  # pylint: disable=g-import-not-at-top
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top

  now = {"step": None}  # the step most recently dispatched

  def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

  real_make_train_step = step_lib.make_train_step

  def make_train_step(config, mesh):
    step_fn = real_make_train_step(config, mesh)

    def traced_step(state, batch, rng):
      if now["step"] is None:
        now["step"] = int(state.step)  # the restored (or initial) step
      out = step_fn(state, batch, rng)  # dispatched asynchronously: still running below
      now["step"] += 1
      if now["step"] == at and kind == "kill_in_step":
        die()
      if now["step"] == at and kind == "wait_for_signal":
        handler = signal.getsignal(signal.SIGTERM)
        stop = getattr(handler, "__self__", None)  # preemption.StopRequest
        pathlib.Path(path).touch()
        deadline = time.monotonic() + 300
        while stop is not None and stop.signum is None and time.monotonic() < deadline:
          time.sleep(0.02)
      return out
    return traced_step

  step_lib.make_train_step = make_train_step

  if kind == "kill_in_eval":
    real_evaluate = evaluator.evaluate
    real_gather = inference._gather  # pylint: disable=protected-access
    windows = {"batches": None}  # counts window batches during the target evaluation

    def evaluate(*args, **kwargs):
      windows["batches"] = 0 if now["step"] == at else None
      return real_evaluate(*args, **kwargs)

    def gather(*args, **kwargs):  # called once per batch of sliding windows
      if windows["batches"] is not None:
        windows["batches"] += 1
        if windows["batches"] == 3:  # some windows are done, others are not
          die()
      return real_gather(*args, **kwargs)

    evaluator.evaluate = evaluate
    inference._gather = gather  # pylint: disable=protected-access

  if kind == "kill_in_checkpoint_write":
    real_finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *args, **kwargs):
      if self.get_final().name == str(at):  # the step folder, after all its items are written
        die()
      return await real_finalize(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize

  if kind == "enospc_at":
    real_write_text = async_path.write_text

    async def write_text(target, *args, **kwargs):
      if f"/{at}.orbax-checkpoint-tmp" in str(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
      return await real_write_text(target, *args, **kwargs)

    async_path.write_text = write_text

  if kind == "nan_at":
    real_iterator = input_pipeline.create_train_iterator

    def create_train_iterator(config, *, start_step=0, **kwargs):
      for step, batch in enumerate(real_iterator(config, start_step=start_step, **kwargs),
                                   start=start_step + 1):
        if step == at:
          batch = dict(batch, image=np.full_like(batch["image"], np.nan))
        yield batch

    input_pipeline.create_train_iterator = create_train_iterator


def _driver_main(argv: list[str]) -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from medjax import train  # pylint: disable=g-import-not-at-top
  from medjax.configs import cli  # pylint: disable=g-import-not-at-top

  spec = argv[1].removeprefix("--fault=")
  kind, at, *path = spec.split(":", 2)
  _install_fault(kind, int(at), path[0] if path else None)
  sys.argv = ["medjax.train", *argv[2:]]
  flags.mark_flags_as_required(["config"])
  app.run(train.main, flags_parser=lambda a: cli.parse_flags(a, prog="medjax.train"))  # as its CLI


# ---------------------------------------------------------------------------------------------
# Helpers on the test side.


def _train_cmd(workdir, data_dir, raw_dir, fault: str | None = None, **overrides) -> list[str]:
  prefix = ([sys.executable, str(pathlib.Path(__file__)), f"--fault={fault}"] if fault
            else [sys.executable, "-m", "medjax.train"])
  return [*prefix, "--config=experiments/quickstart.py", f"--workdir={workdir}",
          f"--config.dataset.data_dir={data_dir}", f"--config.dataset.manual_dir={raw_dir}",
          *tiny.cli_overrides(num_train_steps=NUM_STEPS, **overrides)]


def _env(cache_dir) -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  for key in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"):
    env.pop(key, None)
  if cache_dir is not None:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def _run(cmd, cache_dir) -> subprocess.CompletedProcess:
  return subprocess.run(cmd, cwd=REPO, env=_env(cache_dir), capture_output=True, text=True,
                        timeout=SUBPROCESS_TIMEOUT)


def _tail(proc) -> str:
  return f"rc={proc.returncode}\nstdout: {proc.stdout[-1500:]}\nstderr: {proc.stderr[-3000:]}"


def _complete_steps(workdir) -> list[int]:
  return checkpoint.complete_steps(pathlib.Path(workdir) / checkpoint.CHECKPOINT_DIRNAME)


def _partial_steps(workdir) -> list[str]:
  return sorted(p.name for p in (pathlib.Path(workdir) / "checkpoints").glob("*.orbax-*"))


def _variables(workdir, which="latest"):
  _, variables, _ = checkpoint.restore_model(str(workdir), which=which)
  return jax.device_get(variables)


def _assert_trees_equal(a, b) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)  # a readable message first, then bit for bit
    assert x.dtype == y.dtype and np.asarray(x).tobytes() == np.asarray(y).tobytes()


def _read_records(path: pathlib.Path):
  """The payloads of a TFRecord file (TensorBoard event files are TFRecords)."""
  data = path.read_bytes()
  pos = 0
  while pos < len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    yield data[pos + 12:pos + 12 + length]
    pos += 12 + length + 4


def _scalars(workdir, *, purge: bool = True) -> dict[str, list[tuple[int, float]]]:
  """Every scalar logged to `<workdir>/tensorboard`, as TensorBoard shows it: tag -> [(step,
  value)] over all its event files in order, where a resumed run's purge event (SessionLog
  START at step T) hides what earlier runs logged at steps >= T (unless `purge=False`)."""
  out: dict[str, list[tuple[int, float]]] = {}
  files = (pathlib.Path(workdir) / "tensorboard").glob("events.out.tfevents.*")
  for path in sorted(files, key=lambda p: int(p.name.split(".")[3])):  # by creation time
    for record in _read_records(path):
      event = event_pb2.Event.FromString(record)
      if purge and event.session_log.status == event_pb2.SessionLog.START:
        out = {tag: [(s, v) for s, v in values if s < event.step] for tag, values in out.items()}
      for value in event.summary.value:
        if value.HasField("simple_value"):
          out.setdefault(value.tag, []).append((event.step, value.simple_value))
  out.pop("train/steps_per_second", None)  # wall-clock timing, the one thing that may differ
  return out


@pytest.fixture(scope="module")
def reference(iseg_raw_dir, iseg_data_dir, tmp_path_factory):
  """One uninterrupted CLI run of NUM_STEPS tiny steps; fills the compilation cache."""
  root = tmp_path_factory.mktemp("reliability")
  cache = root / "jax_cache"
  workdir = root / "reference"
  proc = _run(_train_cmd(workdir, iseg_data_dir, iseg_raw_dir), cache)
  assert proc.returncode == 0, _tail(proc)
  assert _complete_steps(workdir)[-1] == NUM_STEPS
  return {"workdir": workdir, "cache": cache, "root": root, "data_dir": iseg_data_dir,
          "raw_dir": iseg_raw_dir}


# ---------------------------------------------------------------------------------------------
# 1. Crash-safe resume, 3. non-finite stop on the CLI, 4. disk full while checkpointing.


@pytest.mark.slow
def test_kill_anywhere_then_rerun_continues_exactly(reference, iseg_raw_dir, iseg_data_dir):
  """One workdir, rerun after each fault; the end state equals the uninterrupted run's."""
  workdir = reference["root"] / "chain"
  cache = reference["cache"]

  def cmd(fault=None):  # `--verbosity=0`: INFO logs, for the "Resumed from" line
    return [*_train_cmd(workdir, iseg_data_dir, iseg_raw_dir, fault), "--verbosity=0"]

  def resumed_from(proc) -> int | None:
    marker = "Resumed from "
    line = next((l for l in proc.stderr.splitlines() if marker in l), None)
    return None if line is None else int(line.rsplit(" ", 1)[-1].rstrip("."))

  # a) Disk full while writing checkpoint 4: orbax reports the failed asynchronous write at
  #    the next save (step 6); the run fails with a clear message and checkpoint 2 is intact.
  proc = _run(cmd("enospc_at:4"), cache)
  assert proc.returncode == 1, _tail(proc)
  assert "Writing a checkpoint in" in proc.stderr and "No space left on device" in proc.stderr
  assert "checkpoints on disk (steps [2]) are intact" in proc.stderr, _tail(proc)
  assert _complete_steps(workdir) == [2]
  assert _partial_steps(workdir) == ["4.orbax-checkpoint-tmp"]
  step2 = _variables(workdir)  # the previous checkpoint is restorable
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(step2))

  # b) SIGKILL while checkpoint 4 is written but not yet committed (renamed into place).
  proc = _run(cmd("kill_in_checkpoint_write:4"), cache)
  assert proc.returncode == -signal.SIGKILL, _tail(proc)
  assert resumed_from(proc) == 2, _tail(proc)  # the earlier partial 4 was not picked
  assert _complete_steps(workdir) == [2]
  assert _partial_steps(workdir) == ["4.orbax-checkpoint-tmp"]

  # c) SIGTERM (as a scheduler's preemption sends it) during step 5: checkpoint 5 is saved.
  ready = reference["root"] / "chain_at_step_5"
  child = subprocess.Popen(cmd(f"wait_for_signal:5:{ready}"), cwd=REPO, env=_env(cache),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + SUBPROCESS_TIMEOUT
  while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  child.send_signal(signal.SIGTERM)
  out, err = child.communicate(timeout=SUBPROCESS_TIMEOUT)
  proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
  assert proc.returncode == 130, _tail(proc)
  assert resumed_from(proc) == 2, _tail(proc)  # again not the partial 4
  assert "Training stopped by signal 15 at step 5." in proc.stderr, _tail(proc)
  assert "Stopped by signal 15 at step 5; checkpoint saved" in proc.stdout, _tail(proc)
  assert _complete_steps(workdir)[-2:] == [4, 5] and not _partial_steps(workdir)

  # d) SIGKILL while step 7 runs (the asynchronous write of checkpoint 6 may or may not have
  #    finished): the rerun resumes from whichever is the last complete one.
  proc = _run(cmd("kill_in_step:7"), cache)
  assert proc.returncode == -signal.SIGKILL, _tail(proc)
  assert resumed_from(proc) == 5, _tail(proc)
  last = _complete_steps(workdir)[-1]
  assert last in (5, 6)

  # e) A NaN batch at step 8 on the CLI: exit code 1, the step and the last good checkpoint.
  proc = _run(cmd("nan_at:8"), cache)
  assert proc.returncode == 1, _tail(proc)
  assert resumed_from(proc) == last, _tail(proc)
  assert ("medjax.train: error: Non-finite loss, gradient or updated parameters at step 8" in proc.stderr
          and "the last good checkpoint is step 6" in proc.stderr), _tail(proc)
  assert _complete_steps(workdir)[-1] == 6

  # f) SIGKILL in the middle of the evaluation at step 8 (before checkpoint 8 is written).
  proc = _run(cmd("kill_in_eval:8"), cache)
  assert proc.returncode == -signal.SIGKILL, _tail(proc)
  assert resumed_from(proc) == 6, _tail(proc)
  assert _complete_steps(workdir)[-1] == 6

  # g) The same command, no fault: it finishes, and everything equals the uninterrupted run.
  proc = _run(cmd(), cache)
  assert proc.returncode == 0, _tail(proc)
  assert resumed_from(proc) == 6, _tail(proc)
  assert _complete_steps(workdir)[-1] == NUM_STEPS and not _partial_steps(workdir)
  _assert_trees_equal(_variables(workdir), _variables(reference["workdir"]))
  # The TensorBoard curves, pieced together from seven processes, equal the reference's: each
  # step once (resumed runs purge what killed ones logged past their checkpoint), same values.
  curves, expected = _scalars(workdir), _scalars(reference["workdir"])
  assert [s for s, _ in expected["train/loss"]] == list(range(1, NUM_STEPS + 1))
  assert curves == expected
  assert len(_scalars(workdir, purge=False)["train/loss"]) > NUM_STEPS  # steps were redone


# ---------------------------------------------------------------------------------------------
# 2. Determinism across processes.


@pytest.mark.slow
def test_two_processes_give_bitwise_identical_runs(reference, iseg_raw_dir, iseg_data_dir):
  """A second process compiling on its own: same loss curve, metrics and parameters."""
  twin = reference["root"] / "twin"
  proc = _run(_train_cmd(twin, iseg_data_dir, iseg_raw_dir), cache_dir=None)
  assert proc.returncode == 0, _tail(proc)
  a, b = _scalars(reference["workdir"]), _scalars(twin)
  assert set(a) == set(b) and len(a["train/loss"]) == NUM_STEPS
  for tag in sorted(a):
    assert a[tag] == b[tag], tag  # exact float equality, step by step
  assert len({v for _, v in a["train/loss"]}) > 1  # the curve moves: not a constant
  _assert_trees_equal(_variables(reference["workdir"]), _variables(twin))


# ---------------------------------------------------------------------------------------------
# SIGINT (Ctrl-C) takes the same path as SIGTERM; checked here without a training run.


def test_ctrl_c_sets_the_stop_flag_and_a_second_one_interrupts():
  before = signal.getsignal(signal.SIGINT)
  with preemption.StopRequest() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)  # the handler runs at the next bytecode boundary
    assert stop.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.01)
  assert signal.getsignal(signal.SIGINT) is before


# ---------------------------------------------------------------------------------------------
# 4. The bad-input rows this file owns (see the table above for the others).


def _no_files(path: pathlib.Path) -> list[pathlib.Path]:
  return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


@pytest.mark.parametrize("crop, key", [((16, 16, 12), "dataset.crop_size"),
                                       ((20, 16, 16), "eval.roi_size")])
def test_crop_not_divisible_fails_at_config_check(iseg_config, tmp_path, crop, key):
  config = tiny.shrink(iseg_config, **{key.replace(".", "__"): crop})
  workdir = tmp_path / "w"
  with pytest.raises(ValueError) as e:
    train_lib.train_and_evaluate(config, str(workdir))
  message = str(e.value)
  assert f"config.{key}={crop}" in message and "divisible by 8" in message, message
  assert not workdir.exists()  # failed before the workdir was created


@pytest.mark.parametrize("override, expected", [
    ({"model__name": "UNET9D"}, "Unknown model name 'UNET9D'; expected one of"),
    ({"loss__name": "hinge"}, "Unknown loss name 'hinge'; expected one of"),
    ({"optimizer": "lbfgs"}, "Unknown config.optimizer 'lbfgs'; expected one of"),
    ({"model__base_filters": 8},
     "config.model has keys ['base_filters'] that model 'UNET3D' does not take; it takes"),
])
def test_unknown_names_fail_before_anything_is_written(iseg_config, tmp_path, override,
                                                      expected):
  workdir = tmp_path / "w"
  with pytest.raises(ValueError) as e:
    train_lib.train_and_evaluate(tiny.shrink(iseg_config, **override), str(workdir))
  assert expected in str(e.value), str(e.value)
  assert not workdir.exists()


@pytest.mark.slow
def test_unsatisfiable_crop_rule_writes_nothing(iseg_config, tmp_path):
  """The config passes its checks, but no crop of the subjects passes the threshold rule: the
  error comes with the first batch, before anything is written."""
  workdir = tmp_path / "w"
  with pytest.raises(ValueError, match=r"case subject-\d: no crop of size \(16, 16, 16\)"):
    train_lib.train_and_evaluate(tiny.shrink(iseg_config, dataset__threshold=0.99),
                                 str(workdir))
  assert _no_files(workdir) == []  # no config.json, no checkpoint, no event file


def test_label_shape_mismatch_names_file_and_builds_nothing(iseg_raw_dir, tmp_path):
  raw = tmp_path / "raw"
  shutil.copytree(iseg_raw_dir, raw)
  path = raw / iseg.TRAINING_FOLDER / "subject-2-label.hdr"
  label = io.load_image(path)
  io.save_image(path, label.data[:, :-1, :, None], label.affine)
  data_dir = tmp_path / "tfds"
  with pytest.raises(ValueError) as e:
    build.build_iseg2017(manual_dir=raw, data_dir=data_dir, config_name="full")
  message = str(e.value)
  assert "subject-2-label.hdr" in message and "(24, 27, 32)" in message, message
  assert "does not match" in message and "(24, 28, 32)" in message, message
  assert _no_files(data_dir) == []


@pytest.mark.slow
def test_changed_model_cannot_resume_and_changes_nothing(reference, tmp_path):
  """Rerunning a workdir with another architecture: a clear error; config and checkpoints kept."""
  workdir = tmp_path / "w"
  shutil.copytree(reference["workdir"], workdir)
  saved = (workdir / "config.json").read_bytes()
  config = checkpoint.load_config(str(workdir))
  config.model.base_features = 4
  with pytest.raises(ValueError) as e:
    train_lib.train_and_evaluate(config, str(workdir))
  message = str(e.value)
  assert f"Could not restore checkpoint {workdir}/checkpoints/{NUM_STEPS}" in message, message
  assert "same model and optimiser config" in message
  assert (workdir / "config.json").read_bytes() == saved  # still describes the checkpoints
  assert _complete_steps(workdir) == _complete_steps(reference["workdir"])
  _assert_trees_equal(_variables(workdir), _variables(reference["workdir"]))


@pytest.mark.slow
def test_corrupt_and_missing_checkpoints(reference, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(reference["workdir"], workdir)
  steps = _complete_steps(workdir)
  latest = workdir / "checkpoints" / str(steps[-1])
  for data in (latest / "state").rglob("d/*"):  # truncate every array chunk file
    data.write_bytes(data.read_bytes()[:16])
  # Its checksums (written once orbax committed it) tell the damage from a changed config.
  with pytest.raises(ValueError) as e:
    _variables(workdir)
  message = str(e.value)
  assert f"Checkpoint {latest} is damaged: state/" in message, message
  assert "has 16 bytes" in message and f"Other complete checkpoints: steps {steps[:-1]};" in message
  assert "predict --which STEP" in message and "sets the damaged checkpoint aside" in message
  # Without them (a checkpoint of an older medjax): the restore is tried, and its error says
  # what to do.
  (latest / checkpoint_integrity.CHECKSUMS_FILENAME).unlink()
  with pytest.raises(ValueError) as e:
    _variables(workdir)
  message = str(e.value)
  assert f"Could not restore checkpoint {latest}" in message, message
  assert f"to fall back to step {steps[-2]}, delete {latest}" in message, message
  assert len(message) < 2000  # the reason, not tensorstore's whole spec
  shutil.rmtree(latest)  # doing what the message says works
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(_variables(workdir)))

  with pytest.raises(ValueError, match=r"No checkpoint for step 99 .*holds steps \[.*\]"):
    checkpoint.restore_model(str(workdir), which="99")
  for step in _complete_steps(workdir):  # only a partial write left: never picked
    (workdir / "checkpoints" / str(step)).rename(
        workdir / "checkpoints" / f"{step}.orbax-checkpoint-tmp")
  with pytest.raises(FileNotFoundError, match="No complete checkpoint in"):
    checkpoint.restore_model(str(workdir), which="latest")
  shutil.rmtree(workdir / "checkpoints")
  with pytest.raises(FileNotFoundError, match="holds no checkpoints"):
    checkpoint.restore_model(str(workdir))
  with pytest.raises(FileNotFoundError, match="expected a medjax training workdir"):
    checkpoint.restore_model(str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_damaged_latest_checkpoint_is_set_aside_and_the_run_resumes(reference, tmp_path):
  """Issue 16: truncated files in the latest committed checkpoint (a disk error, a partial
  copy), then the same training command: a warning naming it and where it went, a resume from
  the newest intact checkpoint, and the uninterrupted run's parameters at the end."""
  workdir = tmp_path / "w"
  shutil.copytree(reference["workdir"], workdir)
  steps = _complete_steps(workdir)
  latest = workdir / "checkpoints" / str(steps[-1])
  chunks = sorted((latest / "state").rglob("d/*"))
  chunks[0].write_bytes(chunks[0].read_bytes()[:-1])  # one byte short is enough
  proc = _run(_train_cmd(workdir, reference["data_dir"], reference["raw_dir"]), reference["cache"])
  assert proc.returncode == 0, _tail(proc)
  moved = workdir / checkpoint_integrity.DAMAGED_DIRNAME / str(steps[-1])
  assert (f"Warning: checkpoint {latest} is damaged (state/" in proc.stderr
          and f"were written); moved it to {moved}." in proc.stderr), _tail(proc)
  assert f"at step {steps[-2]} (the newest intact checkpoint)." in proc.stdout, _tail(proc)
  assert "Traceback" not in proc.stderr, _tail(proc)
  assert moved.is_dir() and _complete_steps(workdir)[-1] == NUM_STEPS
  _assert_trees_equal(_variables(workdir), _variables(reference["workdir"]))
  # The rewritten step is checksummed again and intact.
  assert checkpoint_integrity.verify(str(latest)).status == "intact"


def test_checksums_tell_each_kind_of_damage(tmp_path):
  step = tmp_path / "7"
  (step / "state" / "d").mkdir(parents=True)
  (step / "state" / "d" / "chunk").write_bytes(b"0123456789")
  (step / "_CHECKPOINT_METADATA").write_text("{}")
  assert checkpoint_integrity.verify(str(step)).status == "unverified"
  checkpoint_integrity.write_checksums(str(step))
  assert checkpoint_integrity.verify(str(step)) == checkpoint_integrity.Verdict("intact")
  (step / "extra").write_text("added later")  # files orbax did not write are not judged
  assert checkpoint_integrity.verify(str(step)).status == "intact"
  chunk = step / "state" / "d" / "chunk"
  chunk.write_bytes(b"0123456788")  # same size, one byte changed
  assert checkpoint_integrity.verify(str(step)) == checkpoint_integrity.Verdict(
      "damaged", "state/d/chunk differs from what was written (SHA-256)")
  chunk.write_bytes(b"01234")
  assert checkpoint_integrity.verify(str(step)).reason == (
      "state/d/chunk has 5 bytes, 10 were written")
  chunk.unlink()
  assert checkpoint_integrity.verify(str(step)).reason == "state/d/chunk is missing"
  (step / checkpoint_integrity.CHECKSUMS_FILENAME).write_text("{not json")
  assert checkpoint_integrity.verify(str(step)).status == "damaged"
  first = checkpoint_integrity.set_aside(str(step), str(tmp_path))
  assert first == str(tmp_path / "damaged_checkpoints" / "7") and not step.exists()
  step.mkdir()
  assert checkpoint_integrity.set_aside(str(step), str(tmp_path)).endswith("damaged_checkpoints/7.1")


if __name__ == "__main__":
  _driver_main(sys.argv)
