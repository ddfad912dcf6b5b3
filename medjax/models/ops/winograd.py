"""Winograd's minimal filtering along depth, F(m, kd), for a SAME, stride-1 3D convolution: m
output slices from m + kd - 1 input slices with m + kd - 1 2D convolutions instead of m * kd (for
kd = 3 and m = 4: 6 instead of 12, half the multiplications; for kd = 5: 8 instead of 20). The
transforms are sums of slices with small exact coefficients (interpolation points 0, +-1, +-2,
+-1/2 and infinity), so float32 results stay within a few 1e-6 of the direct sum for kd = 3
(relative to the largest output); larger m saves little more and loses accuracy.
Dispatched by `conv.conv3d` ('winograd').
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from medjax.models.ops import conv2d as conv2d_lib
from medjax.models.ops import tiling

_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5)


@functools.lru_cache(maxsize=None)
def matrices(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(A^T [m, a], G [a, r], B^T [a, a])` with a = m + r - 1, such that for any kernel g [r] and
  input d [a]: `A^T ((G g) * (B^T d)) = y`, `y[i] = sum_k g[k] d[i + k]` (Toom-Cook construction
  on the points `_POINTS[:a - 1]` and infinity; B^T solved from the identity)."""
  a = m + r - 1
  if a - 1 > len(_POINTS):
    raise ValueError(f"Winograd F({m}, {r}) needs {a - 1} interpolation points; "
                     f"{len(_POINTS)} are defined.")
  p = np.asarray(_POINTS[:a - 1])
  at = np.zeros((m, a))
  at[:, :-1] = p[None, :] ** np.arange(m)[:, None]
  at[-1, -1] = 1.0
  g = np.zeros((a, r))
  for j in range(a - 1):
    g[j] = p[j] ** np.arange(r) / np.prod([p[j] - p[k] for k in range(a - 1) if k != j])
  g[-1, -1] = 1.0
  # sum_j at[i, j] g[j, k] bt[j, t] = [t == i + k] for all i, k, t: linear in bt.
  system = np.einsum("ij,jk,tu->iktju", at, g, np.eye(a)).reshape(m * r * a, a * a)
  target = np.stack([np.eye(a)[i + k] for i in range(m) for k in range(r)]).reshape(-1)
  bt = np.linalg.lstsq(system, target, rcond=None)[0].reshape(a, a)
  bt = np.where(np.abs(bt) < 1e-9, 0.0, np.round(bt, 9))
  if not np.allclose(system @ bt.reshape(-1), target, atol=1e-9):
    raise AssertionError(f"Winograd F({m}, {r}) matrices do not solve the identity.")
  return at, g, bt


def _combine(weights: np.ndarray, terms: Sequence[jax.Array]) -> jax.Array:
  """`sum_t weights[t] * terms[t]`, skipping zero weights (at least one must be non-zero)."""
  parts = [t if w == 1 else (-t if w == -1 else float(w) * t)
           for w, t in zip(weights, terms) if w != 0]
  return functools.reduce(jnp.add, parts)


def block_size(d: int) -> int:
  """Output slices per Winograd block for depth d: 4 (half the 2D work of the direct sum for
  3-tap kernels), 2 for depth 2 or 3 (less zero padding)."""
  return 4 if d >= 4 else 2


Segment = tuple[int, int, int]  # (volume, first block, end block)


def _pieces(b: int, n: int, slice_bytes: int, m: int,
            backward: bool = False) -> list[tuple[Segment, ...]]:
  """The n Winograd blocks of each of b volumes, taken in order (volume by volume) and cut into
  `tiling.piece_count` near-equal pieces (each piece's 2D convolutions read at most
  `tiling.PIECE_BYTES`, or about twice that in the backward pass). A piece may span volumes: it
  is then a few `(volume, first block, end block)` segments whose blocks run through one set of
  2D convolutions. Small volumes of a batch thus share their convolutions: half the compiled
  2D convolutions for the quickstart's batch of 2 (a shorter compile, the same step time within
  the measurements' noise), the same pieces as before at batch 1."""
  count = tiling.piece_count(b * n, m * slice_bytes, backward)
  bounds = [round(i * b * n / count) for i in range(count + 1)]
  pieces = []
  for start, end in zip(bounds[:-1], bounds[1:]):
    pieces.append(tuple((v, max(start, v * n) - v * n, min(end, (v + 1) * n) - v * n)
                        for v in range(start // n, -(-end // n))))
  return pieces


def _inputs(xs: Sequence[jax.Array], m: int, kd: int, piece: Sequence[Segment],
            bt: np.ndarray) -> list[jax.Array]:
  """The a = m + kd - 1 transformed inputs `[blocks, H, W, C]` of the blocks of `piece` (its
  segments' blocks in order): `u_j[i] = sum_t bt[j, t] x_padded[m * i + t]` (each volume of x
  padded in depth by kd // 2 zero slices before and enough after to fill its last block), x the
  concatenation of `xs` along the channels (made here for the piece only)."""
  d = xs[0].shape[1]
  n = -(-d // m)
  pd = kd // 2
  after = n * m - d + pd
  period = pd + d + after
  windows = [[] for _ in range(m + kd - 1)]
  for v, i0, i1 in piece:
    r0, r1 = v * period + m * i0, v * period + m * i1 + kd - 1
    rows = tiling.concat([tiling.slab_or_zeros(x, pd, after, r0, r1) for x in xs])
    for t, window in enumerate(windows):
      window.append(rows[t:t + m * (i1 - i0):m])
  window = [tiling.concat_rows(parts) for parts in windows]
  return [_combine(bt[j], window) for j in range(m + kd - 1)]


def winograd_conv(xs: Sequence[jax.Array], kernel: jax.Array,
                  backward: bool = False) -> jax.Array:
  """SAME, stride-1 3D convolution (see `conv.conv3d`) of the channel concatenation of `xs` with
  Winograd F(m, kd) along depth and XLA's 2D convolution over (H, W): per block of m output
  slices, `y[m i + r] = sum_j at[r, j] conv2d(u_j[i], k_j)` with `k_j = sum_a g[j, a]
  kernel[a]`, in pieces of blocks."""
  kd, kh, kw, _, o = kernel.shape
  b, d, h, w, _ = xs[0].shape
  m = block_size(d)
  at, g, bt = matrices(m, kd)
  n = -(-d // m)
  pads = (kh // 2, kw // 2)
  kernels = [_combine(g[j], list(kernel)) for j in range(m + kd - 1)]
  volumes, outs = [[] for _ in range(b)], []
  for piece in _pieces(b, n, tiling.slice_bytes(xs), m, backward):
    src = tiling.after_in_flight(xs, outs)
    products = [conv2d_lib.conv2d(u, k, pads) for u, k in
                zip(_inputs(src, m, kd, piece, bt), kernels)]
    out = jnp.stack([_combine(at[r], products) for r in range(m)], axis=1)  # [blocks, m, ...]
    outs.append(out)
    start = 0
    for v, i0, i1 in piece:
      volumes[v].append(out[start:start + i1 - i0].reshape((i1 - i0) * m, h, w, o))
      start += i1 - i0
  y = jnp.stack([tiling.concat_rows(parts) for parts in volumes])
  return y[:, :d]


def winograd_kernel_grad(xs: Sequence[jax.Array], g_out: jax.Array,
                         kernel_shape: Sequence[int]) -> jax.Array:
  """Kernel gradient of `winograd_conv` for output gradient `g_out` `[B, D, H, W, O]`: the
  transpose of its Winograd form, `dk[a] = sum_j g[j, a] dk_j` with `dk_j` the 2D kernel gradient
  of `u_j` against `dm_j[i] = sum_r at[r, j] g_out[m i + r]`."""
  kd, kh, kw, _, o = kernel_shape
  b, d, h, w, _ = xs[0].shape
  m = block_size(d)
  at, g, bt = matrices(m, kd)
  n = -(-d // m)
  sums, parts = None, []
  for piece in _pieces(b, n, tiling.slice_bytes(xs), m, backward=True):
    # Not before g_out exists (else XLA makes these copies in the forward pass), and at most
    # `IN_FLIGHT` pieces at a time.
    src = tiling.after_in_flight(xs, parts, g_out)
    grads = tiling.concat_rows([
        tiling.slab_or_zeros(g_out, 0, n * m - d, v * n * m + m * i0, v * n * m + m * i1)
        for v, i0, i1 in piece])
    grads = grads.reshape(-1, m, h, w, o)
    piece_grads = []
    for j, u in enumerate(_inputs(src, m, kd, piece, bt)):
      dm = _combine(at[:, j], [grads[:, r] for r in range(m)])
      piece_grads.append(conv2d_lib.conv2d_kernel_grad(u, dm, (kh, kw)))
    parts.append(piece_grads[-1])
    sums = piece_grads if sums is None else [s + p for s, p in zip(sums, piece_grads)]
  return jnp.stack([_combine(g[:, a], sums) for a in range(kd)])
