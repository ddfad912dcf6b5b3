"""How the 2D convolutions of a 3D convolution are cut into pieces of depth slices ("rows"), and
`tie`, which orders XLA's work. Used by `conv2d` and `winograd`.

Measured (2-core AVX-512 CPU, jaxlib 0.10.2, whose CPU backend runs 2D convolutions through
YNNPACK): one 2D convolution over a 64^3 x 64 volume runs at ~75 GFLOP/s, pieces of one to four
64 x 64 slices at 130-190 GFLOP/s when two run at a time (one per core); all at once or one after
the other they are slower, and all at once they also pile up their temporaries. So a piece holds
at most `PIECE_BYTES` of input and piece i starts after piece i - `IN_FLIGHT` is done (`tie`).
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# For the whole paper U-Net train step, 4, 8 and 16 MiB pieces were within 6 % of each other
# (32 MiB: 8 % slower with Winograd); every piece is a few more compiled kernels, and XLA keeps
# 0.5-1.25 MB of memory per compiled kernel, so 8 MiB.
PIECE_BYTES = 8 * 2**20
# The backward pass (input and kernel gradients) runs in half as many pieces (but never fewer than
# `IN_FLIGHT` where the forward pass has that many, so both cores stay busy): half the compiled
# kernels there, for ~100 MB less resident executable with the paper U-Net's train step (16 MiB
# pieces everywhere made the forward pass 20 % slower).
BACKWARD_PIECE_FACTOR = 2
IN_FLIGHT = 2
# More pieces per convolution make XLA's algebraic simplifier give up on the chain of updates
# that assembles the output (it logs "stuck in a circular simplification loop" at 64).
MAX_PIECES = 32


def piece_count(units: int, unit_bytes: int, backward: bool) -> int:
  """How many pieces `units` units of `unit_bytes` each are cut into: pieces of at most
  `PIECE_BYTES` (at least one unit), at most `MAX_PIECES`; for the backward pass half as many,
  but at least `min(forward count, IN_FLIGHT)`."""
  count = min(MAX_PIECES, -(-units // max(1, PIECE_BYTES // unit_bytes)))
  if backward:
    count = max(-(-count // BACKWARD_PIECE_FACTOR), min(count, IN_FLIGHT))
  return count


def row_pieces(num_rows: int, row_bytes: int, backward: bool = False) -> list[tuple[int, int]]:
  """Splits rows [0, num_rows) into `piece_count` near-equal contiguous pieces."""
  pieces = piece_count(num_rows, row_bytes, backward)
  bounds = [round(i * num_rows / pieces) for i in range(pieces + 1)]
  return list(zip(bounds[:-1], bounds[1:]))


def tie(x: jax.Array, *deps: jax.Array) -> jax.Array:
  """`x`, data-dependent on `deps` (`x + 0 * dep[0]`), so that XLA computes what is made from it
  only after `deps`. XLA's CPU scheduler otherwise starts independent work early: all pieces of
  a convolution at once, and the kernel gradients' layout copies of the inputs already in the
  forward pass, where they live until the backward pass (~0.5 GB of XLA temporaries for the
  paper U-Net's train step at 64^3).
  (`lax.optimization_barrier` does not survive XLA's CPU pipeline.) The addition fuses into the
  copy that makes a piece. A non-finite first element of a dependency makes `x` non-finite;
  dependencies are outputs and gradients, which are then non-finite anyway."""
  for dep in deps:
    x = x + (dep.reshape(-1)[0] * 0).astype(x.dtype)
  return x


def tie_all(xs: Sequence[jax.Array], *deps: jax.Array) -> tuple[jax.Array, ...]:
  """`tie` of each of `xs` to `deps`."""
  return tuple(tie(x, *deps) for x in xs)


def after_in_flight(xs: Sequence[jax.Array], done: Sequence[jax.Array],
                    *deps: jax.Array) -> tuple[jax.Array, ...]:
  """`xs` tied to `deps` and to the piece `IN_FLIGHT` before the next one (if there is one), so
  that at most `IN_FLIGHT` pieces run at a time."""
  deps = deps + ((done[-IN_FLIGHT],) if len(done) >= IN_FLIGHT else ())
  return tie_all(xs, *deps) if deps else tuple(xs)


def slab(x: jax.Array, before: int, after: int, r0: int, r1: int) -> jax.Array | None:
  """Rows [r0, r1) of `x` `[B, D, H, W, C]` seen as `[B * (before + D + after), H, W, C]` "rows":
  every volume preceded by `before` and followed by `after` zero slices. Built from slices of
  `x` and zero blocks, without copying the whole padded array; None if all rows are zero."""
  _, d, h, w, c = x.shape
  period = before + d + after
  parts, r, nonzero = [], r0, False
  while r < r1:
    volume, j = divmod(r, period)
    if before <= j < before + d:
      n = min(before + d - j, r1 - r)
      parts.append(x[volume, j - before:j - before + n])
      nonzero = True
    else:
      n = min((before - j) if j < before else (period - j), r1 - r)
      parts.append(jnp.zeros((n, h, w, c), x.dtype))
    r += n
  if not nonzero:
    return None
  return concat_rows(parts)


def slab_or_zeros(x: jax.Array, before: int, after: int, r0: int, r1: int) -> jax.Array:
  """`slab`, or zeros `[r1 - r0, H, W, C]` where all its rows are padding."""
  rows = slab(x, before, after, r0, r1)
  return rows if rows is not None else jnp.zeros((r1 - r0, *x.shape[2:]), x.dtype)


def concat(xs: Sequence[jax.Array]) -> jax.Array:
  """The channel concatenation of `xs` (`xs[0]` itself if alone)."""
  return xs[0] if len(xs) == 1 else jnp.concatenate(xs, axis=-1)


def concat_rows(parts: Sequence[jax.Array]) -> jax.Array:
  """`parts` one after the other along the first axis (`parts[0]` itself if alone)."""
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts)


def slice_bytes(xs: Sequence[jax.Array]) -> int:
  """Bytes of one depth slice of the channel concatenation of `xs` (`[B, D, H, W, C_i]`)."""
  return sum(int(np.prod(x.shape[2:])) * x.dtype.itemsize for x in xs)
