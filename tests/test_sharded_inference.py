"""Sharded inference: sliding-window batches over several devices give the one-device result,
and `predict` split over several processes writes exactly what one process writes."""

import functools
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import tiny
from medjax import prediction
from medjax.prediction import shards
from medjax.training import mesh as mesh_lib

TESTS = pathlib.Path(__file__).resolve().parent

# Runs with 4 fake CPU devices (XLA_FLAGS is read when jax is imported, hence a subprocess).
# Every check runs once on the first device alone and once on all four, through the same code.
_FOUR_DEVICES_SCRIPT = r"""
import functools, json, sys
sys.path.insert(0, {tests!r})
import jax, jax.numpy as jnp, numpy as np
from medjax import inference
from medjax.models import UNet3D
from medjax.training import evaluator
import tiny

assert len(jax.local_devices()) == 4, jax.local_devices()
one, all4 = jax.local_devices()[:1], None  # None: the default, every local device
rng = np.random.default_rng(0)
x = rng.normal(size=(2, 13, 11, 9, 2)).astype(np.float32)
# The window batch each device's predictor was traced for, and the positions on the mesh axis
# of the devices that ran it, by run (1 or 4 devices).
seen = {{n: {{"batch": set(), "devices": set()}} for n in ("1", "4")}}
now = ["1"]

@jax.jit
def window_dependent(v):
  # Different for every window (its mean), independent across the batch: a repeated window
  # given any weight would change the blend where it overlaps the others.
  seen[now[0]]["batch"].add(v.shape[0])
  record = seen[now[0]]["devices"]
  jax.debug.callback(lambda i: record.add(int(i)), jax.lax.axis_index("data"))
  return jnp.tanh(v * 2.0) + v.mean(axis=(1, 2, 3), keepdims=True)

@jax.jit
def two_outputs(v):
  return v[..., :1] * 3.0, {{"sq": v ** 2 + v.sum(axis=(1, 2, 3), keepdims=True)}}

diffs, scale = {{}}, {{}}

def compare(name, fn):
  now[0] = "1"
  a = fn(one)
  now[0] = "4"
  b = fn(all4)
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  diffs[name] = max(float(np.max(np.abs(np.asarray(p) - np.asarray(q))))
                    for p, q in zip(leaves_a, leaves_b))
  scale[name] = max(float(np.max(np.abs(np.asarray(p)))) for p in leaves_a)
  return a, b

for mode in ("constant", "gaussian"):
  for sw in (1, 3, 8):  # 1 and 3 are rounded up to 4 windows a call; 8 is 2 per device
    compare(f"{{mode}}-sw{{sw}}", lambda d: inference.sliding_window_inference(
        x, (6, 5, 4), sw, window_dependent, overlap=0.5, mode=mode, devices=d))
  compare(f"{{mode}}-pad_last_batch", lambda d: inference.sliding_window_inference(
      x, (6, 5, 4), 3, window_dependent, overlap=0.5, mode=mode, devices=d,
      pad_last_batch=True))
compare("tuple-outputs-flips", lambda d: inference.sliding_window_inference(
    x, (7, 6, 5), 2, two_outputs, overlap=0.25, mode="gaussian", flip_axes=[(0,), (1, 2)],
    devices=d))
# Three scans that each fit in one ROI: the whole-scan path, batches of 2 (4 on 4 devices).
whole = rng.normal(size=(3, 5, 4, 3, 2)).astype(np.float32)
a, b = compare("whole-scan", lambda d: inference.sliding_window_inference(
    whole, (8, 8, 8), 2, window_dependent, devices=d))
assert np.asarray(a).shape == np.asarray(b).shape == whole.shape

# A real network with BatchNorm (inference mode) through predict_volume, and its TTA members.
model = UNet3D(num_classes=3, base_features=2, num_levels=1, conv_method="xla")
variables = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 8, 2)),
                                       train=False))()
image = x[0]
compare("predict_volume", lambda d: inference.predict_volume(
    model, variables, image, roi_size=(8, 8, 8), overlap=0.5, mode="gaussian",
    sw_batch_size=3, devices=d))
compare("predict_volume-members", lambda d: inference.predict_volume(
    model, variables, image, roi_size=(8, 8, 8), overlap=0.25, mode="constant",
    sw_batch_size=1, flip_axes=[(0,)], members=True, devices=d))

# Validation during training: the same metrics on one device and on four.
config = tiny.tiny_config(eval__roi_size=(8, 8, 8), eval__sw_batch_size=1, eval__overlap=0.5,
                          dataset__num_classes=3, dataset__num_modalities=2)
subject = {{"image": image, "label": rng.integers(0, 3, size=image.shape[:3]), "case_id": "c"}}
metrics = {{n: evaluator.evaluate(model, variables, [subject], config, devices=d)[0]
           for n, d in (("1", one), ("4", all4))}}
seen = {{n: {{k: sorted(v) for k, v in d.items()}} for n, d in seen.items()}}
print(json.dumps(dict(diffs=diffs, scale=scale, seen=seen, metrics=metrics)))
"""


def test_four_devices_equal_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _FOUR_DEVICES_SCRIPT.format(tests=str(TESTS))],
                        capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  for name, diff in result["diffs"].items():
    assert diff <= 1e-5 * max(1.0, result["scale"][name]), (name, diff)
  assert len(result["diffs"]) == 12
  # Window batches: as given on one device (1, 3, 8, the short last ones, and the whole-scan
  # path's 2 and 1); on four devices sw_batch_size rounded up to a multiple of 4 (1 and 3 -> 4,
  # the whole-scan 2 -> 4), short last batches filled up to one, and each of the four devices
  # running the predictor on its share: 1 or 2 windows.
  seen = result["seen"]
  assert {1, 2, 3, 8} <= set(seen["1"]["batch"]) and seen["1"]["devices"] == [0]
  assert seen["4"]["batch"] == [1, 2] and seen["4"]["devices"] == [0, 1, 2, 3]
  one, four = result["metrics"]["1"], result["metrics"]["4"]
  assert one.keys() == four.keys() and "val_dice_mean" in one
  for key in one:
    np.testing.assert_allclose(four[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_local_mesh_takes_this_process_devices():
  import jax  # pylint: disable=g-import-not-at-top
  mesh = mesh_lib.local_mesh()
  assert mesh.axis_names == ("data",) and list(mesh.devices.flat) == jax.local_devices()
  with pytest.raises(ValueError, match="at least one device"):
    mesh_lib.local_mesh([])


# ---------------------------------------------------------------------------------------------
# Which cases a shard segments.


def test_shard_from_flags_environment_and_default():
  env = {shards.ENV_NUM_PROCESSES: "3", shards.ENV_PROCESS_ID: "2"}
  assert shards.resolve(environ={}) == shards.Shard(1, 0, "default")
  assert shards.resolve(environ=env) == shards.Shard(3, 2, "environment")
  assert shards.resolve(2, 1, environ=env) == shards.Shard(2, 1, "flags")  # flags win


@pytest.mark.parametrize("flags, environ, match", [
    ((2, 2), {}, r"^--shard_index=2 with --num_shards=2: expected 0\.\.1\.$"),
    ((2, -1), {}, r"--shard_index=-1 with --num_shards=2: expected 0\.\.1"),
    ((0, 0), {}, r"--num_shards=0: expected an integer >= 1"),
    ((2, None), {}, "go together"),
    ((None, 1), {}, "go together"),
    ((None, None), {"MEDJAX_NUM_PROCESSES": "2", "MEDJAX_PROCESS_ID": "5"},
     r"MEDJAX_PROCESS_ID=5 with MEDJAX_NUM_PROCESSES=2: expected 0\.\.1"),
    ((None, None), {"MEDJAX_PROCESS_ID": "1"}, "MEDJAX_NUM_PROCESSES is not"),
    ((None, None), {"MEDJAX_NUM_PROCESSES": "two", "MEDJAX_PROCESS_ID": "1"},
     "MEDJAX_NUM_PROCESSES='two': expected an integer"),
])
def test_bad_shards_raise(flags, environ, match):
  with pytest.raises(ValueError, match=match):
    shards.resolve(*flags, environ=environ)


def test_a_started_jax_distributed_job_gives_the_shard(monkeypatch):
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  # A client stands for a started job; in this one-process test it is a job of one process, so
  # the MEDJAX_* variables (which would say 2) are not used.
  monkeypatch.setattr(distributed.global_state, "client", object())
  env = {shards.ENV_NUM_PROCESSES: "2", shards.ENV_PROCESS_ID: "1"}
  assert shards.resolve(environ=env) == shards.Shard(1, 0, "jax.distributed")
  assert shards.resolve(2, 1, environ=env).source == "flags"


def test_shards_are_disjoint_cover_all_and_ignore_listing_order():
  names = [f"case_{i:03d}" for i in (7, 2, 9, 4, 1, 3, 8)]
  parts = [shards.select(names, names, shards.Shard(3, i)) for i in range(3)]
  assert sorted(sum(parts, [])) == sorted(names)
  assert all(not set(p) & set(q) for i, p in enumerate(parts) for q in parts[i + 1:])
  assert parts[0] == ["case_009", "case_004", "case_001"]  # ranks 6, 3, 0 of the sorted names
  shuffled = names[::-1]
  for i, part in enumerate(parts):
    assert sorted(shards.select(shuffled, shuffled, shards.Shard(3, i))) == sorted(part)
  assert shards.select(names, list(range(7)), shards.Shard(1, 0)) == list(range(7))
  with pytest.raises(ValueError, match="more than once"):
    shards.select(["a", "b", "a"], [1, 2, 3], shards.Shard(2, 0))


# ---------------------------------------------------------------------------------------------
# predict over a folder, in shards.


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, _iseg_base_config):
  from medjax import train_lib  # pylint: disable=g-import-not-at-top
  config = tiny.shrink(_iseg_base_config, num_train_steps=1, **tiny.FAST_COMPILE)
  path = tmp_path_factory.mktemp("sharded") / "work"
  train_lib.train_and_evaluate(config, str(path))
  return path


def _files(folder: pathlib.Path) -> dict[str, bytes]:
  return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_shards_write_what_one_run_writes(workdir, iseg_raw_dir, tmp_path, capsys):
  run = functools.partial(prediction.run, str(workdir), input_dir=str(iseg_raw_dir),
                          which="latest", fmt="nii", save_probabilities=True)
  single = run(output_dir=str(tmp_path / "single"))
  assert len(single) == 4  # subjects 1, 2, 3 and 11
  capsys.readouterr()
  parts = [run(output_dir=str(tmp_path / "sharded"), num_shards=2, shard_index=i)
           for i in (0, 1)]
  out = capsys.readouterr().out
  assert "Shard 0 of 2 (flags): 2 of 4 cases." in out and "Shard 1 of 2 (flags)" in out
  names = [[r["name"] for r in part] for part in parts]
  # Ranks 0, 2 and 1, 3 of the sorted names subject-1, subject-11, subject-2, subject-3, each
  # shard in the folder's order.
  assert names == [["subject-1", "subject-2"], ["subject-3", "subject-11"]]
  single_files, sharded_files = _files(tmp_path / "single"), _files(tmp_path / "sharded")
  assert sorted(single_files) == sorted(sharded_files)
  assert len(single_files) == 12  # label, probabilities, PNG per case; nothing else
  for name, data in single_files.items():
    assert sharded_files[name] == data, name
  # A shard with no case (more shards than cases) writes nothing; a bad index writes nothing.
  assert run(output_dir=str(tmp_path / "empty"), num_shards=5, shard_index=4) == []
  with pytest.raises(ValueError, match=r"--shard_index=2 with --num_shards=2: expected 0\.\.1"):
    run(output_dir=str(tmp_path / "bad"), num_shards=2, shard_index=2)
  assert not (tmp_path / "empty").exists() and not (tmp_path / "bad").exists()


def test_predict_cli_takes_the_shard_from_the_environment(workdir, iseg_raw_dir, tmp_path):
  env = dict(os.environ, MEDJAX_NUM_PROCESSES="2", MEDJAX_PROCESS_ID="1")
  cmd = [sys.executable, "-m", "medjax.predict", f"--workdir={workdir}", "--which=latest",
         f"--input_dir={iseg_raw_dir}", "--subjects=1,2,3", "--png=false",
         f"--output_dir={tmp_path / 'out'}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=TESTS.parent, env=env,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Sorted subject-1, subject-2, subject-3: shard 1 of 2 has rank 1 alone.
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["subject-2-label.nii.gz"]
  proc = subprocess.run(cmd + ["--num_shards=2", "--shard_index=2"], capture_output=True,
                        text=True, cwd=TESTS.parent, env=env, timeout=600)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      "medjax.predict: error: --shard_index=2 with --num_shards=2: expected 0..1.")
