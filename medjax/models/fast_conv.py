"""A fast stride-1, SAME 3D convolution for XLA's CPU backend (channels-last, `[B, D, H, W, C]`).

XLA's CPU backend (jaxlib 0.10.2) runs a 3D convolution at about a third of the speed per FLOP of
its 2D convolution (which it hands to YNNPACK), and a third of PyTorch's. `conv3d` computes the
same sum through 2D convolutions over (H, W):

* 'winograd' (the CPU default): Winograd's minimal filtering F(4, 3) along depth, i.e. 6 2D
  convolutions per 4 output slices instead of 12; half the multiplications of the direct sum;
* 'sum', 'fold_in', 'fold_out': the direct sum over the depth taps in three layouts;
* 'xla': XLA's own 3D convolution (the default on GPU/TPU, whose libraries do 3D well).

Each 2D method has its own backward pass (`jax.custom_vjp`), runs its 2D convolutions on pieces of
a few depth slices, two at a time (1.5-2x faster on a 2-core CPU than one convolution over the
whole volume), and keeps only `x` and `kernel` for the backward pass. `Conv3D` is the layer, with
the parameters of `nn.Conv`. Measured figures: benchmarks/README.md.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

Dtype = Any

CONV_METHODS = ("auto", "winograd", "fold_in", "fold_out", "sum", "xla")


def _conv2d(x: jax.Array, kernel: jax.Array, pads: tuple[int, int]) -> jax.Array:
  """Stride-1 2D convolution: `[N, H, W, C]` * `[kh, kw, C, O]` -> `[N, H', W', O]`."""
  return lax.conv_general_dilated(x, kernel, (1, 1), [(pads[0], pads[0]), (pads[1], pads[1])],
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


# How the 2D convolutions are cut up (measured on a 2-core AVX-512 CPU, jaxlib 0.10.2, whose CPU
# backend runs 2D convolutions through YNNPACK): one 2D convolution over a 64^3 x 64 volume runs
# at ~75 GFLOP/s, pieces of one to four 64 x 64 slices at 130-190 GFLOP/s when two run at a time
# (one per core); all at once or one after the other they are slower, and all at once they also
# pile up their temporaries. So a piece holds at most `_PIECE_BYTES` of input and piece i starts
# after piece i - `_IN_FLIGHT` is done (`tie`). For the whole paper U-Net train step, 4, 8 and
# 16 MiB pieces were within 6 % of each other (32 MiB: 8 % slower with Winograd); every piece is
# a few more compiled kernels, and XLA keeps 0.5-1.25 MB of memory per compiled kernel, so 8 MiB.
_PIECE_BYTES = 8 * 2**20
# The backward pass (input and kernel gradients) runs in half as many pieces (but never fewer than
# `_IN_FLIGHT` where the forward pass has that many, so both cores stay busy): half the compiled
# kernels there, for ~100 MB less resident executable with the paper U-Net's train step (16 MiB
# pieces everywhere made the forward pass 20 % slower).
_BACKWARD_PIECE_FACTOR = 2
_IN_FLIGHT = 2
# More pieces per convolution make XLA's algebraic simplifier give up on the chain of updates
# that assembles the output (it logs "stuck in a circular simplification loop" at 64).
_MAX_PIECES = 32


def _piece_count(units: int, unit_bytes: int, backward: bool) -> int:
  """How many pieces `units` units of `unit_bytes` each are cut into: pieces of at most
  `_PIECE_BYTES` (at least one unit), at most `_MAX_PIECES`; for the backward pass half as many,
  but at least `min(forward count, _IN_FLIGHT)`."""
  count = min(_MAX_PIECES, -(-units // max(1, _PIECE_BYTES // unit_bytes)))
  if backward:
    count = max(-(-count // _BACKWARD_PIECE_FACTOR), min(count, _IN_FLIGHT))
  return count


def _row_pieces(num_rows: int, row_bytes: int, backward: bool = False) -> list[tuple[int, int]]:
  """Splits rows [0, num_rows) into `_piece_count` near-equal contiguous pieces."""
  pieces = _piece_count(num_rows, row_bytes, backward)
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


def _slab(x: jax.Array, before: int, after: int, r0: int, r1: int) -> jax.Array | None:
  """Rows [r0, r1) of `x` `[B, D, H, W, C]` seen as `[B * (before + D + after), H, W, C]` "rows":
  every volume preceded by `before` and followed by `after` zero slices. Built from slices of
  `x` and zero blocks, without copying the whole padded array; None if all rows are zero."""
  b, d, h, w, c = x.shape
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
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts)


def _slab_or_zeros(x: jax.Array, before: int, after: int, r0: int, r1: int) -> jax.Array:
  rows = _slab(x, before, after, r0, r1)
  return rows if rows is not None else jnp.zeros((r1 - r0, *x.shape[2:]), x.dtype)


def _rows_conv(x: jax.Array, kernel: jax.Array, method: str,
               backward: bool = False) -> jax.Array:
  """SAME, stride-1 3D convolution `[B, D, H, W, C]` -> `[B, D, H, W, O]` (see `conv3d`) through
  2D convolutions over (H, W) of the rows of `x` padded in depth (`_slab`):
  `out[r] = sum_a conv2d(rows[r + a], kernel[a])`, computed in pieces of rows. Output row
  `b * (D + 2 pd) + j` is slice j of volume b for j < D; the 2 pd rows between volumes mix two
  volumes and are dropped."""
  kd, kh, kw, c, o = kernel.shape
  b, d, h, w, _ = x.shape
  pd, pads = kd // 2, (kh // 2, kw // 2)
  period = d + 2 * pd
  if method == "fold_in":
    k_in = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kd * c, o)
  elif method == "fold_out":
    k_out = kernel.transpose(1, 2, 3, 0, 4).reshape(kh, kw, c, kd * o)
  elif method != "sum":
    raise ValueError(f"Unknown 2D formulation {method!r}.")
  num_rows = b * period - 2 * pd
  row_bytes = x[0, 0].size * x.dtype.itemsize * (kd if method == "fold_in" else 1)
  pieces = _row_pieces(num_rows, row_bytes, backward)
  y = jnp.zeros((num_rows, h, w, o), x.dtype) if len(pieces) > 1 else None
  outs = []
  for r0, r1 in pieces:
    src = tie(x, outs[-_IN_FLIGHT]) if len(outs) >= _IN_FLIGHT else x
    if method == "fold_in":  # the kd shifted rows side by side in the channels
      taps = jnp.concatenate([_slab_or_zeros(src, pd, pd, r0 + a, r1 + a) for a in range(kd)],
                             axis=-1)
      out = _conv2d(taps, k_in, pads)
    elif method == "fold_out":  # kd output blocks, each shifted back by its tap
      z = _conv2d(_slab_or_zeros(src, pd, pd, r0, r1 + kd - 1), k_out, pads)
      z = z.reshape(r1 - r0 + kd - 1, h, w, kd, o)
      out = functools.reduce(jnp.add, [z[a:a + r1 - r0, :, :, a] for a in range(kd)])
    else:  # taps whose rows are all padding contribute nothing
      terms = [(_slab(src, pd, pd, r0 + a, r1 + a), kernel[a]) for a in range(kd)]
      out = functools.reduce(jnp.add, [_conv2d(rows, k, pads) for rows, k in terms
                                       if rows is not None])
    outs.append(out)
    # In-place updates of one buffer, not a concatenation: XLA's CPU concatenation of many
    # pieces costs as much as the convolutions.
    y = out if y is None else lax.dynamic_update_slice_in_dim(y, out, r0, axis=0)
  if b > 1 and pd > 0:
    y = jnp.pad(y, [(0, 2 * pd), (0, 0), (0, 0), (0, 0)]).reshape(b, period, h, w, o)[:, :d]
  return y.reshape(b, d, h, w, o)


def _rows_kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: Sequence[int]) -> jax.Array:
  """Kernel gradient of `_rows_conv` for output gradient `g` `[B, D, H, W, O]`:
  `dk[a] = sum_r conv2d_kernel_grad(rows[r + a], g_rows[r])`, one 2D kernel gradient of the kd
  shifted rows side by side per piece of rows, accumulated."""
  kd, kh, kw, c, o = kernel_shape
  b, d, h, w, _ = x.shape
  pd, pads = kd // 2, (kh // 2, kw // 2)
  k_struct = jax.ShapeDtypeStruct((kh, kw, kd * c, o), g.dtype)
  parts, dk = [], None
  for r0, r1 in _row_pieces(b * (d + 2 * pd) - 2 * pd, kd * x[0, 0].size * x.dtype.itemsize,
                            backward=True):
    # Not before g exists (else XLA makes these copies in the forward pass), and at most
    # `_IN_FLIGHT` pieces at a time.
    src = tie(x, g, *([parts[-_IN_FLIGHT]] if len(parts) >= _IN_FLIGHT else []))
    taps = jnp.concatenate([_slab_or_zeros(src, pd, pd, r0 + a, r1 + a) for a in range(kd)],
                           axis=-1)
    transpose = jax.linear_transpose(lambda k, taps=taps: _conv2d(taps, k, pads), k_struct)
    # Output-gradient rows laid out as the output rows: zero between volumes.
    part = transpose(_slab_or_zeros(g, 0, 2 * pd, r0, r1))[0]
    parts.append(part)
    dk = part if dk is None else dk + part
  return dk.reshape(kh, kw, kd, c, o).transpose(2, 0, 1, 3, 4)


# Winograd's minimal filtering along depth, F(m, kd): m output slices from m + kd - 1 input
# slices with m + kd - 1 2D convolutions instead of m * kd (for kd = 3 and m = 4: 6 instead of 12,
# half the multiplications). The transforms are sums of slices with small exact coefficients
# (interpolation points 0, +-1, +-2 and infinity), so float32 results stay within a few 1e-6 of
# the direct sum (relative to the largest output); larger m saves little more and loses accuracy.
_WINOGRAD_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5)


@functools.lru_cache(maxsize=None)
def _winograd_matrices(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(A^T [m, a], G [a, r], B^T [a, a])` with a = m + r - 1, such that for any kernel g [r] and
  input d [a]: `A^T ((G g) * (B^T d)) = y`, `y[i] = sum_k g[k] d[i + k]` (Toom-Cook construction
  on the points `_WINOGRAD_POINTS[:a - 1]` and infinity; B^T solved from the identity)."""
  a = m + r - 1
  if a - 1 > len(_WINOGRAD_POINTS):
    raise ValueError(f"Winograd F({m}, {r}) needs {a - 1} interpolation points; "
                     f"{len(_WINOGRAD_POINTS)} are defined.")
  p = np.asarray(_WINOGRAD_POINTS[:a - 1])
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


def _winograd_block_size(d: int) -> int:
  """Output slices per Winograd block for depth d: 4 (half the 2D work of the direct sum for
  3-tap kernels), 2 for depth 2 or 3 (less zero padding)."""
  return 4 if d >= 4 else 2


def _winograd_pieces(b: int, n: int, slice_bytes: int, m: int,
                     backward: bool = False) -> list[tuple[int, int, int]]:
  """`(volume, first block, end block)` pieces of the n Winograd blocks of each of b volumes
  (`_piece_count` per volume: each piece's 2D convolutions read at most `_PIECE_BYTES`, or about
  twice that in the backward pass)."""
  pieces = []
  count = _piece_count(n, m * slice_bytes, backward)
  for v in range(b):
    bounds = [round(i * n / count) for i in range(count + 1)]
    pieces += [(v, i0, i1) for i0, i1 in zip(bounds[:-1], bounds[1:])]
  return pieces


def _winograd_inputs(xs: Sequence[jax.Array], m: int, kd: int, v: int, i0: int, i1: int,
                     bt: np.ndarray) -> list[jax.Array]:
  """The a = m + kd - 1 transformed inputs `[i1 - i0, H, W, C]` of blocks [i0, i1) of volume v:
  `u_j[i] = sum_t bt[j, t] x_padded[m * i + t]` (x padded in depth by kd // 2 zero slices before
  and enough after to fill the last block), x the concatenation of `xs` along the channels (made
  here for the piece only)."""
  d = xs[0].shape[1]
  n = -(-d // m)
  pd = kd // 2
  after = n * m - d + pd
  period = pd + d + after
  r0, r1 = v * period + m * i0, v * period + m * i1 + kd - 1
  rows = [_slab_or_zeros(x, pd, after, r0, r1) for x in xs]
  rows = rows[0] if len(rows) == 1 else jnp.concatenate(rows, axis=-1)
  window = [rows[t:t + m * (i1 - i0):m] for t in range(m + kd - 1)]
  return [_combine(bt[j], window) for j in range(m + kd - 1)]


def _slice_bytes(xs: Sequence[jax.Array]) -> int:
  """Bytes of one depth slice of the channel concatenation of `xs` (`[B, D, H, W, C_i]`)."""
  return sum(int(np.prod(x.shape[2:])) * x.dtype.itemsize for x in xs)


def _tie_all(xs: Sequence[jax.Array], *deps: jax.Array) -> tuple[jax.Array, ...]:
  return tuple(tie(x, *deps) for x in xs)


def _winograd_conv(xs: Sequence[jax.Array], kernel: jax.Array,
                   backward: bool = False) -> jax.Array:
  """SAME, stride-1 3D convolution (see `conv3d`) of the channel concatenation of `xs` with
  Winograd F(m, kd) along depth and XLA's 2D convolution over (H, W): per block of m output
  slices, `y[m i + r] = sum_j at[r, j] conv2d(u_j[i], k_j)` with `k_j = sum_a g[j, a]
  kernel[a]`, in pieces of blocks."""
  kd, kh, kw, c, o = kernel.shape
  b, d, h, w, _ = xs[0].shape
  m = _winograd_block_size(d)
  at, g, bt = _winograd_matrices(m, kd)
  n = -(-d // m)
  pads = (kh // 2, kw // 2)
  kernels = [_combine(g[j], list(kernel)) for j in range(m + kd - 1)]
  volumes, outs = [[] for _ in range(b)], []
  for v, i0, i1 in _winograd_pieces(b, n, _slice_bytes(xs), m, backward):
    src = _tie_all(xs, outs[-_IN_FLIGHT]) if len(outs) >= _IN_FLIGHT else xs
    products = [_conv2d(u, k, pads) for u, k in
                zip(_winograd_inputs(src, m, kd, v, i0, i1, bt), kernels)]
    out = jnp.stack([_combine(at[r], products) for r in range(m)], axis=1)  # [blocks, m, ...]
    outs.append(out)
    volumes[v].append(out.reshape((i1 - i0) * m, h, w, o))
  y = jnp.stack([jnp.concatenate(parts) if len(parts) > 1 else parts[0] for parts in volumes])
  return y[:, :d]


def _conv2d_kernel_grad(x: jax.Array, g: jax.Array, window: tuple[int, int]) -> jax.Array:
  """Kernel gradient `[kh, kw, C, O]` of the SAME 2D convolution `_conv2d(x, k)` `[N, H, W, C]`
  -> `[N, H, W, O]` for output gradient `g`: `dk[p, q] = sum_{n,h,w} x_pad[n, h+p, w+q]^T
  g[n, h, w]`. XLA's own form (the transposed convolution) is the fastest except with many
  input and few output channels, where it runs at ~10 GFLOP/s on CPU and one matrix product per
  tap is faster (the base-8 U-Net's 48 -> 16 layer at 64^3: forward + backward 425 -> 272 ms;
  with few input channels too the products were slower)."""
  kh, kw = window
  ph, pw = kh // 2, kw // 2
  c, o = x.shape[-1], g.shape[-1]
  if not o < 32 <= c:
    k_struct = jax.ShapeDtypeStruct((kh, kw, c, o), g.dtype)
    return jax.linear_transpose(lambda k: _conv2d(x, k, (ph, pw)), k_struct)(g)[0]
  h, w = x.shape[1:3]
  xp = jnp.pad(x, [(0, 0), (ph, ph), (pw, pw), (0, 0)])
  g2 = g.reshape(-1, o)
  taps = [xp[:, p:p + h, q:q + w].reshape(-1, c).T @ g2 for p in range(kh) for q in range(kw)]
  return jnp.stack(taps).reshape(kh, kw, c, o)


def _winograd_kernel_grad(xs: Sequence[jax.Array], g_out: jax.Array,
                          kernel_shape: Sequence[int]) -> jax.Array:
  """Kernel gradient of `_winograd_conv` for output gradient `g_out` `[B, D, H, W, O]`: the
  transpose of its Winograd form, `dk[a] = sum_j g[j, a] dk_j` with `dk_j` the 2D kernel gradient
  of `u_j` against `dm_j[i] = sum_r at[r, j] g_out[m i + r]`."""
  kd, kh, kw, c, o = kernel_shape
  b, d, h, w, _ = xs[0].shape
  m = _winograd_block_size(d)
  at, g, bt = _winograd_matrices(m, kd)
  n = -(-d // m)
  sums, parts = None, []
  for v, i0, i1 in _winograd_pieces(b, n, _slice_bytes(xs), m, backward=True):
    # Not before g_out exists (else XLA makes these copies in the forward pass), and at most
    # `_IN_FLIGHT` pieces at a time.
    src = _tie_all(xs, g_out, *([parts[-_IN_FLIGHT]] if len(parts) >= _IN_FLIGHT else []))
    grads = _slab_or_zeros(g_out, 0, n * m - d, v * n * m + m * i0, v * n * m + m * i1)
    grads = grads.reshape(i1 - i0, m, h, w, o)
    piece = []
    for j, u in enumerate(_winograd_inputs(src, m, kd, v, i0, i1, bt)):
      dm = _combine(at[:, j], [grads[:, r] for r in range(m)])
      piece.append(_conv2d_kernel_grad(u, dm, (kh, kw)))
    parts.append(piece[-1])
    sums = piece if sums is None else [s + p for s, p in zip(sums, piece)]
  return jnp.stack([_combine(g[:, a], sums) for a in range(kd)])


def _concat(xs: Sequence[jax.Array]) -> jax.Array:
  return xs[0] if len(xs) == 1 else jnp.concatenate(xs, axis=-1)


def _conv_2d_method(xs: Sequence[jax.Array], kernel: jax.Array, method: str,
                    backward: bool = False) -> jax.Array:
  if method == "winograd" and kernel.shape[0] > 1:
    return _winograd_conv(xs, kernel, backward)
  return _rows_conv(_concat(xs), kernel, "sum" if method == "winograd" else method, backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv3d_fast(xs: tuple[jax.Array, ...], kernel: jax.Array, method: str) -> jax.Array:
  return _conv_2d_method(xs, kernel, method)


def _conv3d_fast_fwd(xs, kernel, method):
  # Residuals are the inputs and the kernel only, not the stacked, padded or transformed copies.
  return _conv_2d_method(xs, kernel, method), (xs, kernel)


def _conv3d_fast_bwd(method, residuals, g):
  xs, kernel = residuals
  # The transposed SAME convolution is the SAME convolution with the kernel flipped in space
  # and its in/out channels swapped. Tied to g: else XLA transforms the flipped kernel in the
  # forward pass and keeps it until here.
  flipped = jnp.flip(tie(kernel, g), (0, 1, 2)).swapaxes(3, 4).astype(g.dtype)
  xs_g = tuple(x.astype(g.dtype) for x in xs)
  if method == "winograd" and kernel.shape[0] > 1:
    dk = _winograd_kernel_grad(xs_g, g, kernel.shape)
  else:
    dk = _rows_kernel_grad(_concat(xs_g), g, kernel.shape)
  # dx after dk: otherwise XLA defers every kernel gradient to the end of the backward pass (only
  # the optimiser needs them), keeping every layer's input alive until then. One convolution
  # per input, each to its own channels, so that no gradient of the whole concatenation is
  # formed.
  g = tie(g, dk)
  bounds = np.cumsum([0] + [x.shape[-1] for x in xs])
  dxs = tuple(_conv_2d_method((g,), flipped[..., c0:c1], method, backward=True)
              .astype(x.dtype)
              for x, c0, c1 in zip(xs, bounds[:-1], bounds[1:]))
  return dxs, dk.astype(kernel.dtype)


_conv3d_fast.defvjp(_conv3d_fast_fwd, _conv3d_fast_bwd)


def conv3d(x: jax.Array | Sequence[jax.Array], kernel: jax.Array, *,
           method: str = "auto") -> jax.Array:
  """Stride-1 3D convolution with SAME padding, `[B, D, H, W, C]` * `[kd, kh, kw, C, O]`.

  `y[b, d, h, w, o] = sum_{a,p,q,c} x[b, d+a-kd//2, h+p-kh//2, w+q-kw//2, c] kernel[a, p, q, c, o]`
  (zero outside the volume; odd kernel sizes), the values of `nn.Conv(O, (kd, kh, kw),
  padding='SAME', use_bias=False)`. Methods, all the same sum up to float rounding:

  * 'winograd': Winograd's F(m, kd) along depth (m = 4 output slices per block, 2 for depth < 4):
    per block `y[m i + r] = sum_j A[r, j] conv2d(u_j, k_j)` with `u_j = sum_t B[j, t] x[m i + t - kd//2]`
    and `k_j = sum_a G[j, a] kernel[a]` (`_winograd_matrices`); for 3x3x3 kernels 6 2D
    convolutions per 4 output slices instead of 12. Float32 results are within a few 1e-6 of the
    direct sum, relative to the largest output. Its kernel gradient is the transpose of the same
    form (`dk[a] = sum_j G[j, a] dk_j`);
  * 'fold_in': the kd depth-shifted copies of `x` side by side in the channels
    (`[B * D, H, W, kd * C]`), one 2D convolution with the kernel `[kh, kw, kd * C, O]`;
  * 'fold_out': one 2D convolution to `kd * O` channels (`kernel[a]` side by side), then the kd
    output blocks shifted in depth and summed;
  * 'sum': the sum of kd 2D convolutions of depth-shifted `x` with `kernel[a]`;
  * 'auto': 'winograd' on CPU (the fastest measured for nearly every layer of the U-Net from 8^3
    to 64^3, forward and backward: benchmarks/README.md), 'xla' on other backends;
  * 'xla': XLA's 3D convolution (`lax.conv_general_dilated`), differentiated by JAX.

  The 2D methods have their own backward pass (`jax.custom_vjp`): the input gradient is the
  convolution of the output gradient with the flipped, channel-swapped kernel (by the same
  method), and the kernel gradient 2D kernel gradients of the transformed ('winograd') or
  depth-stacked input. The 2D convolutions run on pieces of a few depth slices (at most
  `_PIECE_BYTES` of input, two at a time), 1.5-2x faster on CPU than on the whole volume. Only
  `x` and `kernel` are kept for the backward pass. Reverse-mode differentiation only (no
  `jax.jvp`).

  `x` may be a sequence of arrays `[B, D, H, W, C_i]` (a U-Net decoder's skip and up-sampled
  inputs): the convolution of their concatenation along the channels, `sum C_i = C`, which the
  2D methods never form (only piece by piece), nor its gradient (one per input). That saves
  the concatenation's memory in the forward pass and its gradient's in the backward pass.

  Args:
    x: input `[B, D, H, W, C]`, or a sequence of inputs to read as their concatenation.
    kernel: `[kd, kh, kw, C, O]` with odd kd, kh, kw.
    method: one of `CONV_METHODS`.

  Returns:
    `[B, D, H, W, O]` in the promoted dtype of `x` and `kernel`.
  """
  if method not in CONV_METHODS:
    raise ValueError(f"conv3d method must be one of {CONV_METHODS}; got {method!r}.")
  xs = tuple(x) if isinstance(x, (list, tuple)) else (x,)
  shapes = [tuple(x.shape) for x in xs]
  if (not xs or kernel.ndim != 5 or any(len(s) != 5 or s[:4] != shapes[0][:4] for s in shapes)
      or sum(s[-1] for s in shapes) != kernel.shape[3]):
    raise ValueError(f"conv3d needs x [B, D, H, W, C] (or inputs [B, D, H, W, C_i] with "
                     f"sum C_i = C) and kernel [kd, kh, kw, C, O]; got x shape(s) "
                     f"{', '.join(map(str, shapes))} and kernel shape {kernel.shape}.")
  if any(k % 2 == 0 for k in kernel.shape[:3]):
    raise ValueError(f"conv3d (SAME padding) needs odd kernel sizes; got kernel shape "
                     f"{kernel.shape}.")
  dtype = jnp.result_type(*xs, kernel)
  xs, kernel = tuple(x.astype(dtype) for x in xs), kernel.astype(dtype)
  if method == "auto" and jax.default_backend() != "cpu":
    method = "xla"  # GPU/TPU convolution libraries handle 3D convolutions well
  if method == "xla":
    pads = [(k // 2, k // 2) for k in kernel.shape[:3]]
    return lax.conv_general_dilated(_concat(xs), kernel, (1, 1, 1), pads,
                                    dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  return _conv3d_fast(xs, kernel, "winograd" if method == "auto" else method)


class Conv3D(nn.Module):
  """Stride-1, SAME 3D convolution with the parameters of `nn.Conv` (`kernel` `[kd, kh, kw, C,
  O]`, lecun-normal; `bias` `[O]`, zeros), computed by `conv3d`.

  `y = conv3d(x, kernel) + bias`; interchangeable with `nn.Conv(features, kernel_size,
  padding='SAME')` (same names, shapes, initialisers and values). `x` may be a sequence of
  inputs, read as their concatenation along the channels without forming it (`conv3d`).

  Attributes:
    features: output channels O.
    kernel_size: (kd, kh, kw), odd.
    use_bias: whether to add a bias.
    method: `conv3d` method ('auto': the fastest measured on CPU, XLA's own elsewhere).
    dtype: computation dtype (None: from the inputs and parameters).
    param_dtype: parameter dtype.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3, 3)
  use_bias: bool = True
  method: str = "auto"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array | Sequence[jax.Array]) -> jax.Array:
    """`x` `[B, D, H, W, C]` (or inputs `[B, D, H, W, C_i]`) -> `[B, D, H, W, features]`."""
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*self.kernel_size, sum(x.shape[-1] for x in xs), self.features),
                        self.param_dtype)
    bias = (self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
            if self.use_bias else None)
    *xs, kernel, bias = nn.dtypes.promote_dtype(*xs, kernel, bias, dtype=self.dtype)
    y = conv3d(xs, kernel, method=self.method)
    return y + bias if bias is not None else y
