r"""Every 3x3x3 convolution of the 3D U-Net, one at a time: medjax's `conv3d` methods against
PyTorch's `conv3d` (forward, and forward + backward with input and kernel gradients).

  python benchmarks/conv_layers.py [--base_features 32] [--size 64] [--methods auto,sum,xla] \
      [--repeats 5] [--skip_torch]

Prints, per layer (spatial size, C -> O), the median time of each method and of PyTorch and the
ratio medjax ('auto') / PyTorch, then the totals. Both frameworks run in this process, one after
the other, with every core (torch: `set_num_threads(os.cpu_count())`). The first layer's input
gradient is not computed (the data needs none), as in training. The network's own benchmark is
benchmarks/unet3d.py; this one shows which layers the time goes to.
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from medjax.models.ops import conv as conv_lib
from models import timed_median  # benchmarks/models.py (this script's folder is on sys.path)


def unet_layers(base: int, size: int) -> list[tuple[int, int, int]]:
  """(spatial size, C, O) of the 3x3x3 convolutions of UNet3D (4 levels, 2 modalities)."""
  b, s = base, size
  return [(s, 2, b), (s, b, 2 * b), (s // 2, 2 * b, 2 * b), (s // 2, 2 * b, 4 * b),
          (s // 4, 4 * b, 4 * b), (s // 4, 4 * b, 8 * b), (s // 8, 8 * b, 8 * b),
          (s // 8, 8 * b, 16 * b), (s // 4, 24 * b, 8 * b), (s // 4, 8 * b, 8 * b),
          (s // 2, 12 * b, 4 * b), (s // 2, 4 * b, 4 * b), (s, 6 * b, 2 * b), (s, 2 * b, 2 * b)]


def time_medjax(method: str, x, kernel, g, input_grad: bool, repeats: int) -> tuple[float, float]:
  forward = jax.jit(lambda x, k: conv_lib.conv3d(x, k, method=method))

  @jax.jit
  def forward_backward(x, k, g):
    y, vjp = jax.vjp(lambda x, k: conv_lib.conv3d(x, k, method=method), x, k)
    dx, dk = vjp(g)
    return (y, dx, dk) if input_grad else (y, dk)

  return (timed_median(lambda: forward(x, kernel).block_until_ready(), 1, repeats),
          timed_median(lambda: jax.block_until_ready(forward_backward(x, kernel, g)), 1,
                       repeats))


def time_torch(x, kernel, g, input_grad: bool, repeats: int) -> tuple[float, float]:
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  tx = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).requires_grad_(input_grad)
  tw = torch.from_numpy(np.transpose(kernel, (4, 3, 0, 1, 2)).copy()).requires_grad_(True)
  tg = torch.from_numpy(np.moveaxis(g, -1, 1).copy())

  def forward():
    with torch.no_grad():
      torch.nn.functional.conv3d(tx, tw, padding=1)

  def forward_backward():
    torch.nn.functional.conv3d(tx, tw, padding=1).backward(tg)
    tw.grad = None
    tx.grad = None

  return timed_median(forward, 1, repeats), timed_median(forward_backward, 1, repeats)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--base_features", type=int, default=32)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--methods", default="auto,sum,xla",
                      help=f"comma-separated, from {conv_lib.METHODS}")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--skip_torch", action="store_true")
  args = parser.parse_args()
  methods = args.methods.split(",")
  rng = np.random.default_rng(0)
  totals = {name: [0.0, 0.0] for name in methods + ["torch"]}
  header = "layer".ljust(18) + "".join(f"{name + ' fwd':>11}{name + ' f+b':>11}"
                                       for name in totals if name != "torch" or not args.skip_torch)
  print(f"UNet3D base {args.base_features}, {args.size}^3, batch 1, float32, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; median of {args.repeats} "
        f"(seconds)\n{header}" + ("" if args.skip_torch else f"{'auto/torch fwd':>16}{'f+b':>7}"))
  for s, c, o in unet_layers(args.base_features, args.size):
    x = rng.normal(size=(1, s, s, s, c)).astype(np.float32)
    kernel = (rng.normal(size=(3, 3, 3, c, o)) / np.sqrt(27 * c)).astype(np.float32)
    g = rng.normal(size=(1, s, s, s, o)).astype(np.float32)
    input_grad = c > 2
    row = {name: time_medjax(name, jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(g),
                             input_grad, args.repeats) for name in methods}
    if not args.skip_torch:
      row["torch"] = time_torch(x, kernel, g, input_grad, args.repeats)
    line = f"{s:>3}^3 {c:>4} -> {o:<4}   " + "".join(f"{f:>11.4f}{fb:>11.4f}"
                                                   for f, fb in row.values())
    if "torch" in row and "auto" in row:
      line += f"{row['auto'][0] / row['torch'][0]:>16.2f}{row['auto'][1] / row['torch'][1]:>7.2f}"
    print(line, flush=True)
    for name, (f, fb) in row.items():
      totals[name][0] += f
      totals[name][1] += fb
  line = "total".ljust(18) + "".join(f"{f:>11.3f}{fb:>11.3f}" for name, (f, fb) in totals.items()
                                     if name != "torch" or not args.skip_torch)
  if not args.skip_torch and "auto" in totals:
    line += (f"{totals['auto'][0] / totals['torch'][0]:>16.2f}"
             f"{totals['auto'][1] / totals['torch'][1]:>7.2f}")
  print(line)


if __name__ == "__main__":
  main()
