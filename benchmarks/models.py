r"""Forward time, train-step time and peak memory of every registered model, to choose one.

  python benchmarks/models.py [--models VNET,VNET2,...] [--size 64] [--batch 1] \
      [--repeats 3] [--warmup 1] [--conv_method auto] [--json results.json] \
      [--medzoo ~/MedicalZoo-pytorch]

Each model runs in its own child process (so its peak memory is its own) on one random
two-modality batch `[batch, size, size, size, 2]` with 4 classes, at the widths MedicalZoo uses
(`medjax.models.model_class(name)(num_classes=4)` defaults). Measured per model:

* parameters (PyTorch convention, `layers.count_parameters`);
* forward: `model.apply(..., train=False)` jitted; `warmup` untimed calls, then the median of
  `repeats` timed calls (each waits for its result);
* train step: forward + backward (soft Dice loss, `medjax.losses.dice_loss`) + SGD with momentum
  0.5 (`optax.sgd`), BatchNorm statistics updated, dropout on; same warm-up and median. Compiled
  as `medjax.train` compiles its step: `medjax.compile_options`, parameters, statistics and
  optimiser state donated, the compiler's freed memory returned (`compile_cache.
  release_compiler_memory`), the forward executable dropped first;
* compile: seconds to compile the train step (XLA's CPU compiler is slow for 3D convolutions);
* peak memory: the child's peak resident set size over the train steps (`VmHWM`, reset once the
  step is compiled; it includes the interpreter, the libraries, the weights and the executable:
  what a training process holds) or the device's `peak_bytes_in_use` (GPU/TPU); the peak while
  compiling ("compiling MB", which a process that finds the step in the persistent compilation
  cache does not reach); and XLA's own estimate of the step's temporary buffers
  (`compiled.memory_analysis()`). MedicalZoo's peak is measured the same way, over its train
  steps after its forward.

With `--medzoo DIR` (a checkout of https://github.com/black0017/MedicalZoo-pytorch; its modules
import `torchsummary`: `pip install torch torchsummary`), each network that MedicalZoo has
(`medzoo_peer.MODELS`) also runs as MedicalZoo's own PyTorch module in a child process of its
own, loaded with medjax's weights (`benchmarks/medzoo_peer.py`), and a second table prints the
largest difference of the two networks' eval-mode logits and the ratios medjax / MedicalZoo of
forward time, train-step time and peak RSS.

HyperDenseNet's logits are smaller than its input (valid convolutions): the labels are
centre-cropped to `model.output_shape(...)`, as the trainer does. Nothing here is a test; the
whole table at 64^3 takes tens of minutes on a 2-core CPU (DenseNets and HyperDenseNet run at full
resolution with hundreds of channels).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import memory  # benchmarks/memory.py (this script's folder is on sys.path)

DEFAULT_MODELS = ("UNET3D", "VNET", "VNET2", "DENSENET1", "DENSENET2", "DENSENET3",
                  "HYPERDENSENET")
NUM_CLASSES = 4
NUM_MODALITIES = 2


def _peer_models() -> tuple[str, ...]:
  import medzoo_peer  # pylint: disable=g-import-not-at-top
  return tuple(medzoo_peer.MODELS)


def timed_median(fn, warmup: int, repeats: int) -> float:
  """Median wall time of `repeats` calls of `fn` (which blocks on its result) after `warmup`."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def run_one(name: str, size: int, batch: int, warmup: int, repeats: int,
            conv_method: str = "", peer_dir: str = "") -> dict:
  """Measures one model in this process; returns a JSON-able dict.

  With `peer_dir`, the weights come from `medzoo_peer.medjax_variables` and the input, labels,
  weights and eval-mode logits are saved there for MedicalZoo's module (`run_torch`).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from medjax import compile_cache  # pylint: disable=g-import-not-at-top
  from medjax import compile_options  # pylint: disable=g-import-not-at-top
  from medjax import losses  # pylint: disable=g-import-not-at-top
  from medjax import models  # pylint: disable=g-import-not-at-top
  from medjax.models import layers  # pylint: disable=g-import-not-at-top

  kwargs = {"conv_method": conv_method} if conv_method else {}
  model = models.model_class(name)(num_classes=NUM_CLASSES, **kwargs)
  shape = (batch, size, size, size, NUM_MODALITIES)
  out_spatial = (model.output_shape((size,) * 3) if hasattr(model, "output_shape")
                 else (size,) * 3)
  rng = jax.random.key(0)
  x = jax.random.normal(rng, shape, jnp.float32)
  labels = jax.random.randint(jax.random.key(1), (batch, *out_spatial), 0, NUM_CLASSES)
  num_params = layers.count_parameters(model, shape)

  if peer_dir:
    import medzoo_peer  # pylint: disable=g-import-not-at-top
    variables, peer_layers = medzoo_peer.medjax_variables(name, model, x)
    medzoo_peer.save_layers(os.path.join(peer_dir, "layers.npz"), peer_layers)
    np.save(os.path.join(peer_dir, "x.npy"), np.asarray(x))
    np.save(os.path.join(peer_dir, "labels.npy"), np.asarray(labels))
    np.save(os.path.join(peer_dir, "logits.npy"),
            np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)))
  else:
    variables = jax.jit(lambda x: model.init(rng, x, train=False))(x)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  tx = optax.sgd(1e-3, momentum=0.5)
  # Compiled as medjax.train compiles its steps: medjax's XLA options, the state donated.
  options = compile_options.for_backend()
  def run_forward(fn=jax.jit(lambda v, x: model.apply(v, x, train=False),
                             compiler_options=options), v=variables):
    jax.block_until_ready(fn(v, x))

  forward_s = timed_median(run_forward, warmup, repeats)
  # Training is measured without the forward executable (JAX's caches would keep it alive).
  del run_forward
  jax.clear_caches()

  def train_step(params, batch_stats, opt_state, x, labels, key):
    def loss_fn(p):
      logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                    mutable=["batch_stats"], rngs={"dropout": key})
      return losses.dice_loss(logits, labels), updates
    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates_opt, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates_opt)
    return params, updates.get("batch_stats", {}), opt_state, loss

  state = [jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, batch_stats), tx.init(params)]
  del variables, params, batch_stats
  key = jax.random.key(2)
  memory.reset_peak_rss()
  start = time.perf_counter()
  compiled_step = jax.jit(train_step, donate_argnums=(0, 1, 2), compiler_options=options).lower(
      *state, x, labels, key).compile()
  compile_s = time.perf_counter() - start
  compile_peak_mb = memory.status_mb("VmHWM")
  compile_cache.release_compiler_memory()
  analysis = compiled_step.memory_analysis()
  temp_mb = getattr(analysis, "temp_size_in_bytes", 0) / 2**20 if analysis is not None else None

  def step():
    out = compiled_step(*state, x, labels, key)
    state[:] = out[:3]  # the donated buffers' successors
    jax.block_until_ready(out[3])

  rss_before_mb = memory.status_mb("VmRSS")
  memory.reset_peak_rss()
  train_s = timed_median(step, warmup, repeats)

  device = jax.devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and "peak_bytes_in_use" in stats:
    peak_mb, peak_kind = stats["peak_bytes_in_use"] / 2**20, "device"
  else:
    peak_mb, peak_kind = memory.status_mb("VmHWM"), "rss"
  return {
      "model": name, "params": num_params, "input": list(shape), "output": list(out_spatial),
      "compile_s": compile_s, "forward_s": forward_s, "train_step_s": train_s,
      "peak_mb": peak_mb, "peak_kind": peak_kind, "compile_peak_mb": compile_peak_mb,
      "rss_before_mb": rss_before_mb, "xla_train_temp_mb": temp_mb,
      "device": str(device.device_kind),
  }


def run_torch(name: str, medzoo: str, peer_dir: str, warmup: int, repeats: int) -> dict:
  """MedicalZoo's module for `name` with the weights `run_one` saved in `peer_dir`, measured
  like `run_one` (forward in eval mode under `torch.inference_mode()`; train step: soft Dice,
  backward, SGD with momentum 0.5) with `os.cpu_count()` threads."""
  import torch  # pylint: disable=g-import-not-at-top
  import medzoo_peer  # pylint: disable=g-import-not-at-top
  import torch_unet3d  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(os.cpu_count())
  model = medzoo_peer.build(medzoo, name)
  x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.load(os.path.join(peer_dir,
                                                                              "x.npy")), -1, 1)))
  labels = torch.from_numpy(np.load(os.path.join(peer_dir, "labels.npy")).astype(np.int64))
  medzoo_peer.copy_weights(model, x, medzoo_peer.load_layers(os.path.join(peer_dir,
                                                                          "layers.npz")))

  def forward():
    model.eval()
    with torch.inference_mode():
      return model(x)

  logits = np.moveaxis(forward().numpy(), 1, -1)
  want = np.load(os.path.join(peer_dir, "logits.npy"))
  optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.5)

  def train_step():
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = torch_unet3d.dice_loss(model(x), labels, NUM_CLASSES)
    loss.backward()
    optimizer.step()

  forward_s = timed_median(forward, warmup, repeats)
  rss_before_mb = memory.status_mb("VmRSS")
  memory.reset_peak_rss()
  train_s = timed_median(train_step, warmup, repeats)
  return {
      "model": name, "peer": f"MedicalZoo {medzoo_peer.MODELS[name][1]} (torch {torch.__version__})",
      "params": int(sum(p.numel() for p in model.parameters())),
      "max_abs_logit_diff": float(np.abs(logits - want).max()) if logits.shape == want.shape
      else None, "forward_s": forward_s, "train_step_s": train_s,
      "peak_mb": memory.status_mb("VmHWM"), "rss_before_mb": rss_before_mb,
  }


def _format_peer_table(rows: list[dict]) -> str:
  head = (f"{'model':<14}{'max |dlogit|':>13}{'forward s':>19}{'train s':>19}{'peak MB':>17}"
          f"{'ratio: fwd':>12}{'train':>7}{'peak':>7}")
  lines = [head, "-" * len(head)]
  for r in rows:
    peer = r.get("medzoo")
    if not peer or "error" in r:
      continue
    if "error" in peer:
      lines.append(f"{r['model']:<14}  MedicalZoo failed: {peer['error']}")
      continue
    diff = peer["max_abs_logit_diff"]
    diff_s = f"{diff:.1e}" if diff is not None else "shape!"
    lines.append(
        f"{r['model']:<14}{diff_s:>13}{r['forward_s']:>10.2f} /{peer['forward_s']:>6.2f}"
        f"{r['train_step_s']:>10.2f} /{peer['train_step_s']:>6.2f}"
        f"{r['peak_mb']:>9.0f} /{peer['peak_mb']:>6.0f}"
        f"{r['forward_s'] / peer['forward_s']:>12.2f}"
        f"{r['train_step_s'] / peer['train_step_s']:>7.2f}{r['peak_mb'] / peer['peak_mb']:>7.2f}")
  return "\n".join(lines)


def _format_table(rows: list[dict]) -> str:
  head = (f"{'model':<14}{'params':>12}{'output':>14}{'compile s':>11}{'forward s':>11}"
          f"{'train s':>10}{'peak MB':>10}{'compiling MB':>14}{'XLA temp MB':>13}")
  lines = [head, "-" * len(head)]
  for r in rows:
    if "error" in r:
      lines.append(f"{r['model']:<14}  failed: {r['error']}")
      continue
    out = "x".join(str(s) for s in r["output"])
    temp = f"{r['xla_train_temp_mb']:.0f}" if r["xla_train_temp_mb"] is not None else "-"
    lines.append(f"{r['model']:<14}{r['params']:>12,}{out:>14}{r['compile_s']:>11.1f}"
                 f"{r['forward_s']:>11.2f}{r['train_step_s']:>10.2f}{r['peak_mb']:>10.0f}"
                 f"{r['compile_peak_mb']:>14.0f}{temp:>13}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                      help="comma-separated registry names")
  parser.add_argument("--size", type=int, default=64, help="cubic input size")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--conv_method", default="",
                      help="the models' conv_method (default: each model's own, 'auto')")
  parser.add_argument("--json", default="", help="also write the rows to this file")
  parser.add_argument("--medzoo", default="",
                      help="a MedicalZoo-pytorch checkout: also run each network's own PyTorch "
                      "module (lib/medzoo) with the same weights and print the ratios")
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  parser.add_argument("--worker_torch", default="", help=argparse.SUPPRESS)
  parser.add_argument("--peer_dir", default="", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.repeats < 1 or args.warmup < 0:
    parser.error("--repeats must be >= 1 and --warmup >= 0")

  if args.worker:
    print(json.dumps(run_one(args.worker, args.size, args.batch, args.warmup, args.repeats,
                            args.conv_method, args.peer_dir)))
    return
  if args.worker_torch:
    result = run_torch(args.worker_torch, args.medzoo, args.peer_dir, args.warmup, args.repeats)
    print(json.dumps(result))  # MedicalZoo's modules print too: this is the last line
    return
  if args.medzoo:
    import medzoo_peer  # pylint: disable=g-import-not-at-top
    medzoo_peer.import_class(args.medzoo, "VNET")  # a bad path fails here, before any run

  def child(*flags) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *flags, "--size", str(args.size),
           "--batch", str(args.batch), "--warmup", str(args.warmup),
           "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])

  rows = []
  for name in [m.strip().upper() for m in args.models.split(",") if m.strip()]:
    with tempfile.TemporaryDirectory(prefix="medjax_models_") as peer_dir:
      peer = args.medzoo and name in _peer_models()
      row = child("--worker", name, "--conv_method", args.conv_method,
                  *(("--peer_dir", peer_dir) if peer else ()))
      row.setdefault("model", name)
      if peer and "error" not in row:
        row["medzoo"] = child("--worker_torch", name, "--medzoo", args.medzoo,
                              "--peer_dir", peer_dir)
      rows.append(row)
    print(_format_table(rows[-1:]).splitlines()[-1], flush=True)
  device = next((r["device"] for r in rows if "device" in r), "?")
  print(f"\nbatch {args.batch}, {args.size}^3 x {NUM_MODALITIES} modalities, {NUM_CLASSES} "
        f"classes, device {device}; median of {args.repeats} after {args.warmup} warm-up; peak "
        "memory = peak RSS over the train steps (CPU) or peak device bytes (accelerator); "
        "compiling = peak RSS while compiling the train step.")
  print(_format_table(rows))
  if any("medzoo" in r for r in rows):
    print(f"\nAgainst MedicalZoo's own PyTorch modules ({args.medzoo}), same weights and input; "
          "times and peak as medjax / MedicalZoo; max |dlogit|: the largest difference of their "
          "eval-mode logits.")
    print(_format_peer_table(rows))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
