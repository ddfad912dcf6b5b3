"""Several processes as one JAX job (issue 16): real `python -m medjax.train` processes.

Two processes (and, in a second test, four) on this machine, the coordinator on 127.0.0.1 at a free port, each with one CPU
device, train the tiny config (tests/tiny.py, FAST_COMPILE) with a global batch of 2 (one
sample per process). They must end with the parameters, and log the losses, of one process
training the same global batch on two devices, to float tolerance (they are bitwise equal
here, but the gradient sums may run in another order across processes). On the way, one
process is killed after the checkpoint of step 2: the other must stop within the heartbeat
timeout, and rerunning both commands resumes from that checkpoint. One slow test does all of
it, so that the job's compilations serve the kill and the rerun, with the reference trained in
the test's own process while the job starts.

The job's two runs share a persistent compilation cache in a temporary folder.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from medjax import checkpoint
from medjax import train_lib
from medjax.training import checks
from medjax.training import multihost
import conftest
import tiny

REPO = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT = 300  # seconds per command; the runs take about 15-30 s here
HEARTBEAT = 5  # seconds: a killed process is noticed after this


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(cache_dir, devices: int = 1) -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             MEDJAX_COMPILE_CACHE_DIR=str(cache_dir),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  for key in ("JAX_COMPILATION_CACHE_DIR", multihost.ENV_ADDRESS, multihost.ENV_NUM_PROCESSES,
              multihost.ENV_PROCESS_ID, multihost.ENV_AUTO):
    env.pop(key, None)
  return env


def _cmd(workdir, data_dir, raw_dir, *extra, **overrides) -> list[str]:
  return [sys.executable, "-m", "medjax.train", "--config=experiments/quickstart.py",
          f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
          f"--config.dataset.manual_dir={raw_dir}",
          *tiny.cli_overrides(**dict(tiny.FAST_COMPILE, **overrides)), *extra]


def _job(num_processes: int, port: int, *extra) -> list[list[str]]:
  """The flags of each process of a job."""
  return [[f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
           f"--process_id={i}", f"--heartbeat_timeout={HEARTBEAT}",
           "--initialization_timeout=60", *extra] for i in range(num_processes)]


def _start(cmds, cache_dir) -> list[subprocess.Popen]:
  return [subprocess.Popen(cmd, cwd=REPO, env=_env(cache_dir), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for cmd in cmds]


def _finish(procs, timeout=TIMEOUT) -> list[subprocess.CompletedProcess]:
  done = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
  return done


def _tail(procs) -> str:
  return "\n".join(f"[process {i}] rc={p.returncode}\nstdout: {p.stdout[-1500:]}\n"
                   f"stderr: {p.stderr[-2500:]}" for i, p in enumerate(procs))


def _losses(workdir) -> dict[int, float]:
  with open(pathlib.Path(workdir) / "metrics.jsonl", encoding="utf-8") as f:
    records = [json.loads(line) for line in f if line.strip()]
  return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


def _variables(workdir):
  _, variables, _ = checkpoint.restore_model(str(workdir), which="latest")
  return jax.device_get(variables)


def _assert_close(a, b, rtol=1e-5, atol=1e-6) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _reference(workdir, data_dir, raw_dir) -> None:
  """The same config trained in this process (one CPU device, global batch 2)."""
  config = conftest.load_experiment_config("quickstart")
  config.dataset.data_dir, config.dataset.manual_dir = str(data_dir), str(raw_dir)
  train_lib.train_and_evaluate(tiny.shrink(config, **tiny.FAST_COMPILE), str(workdir))


@pytest.mark.slow
def test_two_processes_train_like_one_and_survive_a_kill(iseg_raw_dir, iseg_data_dir, tmp_path):
  """A 2-process job is killed in one process after checkpoint 2: the other stops within the
  heartbeat timeout; both commands rerun resume and end with the single-process run's
  parameters and losses."""
  cache = tmp_path / "cache"
  workdir = tmp_path / "two"
  cmd = _cmd(workdir, iseg_data_dir, iseg_raw_dir)
  start = time.monotonic()
  procs = _start([cmd + flags for flags in _job(2, _free_port())], cache)
  _reference(tmp_path / "single", iseg_data_dir, iseg_raw_dir)  # while the job starts
  deadline = time.monotonic() + TIMEOUT
  while (not checkpoint.complete_steps(workdir / "checkpoints")
         and time.monotonic() < deadline and procs[1].poll() is None):
    time.sleep(0.05)
  procs[1].kill()
  killed_at = time.monotonic()
  done = _finish(procs)
  waited = time.monotonic() - killed_at
  steps = checkpoint.complete_steps(workdir / "checkpoints")
  assert steps == [2], _tail(done)  # killed after checkpoint 2, before the end of the run
  assert "2 cpu device(s) in 2 processes (this is process 1)" in done[1].stdout
  assert done[0].returncode != 0, _tail(done)
  assert waited < HEARTBEAT + 30, f"the survivor took {waited:.0f} s to stop"
  assert "stopped sending heartbeats" in done[0].stderr, _tail(done)

  # Both commands again (a fresh port: the killed job's may linger): resume from step 2.
  done = _finish(_start([cmd + flags for flags in _job(2, _free_port(), "--verbosity=0")],
                        cache))
  assert [p.returncode for p in done] == [0, 0], _tail(done)
  assert f"Resumed from {workdir / 'checkpoints'} at step 2." in done[0].stdout
  assert "Validation Dice per tissue" in done[0].stdout  # the summary: the chief's alone
  assert "Validation Dice" not in done[1].stdout
  assert checkpoint.complete_steps(workdir / "checkpoints") == [2, 4]
  # The chief alone wrote the logs: one event file per run, each step once in metrics.jsonl.
  assert len(list((workdir / "tensorboard").glob("events.out.tfevents.*"))) == 2

  elapsed = time.monotonic() - start
  losses, want = _losses(workdir), _losses(tmp_path / "single")
  assert sorted(losses) == sorted(want) == [1, 2, 3, 4]
  np.testing.assert_allclose([losses[s] for s in range(1, 5)], [want[s] for s in range(1, 5)],
                             rtol=1e-5)
  _assert_close(_variables(workdir), _variables(tmp_path / "single"))
  print(f"two processes, killed and resumed: {elapsed:.1f} s")


@pytest.mark.slow
def test_four_processes_train_like_one(iseg_raw_dir, iseg_data_dir, tmp_path):
  """Four processes (one sample each of a global batch of 4) end with the parameters and log
  the losses of one process training the same global batch."""
  overrides = dict(batch_size=4, num_train_steps=2, eval_every_steps=2,
                   checkpoint_every_steps=2)
  workdir = tmp_path / "four"
  cmd = _cmd(workdir, iseg_data_dir, iseg_raw_dir, "--verbosity=0", **overrides)
  procs = _start([cmd + flags for flags in _job(4, _free_port())], tmp_path / "cache")
  config = conftest.load_experiment_config("quickstart")
  config.dataset.data_dir, config.dataset.manual_dir = str(iseg_data_dir), str(iseg_raw_dir)
  train_lib.train_and_evaluate(tiny.shrink(config, **tiny.FAST_COMPILE, **overrides),
                               str(tmp_path / "single"))
  done = _finish(procs)
  assert [p.returncode for p in done] == [0, 0, 0, 0], _tail(done)
  assert "4 cpu device(s) in 4 processes (this is process 3)" in done[3].stdout
  assert checkpoint.complete_steps(workdir / "checkpoints") == [2]
  losses, want = _losses(workdir), _losses(tmp_path / "single")
  assert sorted(losses) == sorted(want) == [1, 2]
  np.testing.assert_allclose([losses[1], losses[2]], [want[1], want[2]], rtol=1e-5)
  _assert_close(_variables(workdir), _variables(tmp_path / "single"))


def test_bad_job_flags_are_one_line_errors(tmp_path):
  flags = ["--num_processes=2", "--process_id=2", "--coordinator_address=127.0.0.1:1"]
  proc = subprocess.run(_cmd(tmp_path / "w", tmp_path, tmp_path, *flags), cwd=REPO,
                        env=_env(tmp_path / "cache"), capture_output=True, text=True,
                        timeout=TIMEOUT)
  assert proc.returncode == 1, _tail([proc])
  assert proc.stderr.strip().splitlines()[-1] == (
      "medjax.train: error: --process_id=2 is out of range for --num_processes=2: expected "
      "0..1.")
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "w").exists()


def test_unreachable_coordinator_is_a_clear_error():
  port = _free_port()  # nothing listens there
  start = time.monotonic()
  with pytest.raises(ConnectionError, match=rf"the coordinator 127.0.0.1:{port} is unreachable "
                     r"\(Connection refused\) after trying for 1 s: start process 0"):
    multihost.initialize(multihost.Settings(f"127.0.0.1:{port}", 2, 1),
                         initialization_timeout=1)
  assert time.monotonic() - start < 10
  assert jax.process_count() == 1  # JAX was not touched


def test_batch_not_a_multiple_of_the_global_devices(monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda: 2)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(ValueError, match=r"config.batch_size=3 is not divisible by the 2 devices "
                     r"of the 2 processes; use a multiple of 2"):
    checks.check_config(tiny.tiny_config(batch_size=3))


def test_settings_from_flags_and_environment():
  assert multihost.settings_from(environ={}) is None
  assert multihost.settings_from(environ={"MEDJAX_DISTRIBUTED": "1"}).auto
  assert multihost.settings_from(environ={"MEDJAX_DISTRIBUTED": "0"}) is None
  env = {"MEDJAX_COORDINATOR_ADDRESS": "h:1234", "MEDJAX_NUM_PROCESSES": "4",
         "MEDJAX_PROCESS_ID": "3"}
  assert multihost.settings_from(environ=env) == multihost.Settings("h:1234", 4, 3)
  # Flags win over the environment.
  assert multihost.settings_from(process_id=1, environ=env) == multihost.Settings("h:1234", 4, 1)
  one = multihost.settings_from(num_processes=1, environ={})
  assert one == multihost.Settings(None, 1, 0) and not one.explicit
  with pytest.raises(ValueError, match="MEDJAX_NUM_PROCESSES='x': expected an integer"):
    multihost.settings_from(environ={"MEDJAX_NUM_PROCESSES": "x"})
  with pytest.raises(ValueError, match="--num_processes .* is missing"):
    multihost.settings_from(process_id=0, environ={})
  with pytest.raises(ValueError, match="--num_processes=0: expected at least 1 process"):
    multihost.settings_from(num_processes=0, environ={})
  with pytest.raises(ValueError, match=r"--process_id=-1 is out of range .* expected 0..3"):
    multihost.settings_from(process_id=-1, environ=env)
  with pytest.raises(ValueError, match=r"--process_id \(or MEDJAX_PROCESS_ID\) is missing"):
    multihost.settings_from(num_processes=2, coordinator_address="h:1", environ={})
  with pytest.raises(ValueError, match=r"--coordinator_address \(or .*\) is missing"):
    multihost.settings_from(num_processes=2, process_id=1, environ={})
  assert multihost.parse_address("[::1]:80") == ("::1", 80)
  with pytest.raises(ValueError, match="expected HOST:PORT"):
    multihost.parse_address("h:70000")
