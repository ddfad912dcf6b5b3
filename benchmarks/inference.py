r"""Whole-scan segmentation time and peak memory: medjax against PyTorch + MONAI, same network.

  python benchmarks/inference.py [--base_features 32] [--shape 144,192,256] [--roi 64,64,64] \
      [--overlap 0.25] [--mode gaussian] [--sw_batch_size 1] [--skip_torch] [--devices N]

One invocation segments one random two-modality scan (the iSeg-2017 size by default) with
medjax's UNet3D (`medjax.inference.sliding_window_inference`) and with a PyTorch twin of the same
network (`UNet3DTorch` below: same layers, the same weights copied over) run through MONAI's
`sliding_window_inference` with the same ROI, overlap, blending and window batch. Each framework
runs in its own child process, so peak memory (the child's maximum resident set size) is its own.
BatchNorm running statistics are randomised so the twin check exercises every layer. Reported:
the time of one warm segmentation (compilation / warm-up on one window done before), peak RSS,
the RSS before the timed run, the ratio medjax / PyTorch, and the agreement of the two outputs
(max |probability difference| and the fraction of voxels with the same argmax).

`--devices N` spreads medjax's window batches over the first N local devices (its default is
all of them); on a CPU-only machine the medjax child is given N fake CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=N`). Those share the same cores, so on CPU
the figure checks that sharding costs little, not that it is faster. The window batch is
`--sw_batch_size` rounded up to a multiple of N (as `sliding_window_inference` does); PyTorch
+ MONAI always runs on one device.

Needs `pip install torch monai` (the CPU wheel of torch; `pip install -e .[bench]`).
"""

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

import torch_unet3d  # benchmarks/torch_unet3d.py (this script's folder is on sys.path)

NUM_CLASSES = torch_unet3d.NUM_CLASSES
NUM_MODALITIES = torch_unet3d.NUM_MODALITIES


def _rss_mb() -> float:
  with open("/proc/self/statm") as f:
    pages = int(f.read().split()[1])
  return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------------------------------------
# Workers (child processes).


def _medjax_model(base_features: int):
  from medjax.models import UNet3D  # pylint: disable=g-import-not-at-top
  return UNet3D(num_classes=NUM_CLASSES, base_features=base_features)


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _worker_medjax(args, workdir: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from medjax import inference  # pylint: disable=g-import-not-at-top
  model = _medjax_model(args.base_features)
  flat = dict(np.load(os.path.join(workdir, "weights.npz")))
  variables = jax.tree.map(jnp.asarray, _unflatten(flat))
  scan = np.load(os.path.join(workdir, "scan.npy"))
  from medjax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  predictor = inference.make_softmax_predictor(model)
  roi = tuple(args.roi)
  devices = jax.local_devices()[:args.devices] if args.devices else jax.local_devices()
  if args.devices and len(devices) < args.devices:
    raise ValueError(f"--devices {args.devices}: this machine has {len(devices)}.")
  mesh = mesh_lib.local_mesh(devices)
  variables = jax.device_put(variables, mesh_lib.replicated(mesh))
  # Compile the window-batch predictor once (as the run calls it: on every device, with the
  # run's window batch) on a scan of two windows; the run itself then compiles only the cheap
  # cutting and adding of windows for its scan size, as before.
  t0 = time.perf_counter()
  warm = np.zeros((1, roi[0] + 1, *roi[1:], NUM_MODALITIES), np.float32)
  inference.sliding_window_inference(
      warm, roi, args.sw_batch_size, functools.partial(predictor, variables),
      overlap=args.overlap, mode=args.mode, devices=devices).block_until_ready()
  compile_s = time.perf_counter() - t0
  rss_before = _rss_mb()
  t0 = time.perf_counter()
  probs = inference.sliding_window_inference(
      jnp.asarray(scan)[None], roi, args.sw_batch_size,
      functools.partial(predictor, variables), overlap=args.overlap, mode=args.mode,
      devices=devices)
  probs = np.asarray(probs.block_until_ready())[0]
  seconds = time.perf_counter() - t0
  np.save(os.path.join(workdir, "medjax.npy"), probs)
  return {"warmup_s": compile_s, "seconds": seconds, "rss_before_mb": rss_before,
          "peak_rss_mb": _peak_rss_mb(),
          "version": f"jax {jax.__version__}, {len(devices)} {devices[0].platform} device"
                     f"{'' if len(devices) == 1 else 's'}"}


def _worker_torch(args, workdir: str) -> dict:
  import monai  # pylint: disable=g-import-not-at-top
  from monai.inferers import sliding_window_inference  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  model = torch_unet3d.build(args.base_features)
  torch_unet3d.copy_weights(model, dict(np.load(os.path.join(workdir, "weights.npz"))))
  model.eval()
  scan = np.load(os.path.join(workdir, "scan.npy"))
  x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(scan, -1, 0))[None])
  roi = tuple(args.roi)
  predictor = lambda w: torch.softmax(model(w), dim=1)
  with torch.inference_mode():
    t0 = time.perf_counter()
    predictor(torch.zeros((args.sw_batch_size, NUM_MODALITIES, *roi)))
    warm_s = time.perf_counter() - t0
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    probs = sliding_window_inference(x, roi, args.sw_batch_size, predictor,
                                     overlap=args.overlap, mode=args.mode)
    seconds = time.perf_counter() - t0
  np.save(os.path.join(workdir, "torch.npy"), np.moveaxis(probs[0].numpy(), 0, -1))
  return {"warmup_s": warm_s, "seconds": seconds, "rss_before_mb": rss_before,
          "peak_rss_mb": _peak_rss_mb(),
          "version": f"torch {torch.__version__}, monai {monai.__version__}, "
                     f"{torch.get_num_threads()} threads"}


# ---------------------------------------------------------------------------------------------
# Parent.


def _prepare(args, workdir: str) -> None:
  """Initialises the medjax UNet3D, randomises its BatchNorm statistics, writes weights + scan."""
  import jax  # pylint: disable=g-import-not-at-top
  model = _medjax_model(args.base_features)
  roi = tuple(args.roi)
  variables = jax.jit(lambda: model.init(
      jax.random.key(0), np.zeros((1, *roi, NUM_MODALITIES), np.float32), train=False))()
  rng = np.random.default_rng(0)
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(variables))[0]:
    key = "/".join(p.key for p in path)
    leaf = np.asarray(leaf, np.float32)
    if key.endswith("bn/mean"):
      leaf = rng.normal(0.0, 0.1, leaf.shape).astype(np.float32)
    elif key.endswith("bn/var"):
      leaf = rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    flat[key] = leaf
  np.savez(os.path.join(workdir, "weights.npz"), **flat)
  scan = rng.normal(size=(*args.shape, NUM_MODALITIES)).astype(np.float32)
  np.save(os.path.join(workdir, "scan.npy"), scan)


def _spawn(framework: str, argv: list[str], workdir: str) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), *argv, f"--_worker={framework}",
         f"--_workdir={workdir}"]
  env = dict(os.environ)
  devices = _parse(argv).devices
  if framework == "medjax" and devices:  # fake CPU devices; other platforms ignore the flag
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={devices}").strip()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
  if proc.returncode != 0:
    raise RuntimeError(f"{framework} worker failed:\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _parse(argv: list[str]) -> argparse.Namespace:
  triple = lambda s: tuple(int(v) for v in s.split(","))
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--base_features", type=int, default=32)
  parser.add_argument("--shape", type=triple, default=(144, 192, 256))
  parser.add_argument("--roi", type=triple, default=(64, 64, 64))
  parser.add_argument("--overlap", type=float, default=0.25)
  parser.add_argument("--mode", choices=("constant", "gaussian"), default="gaussian")
  parser.add_argument("--sw_batch_size", type=int, default=1)
  parser.add_argument("--skip_torch", action="store_true")
  parser.add_argument("--devices", type=int, default=None,
                      help="medjax: spread window batches over this many local devices "
                           "(default: all; on CPU, as many fake CPU devices)")
  parser.add_argument("--_worker", choices=("medjax", "torch"), help=argparse.SUPPRESS)
  parser.add_argument("--_workdir", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv: list[str]) -> None:
  args = _parse(argv)
  worker_name, worker_dir = getattr(args, "_worker"), getattr(args, "_workdir")
  if worker_name:
    worker = _worker_medjax if worker_name == "medjax" else _worker_torch
    print(json.dumps(worker(args, worker_dir)))
    return
  from medjax import inference  # pylint: disable=g-import-not-at-top
  num_windows = len(inference.window_starts(
      [max(s, r) for s, r in zip(args.shape, args.roi)], args.roi, (args.overlap,) * 3))
  print(f"UNet3D base {args.base_features}, scan {args.shape} x {NUM_MODALITIES}, ROI {args.roi}, "
        f"overlap {args.overlap}, {args.mode} blending, window batch {args.sw_batch_size}: "
        f"{num_windows} windows; {os.cpu_count()} CPUs", flush=True)
  with tempfile.TemporaryDirectory(prefix="medjax-bench-") as workdir:
    _prepare(args, workdir)
    results = {"medjax": _spawn("medjax", argv, workdir)}
    if not args.skip_torch:
      results["pytorch+monai"] = _spawn("torch", argv, workdir)
    print(f"\n{'':<15}{'segment (s)':>12}{'warm-up (s)':>13}{'RSS before (MB)':>17}"
          f"{'peak RSS (MB)':>15}  versions")
    for name, r in results.items():
      print(f"{name:<15}{r['seconds']:>12.2f}{r['warmup_s']:>13.2f}{r['rss_before_mb']:>17.0f}"
            f"{r['peak_rss_mb']:>15.0f}  {r['version']}")
    if "pytorch+monai" in results:
      mj, pt = results["medjax"], results["pytorch+monai"]
      print(f"\nmedjax / pytorch+monai: time {mj['seconds'] / pt['seconds']:.2f}x, "
            f"peak memory {mj['peak_rss_mb'] / pt['peak_rss_mb']:.2f}x")
      a, b = np.load(os.path.join(workdir, "medjax.npy")), np.load(
          os.path.join(workdir, "torch.npy"))
      print(f"outputs: max |p_medjax - p_torch| = {np.abs(a - b).max():.2e}, "
            f"argmax agreement {np.mean(a.argmax(-1) == b.argmax(-1)):.6f}")


if __name__ == "__main__":
  main(sys.argv[1:])
