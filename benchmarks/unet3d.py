r"""medjax's 3D U-Net against a PyTorch twin: forward, train step, compile time, peak memory.

  python benchmarks/unet3d.py [--base_features 32] [--size 64] [--batch 1] [--repeats 5] \
      [--warmup 1] [--conv_method auto] [--dtype float32] [--remat] [--compile_cache DIR] \
      [--skip_torch] [--json F]

One invocation runs two child processes side by side, one per framework, so that each one's
peak memory is its own: medjax's `UNet3D` (`medjax.models.unet3d`) and `UNet3DTorch` below, the
same network in PyTorch (3x3x3 conv with bias -> BatchNorm3d (eps 1e-5, momentum 0.1) -> ReLU,
2x2x2 max-pool, ConvTranspose3d 2/2 with skip concatenation, 1x1x1 classifier), started from the
same weights (medjax's are copied into the twin). Both use every core
(`torch.set_num_threads(os.cpu_count())`; XLA's CPU client does by default), one random
two-modality batch `[batch, size, size, size, 2]` with 4 classes, float32.

* compile: medjax's `jit(...).lower(...).compile()` of the forward and of the train step (with
  `--compile_cache DIR`, through `medjax.compile_cache.enable(DIR)`: run twice to see a second
  process load the executables instead of compiling them); for PyTorch's forward, the first call
  (oneDNN primitive creation) minus a warm call. "time to first step" is compile + first step.
* forward: `apply(..., train=False)` / `model.eval()` under `torch.inference_mode()`.
* train step: forward in train mode (batch statistics, running averages updated), the soft Dice
  loss `1 - mean_{b,c} (2 sum p t + 1e-5) / (sum p + sum t + 1e-5)` of the softmax (medjax's
  `losses.dice_loss` defaults, written again in torch for the twin), backward, and SGD with
  momentum 0.5 (`optax.sgd` / `torch.optim.SGD`), the parameters and optimiser state donated.
* timing: `warmup` untimed calls, then `repeats` timed calls, alternating medjax and PyTorch
  call by call (so both see the same machine load); the median of each and their ratio.
* peak memory: the child's peak resident set size (`VmHWM`) while it runs train steps (reset
  through `/proc/self/clear_refs` once the step is compiled; it includes the interpreter, the
  libraries, the weights and the compiled executable), the resident size just before, and the
  peak while compiling the train step.
* agreement: max |logits difference| of the two forwards (same weights, same input) and the
  two first-step losses, to show that the twin computes the same function.

Not a test: at the paper width (base 32) a train step takes seconds to tens of seconds on a
2-core CPU; use `--repeats 2` while iterating.
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
import torch_unet3d  # benchmarks/torch_unet3d.py

NUM_CLASSES = torch_unet3d.NUM_CLASSES
NUM_MODALITIES = torch_unet3d.NUM_MODALITIES
LEARNING_RATE = 1e-3
MOMENTUM = 0.5


# ---------------------------------------------------------------------------------------------
# Workers: each answers one JSON line per command read from stdin.


class _MedjaxWorker:
  """Builds medjax's UNet3D with numpy-drawn weights (saved for the twin) and runs it."""

  def __init__(self, args, workdir: str):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top
    from medjax import compile_cache  # pylint: disable=g-import-not-at-top
    from medjax import compile_options  # pylint: disable=g-import-not-at-top
    from medjax import losses  # pylint: disable=g-import-not-at-top
    from medjax.models import unet3d  # pylint: disable=g-import-not-at-top
    self.jax = jax
    self.trim = not args.keep_compiler_memory
    self.release_compiler_memory = compile_cache.release_compiler_memory
    if args.compile_cache:
      compile_cache.enable(args.compile_cache)
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
    self.model = unet3d.UNet3D(num_classes=NUM_CLASSES, base_features=args.base_features,
                               conv_method=args.conv_method, dtype=dtype, remat=args.remat)
    shape = (args.batch, args.size, args.size, args.size, NUM_MODALITIES)
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=shape[:-1]).astype(np.int32)
    variables = self._numpy_variables(shape, rng)
    flat = {jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(variables)}
    np.savez(os.path.join(workdir, "weights.npz"), **flat)
    np.save(os.path.join(workdir, "x.npy"), x)
    np.save(os.path.join(workdir, "labels.npy"), labels)
    self.x, self.labels = jnp.asarray(x), jnp.asarray(labels)
    self.variables = jax.tree.map(jnp.asarray, variables)
    self.num_params = sum(v.size for v in jax.tree.leaves(variables["params"]))
    self.tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
    model, tx = self.model, self.tx

    def forward(variables, x):
      return model.apply(variables, x, train=False)

    def train_step(params, batch_stats, opt_state, x, labels):
      def loss_fn(p):
        logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                      mutable=["batch_stats"])
        return losses.dice_loss(logits, labels), updates["batch_stats"]
      (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    # medjax's own compiler options (medjax.compile_options), as train_lib and inference use;
    # --xla_defaults compiles with XLA's defaults instead.
    options = None if args.xla_defaults else compile_options.for_backend()
    self.forward_fn = jax.jit(forward, compiler_options=options)
    self.train_fn = jax.jit(train_step, donate_argnums=(0, 1, 2), compiler_options=options)
    self.forward_exe = self.train_exe = None
    self.state = None

  def _numpy_variables(self, shape, rng) -> dict:
    """He-normal kernels, small random biases, BatchNorm scale ~1 and running stats (0, 1).

    Drawn with numpy: XLA compiles jax's random sampler for every new parameter shape, which
    takes about a minute for this network on a 2-core CPU and is not what is measured here.
    """
    jax = self.jax
    shapes = jax.eval_shape(
        lambda: self.model.init(jax.random.key(0), np.zeros(shape, np.float32), train=False))

    def fill(path, leaf):
      name = jax.tree_util.keystr(path)
      if "batch_stats" in name:
        value = np.zeros(leaf.shape) if name.endswith("['mean']") else np.ones(leaf.shape)
      elif name.endswith("['kernel']"):
        value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
      elif name.endswith("['scale']"):
        value = 1.0 + 0.1 * rng.normal(size=leaf.shape)
      else:
        value = 0.01 * rng.normal(size=leaf.shape)
      return np.asarray(value, np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)

  def compile_forward(self) -> dict:
    start = time.perf_counter()
    self.forward_exe = self.forward_fn.lower(self.variables, self.x).compile()
    return {"compile_s": time.perf_counter() - start}

  def forward(self) -> dict:
    start = time.perf_counter()
    logits = self.jax.block_until_ready(self.forward_exe(self.variables, self.x))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "logits": np.asarray(logits, np.float32)}

  def start_train(self) -> dict:
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    jax = self.jax
    # Training is measured without the forward executable: drop it, and JAX's compilation caches,
    # which would keep it alive (~100 MB at base 32).
    self.forward_exe = None
    jax.clear_caches()
    params = self.variables["params"]
    # Own copies: the step donates (overwrites) its parameter and optimiser buffers.
    self.state = (jax.tree.map(jnp.copy, params),
                  jax.tree.map(jnp.copy, self.variables["batch_stats"]), self.tx.init(params))
    del self.variables
    memory.reset_peak_rss()
    start = time.perf_counter()
    self.train_exe = self.train_fn.lower(*self.state, self.x, self.labels).compile()
    compile_s = time.perf_counter() - start
    compile_peak = memory.status_mb("VmHWM")
    if self.trim:
      self.release_compiler_memory()
    analysis = self.train_exe.memory_analysis()
    temp_mb = getattr(analysis, "temp_size_in_bytes", 0) / 2**20 if analysis is not None else -1.0
    # The training peak is measured from here: steps only, not the compiler's own memory (which
    # a process that finds the step in the persistent compilation cache does not spend).
    rss_before = memory.status_mb("VmRSS")
    reset = memory.reset_peak_rss()
    return {"compile_s": compile_s, "rss_before_mb": rss_before, "peak_reset": reset,
            "xla_temp_mb": temp_mb, "compile_peak_rss_mb": compile_peak}

  def train(self) -> dict:
    start = time.perf_counter()
    *state, loss = self.train_exe(*self.state, self.x, self.labels)
    loss = float(loss)  # waits for the step
    seconds = time.perf_counter() - start
    self.state = tuple(state)
    return {"seconds": seconds, "loss": loss}

  def info(self) -> dict:
    return {"version": f"jax {self.jax.__version__}", "params": int(self.num_params),
            "device": str(self.jax.devices()[0].device_kind)}


class _TorchWorker:
  """The twin, loaded with the medjax worker's weights."""

  def __init__(self, args, workdir: str):
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    torch.set_num_threads(os.cpu_count())
    self.model = torch_unet3d.build(args.base_features)
    torch_unet3d.copy_weights(self.model, dict(np.load(os.path.join(workdir, "weights.npz"))))
    x = np.load(os.path.join(workdir, "x.npy"))
    self.x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
    self.labels = torch.from_numpy(np.load(os.path.join(workdir, "labels.npy")).astype(np.int64))
    self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE,
                                     momentum=MOMENTUM)
    self.num_params = sum(p.numel() for p in self.model.parameters())

  def _forward_once(self):
    self.model.eval()
    with self.torch.inference_mode():
      return self.model(self.x)

  def compile_forward(self) -> dict:
    start = time.perf_counter()
    self._forward_once()
    first = time.perf_counter() - start
    start = time.perf_counter()
    self._forward_once()
    return {"compile_s": max(0.0, first - (time.perf_counter() - start))}

  def forward(self) -> dict:
    start = time.perf_counter()
    logits = self._forward_once()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "logits": np.moveaxis(logits.numpy(), 1, -1)}

  def _step(self) -> float:
    self.model.train()
    self.optimizer.zero_grad(set_to_none=True)
    loss = torch_unet3d.dice_loss(self.model(self.x), self.labels)
    loss.backward()
    self.optimizer.step()
    return float(loss.detach())

  def start_train(self) -> dict:
    rss_before = memory.status_mb("VmRSS")
    reset = memory.reset_peak_rss()
    # The first step creates oneDNN primitives; it is also the first training step, as for medjax
    # (whose compile does not run a step), so the losses of the first timed steps match.
    return {"compile_s": 0.0, "rss_before_mb": rss_before, "peak_reset": reset,
            "xla_temp_mb": -1.0, "compile_peak_rss_mb": rss_before}

  def train(self) -> dict:
    start = time.perf_counter()
    loss = self._step()
    return {"seconds": time.perf_counter() - start, "loss": loss}

  def info(self) -> dict:
    return {"version": f"torch {self.torch.__version__}", "params": int(self.num_params),
            "device": "cpu"}


def _serve(args) -> None:
  """Child process: builds the worker, then answers commands until 'quit'."""
  worker = (_MedjaxWorker if args.worker == "medjax" else _TorchWorker)(args, args.workdir)
  out = sys.stdout
  sys.stdout = sys.stderr  # library prints must not break the protocol
  out.write(json.dumps({"ready": True, **worker.info()}) + "\n")
  out.flush()
  for line in sys.stdin:
    cmd = line.strip()
    if cmd == "quit":
      break
    reply = getattr(worker, cmd)()
    if "logits" in reply:
      np.save(os.path.join(args.workdir, f"logits_{args.worker}.npy"), reply.pop("logits"))
    reply["rss_mb"], reply["peak_rss_mb"] = memory.status_mb("VmRSS"), memory.status_mb("VmHWM")
    out.write(json.dumps(reply) + "\n")
    out.flush()


class _Child:
  """A worker process spoken to over pipes."""

  def __init__(self, name: str, args, workdir: str):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--workdir", workdir,
           "--base_features", str(args.base_features), "--size", str(args.size),
           "--batch", str(args.batch), "--conv_method", args.conv_method, "--dtype", args.dtype]
    if args.remat:
      cmd.append("--remat")
    if args.compile_cache:
      cmd += ["--compile_cache", args.compile_cache]
    if args.keep_compiler_memory:
      cmd.append("--keep_compiler_memory")
    if args.xla_defaults:
      cmd.append("--xla_defaults")
    self.name = name
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self.info = self._read()

  def _read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"The {self.name} worker exited (code {self.proc.wait()}); see stderr.")
    return json.loads(line)

  def ask(self, cmd: str) -> dict:
    self.proc.stdin.write(cmd + "\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self) -> None:
    self.proc.stdin.write("quit\n")
    self.proc.stdin.close()
    self.proc.wait()


def _phase(children: list[_Child], cmd: str, warmup: int, repeats: int) -> dict[str, dict]:
  """Warm-up calls, then `repeats` timed calls alternating between the children."""
  replies = {c.name: [] for c in children}
  for _ in range(warmup):
    for c in children:
      replies[c.name].append(c.ask(cmd))
  times = {c.name: [] for c in children}
  for _ in range(repeats):
    for c in children:
      reply = c.ask(cmd)
      replies[c.name].append(reply)
      times[c.name].append(reply["seconds"])
  return {name: {"median_s": statistics.median(times[name]), "times_s": times[name],
                 "first": replies[name][0], "last": replies[name][-1]} for name in replies}


def run(args) -> dict:
  """Runs both frameworks; returns the results (also printed)."""
  with tempfile.TemporaryDirectory() as workdir:
    children = [_Child("medjax", args, workdir)]  # first: it writes the weights and the batch
    if not args.skip_torch:
      children.append(_Child("torch", args, workdir))
    result = {"config": {k: v for k, v in vars(args).items() if k not in ("worker", "workdir")},
              "cpu_count": os.cpu_count(), "load_before": os.getloadavg()}
    for c in children:
      result[c.name] = {"info": c.info}
    for c in children:
      result[c.name]["forward_compile_s"] = c.ask("compile_forward")["compile_s"]
    forward = _phase(children, "forward", args.warmup, args.repeats)
    if not args.skip_torch:
      a, b = (np.load(os.path.join(workdir, f"logits_{n}.npy")) for n in ("medjax", "torch"))
      result["max_abs_logit_diff"] = float(np.max(np.abs(a - b)))
      result["max_abs_logit"] = float(np.max(np.abs(b)))
    for c in children:
      result[c.name].update(train_start=c.ask("start_train"))
    train = _phase(children, "train", args.warmup, args.repeats)
    for c in children:
      name = c.name
      result[name].update(
          forward_s=forward[name]["median_s"], forward_times_s=forward[name]["times_s"],
          train_s=train[name]["median_s"], train_times_s=train[name]["times_s"],
          first_loss=train[name]["first"]["loss"],
          first_step_s=train[name]["first"]["seconds"],
          time_to_first_step_s=(result[name]["train_start"]["compile_s"]
                                + train[name]["first"]["seconds"]),
          train_peak_rss_mb=train[name]["last"]["peak_rss_mb"])
      c.close()
    result["load_after"] = os.getloadavg()
  return result


def _report(r: dict) -> str:
  cfg = r["config"]
  names = [n for n in ("medjax", "torch") if n in r]
  lines = [f"UNet3D base {cfg['base_features']} ({r['medjax']['info']['params']:,} params), "
           f"input {cfg['batch']}x{cfg['size']}^3x{NUM_MODALITIES}, {NUM_CLASSES} classes, "
           f"medjax conv_method={cfg['conv_method']} dtype={cfg['dtype']} remat={cfg['remat']} "
           f"compile options {'XLA defaults' if cfg.get('xla_defaults') else 'medjax'}; "
           f"{r['cpu_count']} CPUs, load average {r['load_before'][0]:.1f} before / "
           f"{r['load_after'][0]:.1f} after; median of {cfg['repeats']} after {cfg['warmup']} "
           "warm-up, frameworks alternating call by call.",
           f"{'':28}" + "".join(f"{r[n]['info']['version']:>18}" for n in names)
           + ("   medjax/torch" if len(names) == 2 else "")]

  def row(label: str, key: str, fmt: str, ratio: bool = True) -> None:
    values = [r[n][key] if key in r[n] else r[n]["train_start"][key] for n in names]
    text = f"{label:28}" + "".join(f"{v:>18{fmt}}" for v in values)
    if ratio and len(values) == 2 and values[1] > 0:
      text += f"{values[0] / values[1]:>15.2f}"
    lines.append(text)

  row("forward (s)", "forward_s", ".3f")
  row("train step (s)", "train_s", ".3f")
  row("forward compile (s)", "forward_compile_s", ".1f", ratio=False)
  row("train-step compile (s)", "compile_s", ".1f", ratio=False)
  row("time to first step (s)", "time_to_first_step_s", ".1f")
  row("peak RSS, compiling (MB)", "compile_peak_rss_mb", ".0f")
  row("RSS before steps (MB)", "rss_before_mb", ".0f")
  row("peak RSS, train steps (MB)", "train_peak_rss_mb", ".0f")
  row("first train loss", "first_loss", ".6f", ratio=False)
  if "max_abs_logit_diff" in r:
    lines.append(f"forward logits: max |medjax - torch| = {r['max_abs_logit_diff']:.2e} "
                 f"(max |logit| {r['max_abs_logit']:.2f})")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--base_features", type=int, default=32, help="UNet3D width (paper: 32)")
  parser.add_argument("--size", type=int, default=64, help="cubic input size (divisible by 8)")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--conv_method", default="auto",
                      help="UNet3D conv_method: 'auto' (fast) or 'xla' (nn.Conv's; old name "
                      "'plain'), see medjax.models.ops.conv")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="medjax computation dtype (parameters stay float32)")
  parser.add_argument("--remat", action="store_true", help="UNet3D(remat=True)")
  parser.add_argument("--compile_cache", default="",
                      help="medjax: persistent compilation cache directory (compile_cache.enable)")
  parser.add_argument("--keep_compiler_memory", action="store_true",
                      help="medjax: skip compile_cache.release_compiler_memory() after compiling")
  parser.add_argument("--xla_defaults", action="store_true",
                      help="medjax: compile with XLA's default options, not medjax.compile_options")
  parser.add_argument("--skip_torch", action="store_true", help="medjax only")
  parser.add_argument("--json", default="", help="also write the results to this file")
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    _serve(args)
    return
  if args.repeats < 1 or args.warmup < 0:
    parser.error("--repeats must be >= 1 and --warmup >= 0")
  if args.size % 8:
    parser.error(f"--size must be divisible by 8 (three 2x poolings); got {args.size}")
  result = run(args)
  print(_report(result))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
