"""2D convolutions over (H, W), and the direct forms of a SAME, stride-1 3D convolution through
them ('fold_in', 'fold_out', 'sum'), with their kernel gradient. Dispatched by `conv.conv3d`.

XLA's CPU backend (jaxlib 0.10.2) runs a 3D convolution at about a third of the speed per FLOP of
its 2D convolution (which it hands to YNNPACK), and a third of PyTorch's; these forms compute the
3D sum through 2D convolutions on pieces of depth slices (`tiling`).
"""

import functools
from typing import Sequence

import jax
from jax import lax
import jax.numpy as jnp

from medjax.models.ops import tiling

DIRECT_METHODS = ("fold_in", "fold_out", "sum")


def conv2d(x: jax.Array, kernel: jax.Array, pads: tuple[int, int]) -> jax.Array:
  """Stride-1 2D convolution: `[N, H, W, C]` * `[kh, kw, C, O]` -> `[N, H', W', O]`."""
  return lax.conv_general_dilated(x, kernel, (1, 1), [(pads[0], pads[0]), (pads[1], pads[1])],
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv2d_kernel_grad(x: jax.Array, g: jax.Array, window: tuple[int, int]) -> jax.Array:
  """Kernel gradient `[kh, kw, C, O]` of the SAME 2D convolution `conv2d(x, k)` `[N, H, W, C]`
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
    return jax.linear_transpose(lambda k: conv2d(x, k, (ph, pw)), k_struct)(g)[0]
  h, w = x.shape[1:3]
  xp = jnp.pad(x, [(0, 0), (ph, ph), (pw, pw), (0, 0)])
  g2 = g.reshape(-1, o)
  taps = [xp[:, p:p + h, q:q + w].reshape(-1, c).T @ g2 for p in range(kh) for q in range(kw)]
  return jnp.stack(taps).reshape(kh, kw, c, o)


def _shifted_rows(src: jax.Array, pd: int, kd: int, r0: int, r1: int) -> jax.Array:
  """The kd depth-shifted rows [r0 + a, r1 + a) of `src` padded by pd, side by side in the
  channels: `[r1 - r0, H, W, kd * C]`."""
  return jnp.concatenate([tiling.slab_or_zeros(src, pd, pd, r0 + a, r1 + a) for a in range(kd)],
                         axis=-1)


def rows_conv(x: jax.Array, kernel: jax.Array, method: str,
              backward: bool = False) -> jax.Array:
  """SAME, stride-1 3D convolution `[B, D, H, W, C]` -> `[B, D, H, W, O]` (see `conv.conv3d`)
  through 2D convolutions over (H, W) of the rows of `x` padded in depth (`tiling.slab`):
  `out[r] = sum_a conv2d(rows[r + a], kernel[a])`, computed in pieces of rows. Output row
  `b * (D + 2 pd) + j` is slice j of volume b for j < D; the 2 pd rows between volumes mix two
  volumes and are dropped.

  * 'fold_in': the kd shifted rows side by side in the channels, one 2D convolution with the
    kernel `[kh, kw, kd * C, O]`;
  * 'fold_out': one 2D convolution to `kd * O` channels, then the kd output blocks shifted back
    by their tap and summed;
  * 'sum': kd 2D convolutions, one per tap (taps whose rows are all padding are skipped).
  """
  kd, kh, kw, c, o = kernel.shape
  b, d, h, w, _ = x.shape
  pd, pads = kd // 2, (kh // 2, kw // 2)
  period = d + 2 * pd
  if method == "fold_in":
    k_in = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kd * c, o)
  elif method == "fold_out":
    k_out = kernel.transpose(1, 2, 3, 0, 4).reshape(kh, kw, c, kd * o)
  elif method != "sum":
    raise ValueError(f"Unknown 2D formulation {method!r}; expected one of {DIRECT_METHODS}.")
  num_rows = b * period - 2 * pd
  row_bytes = x[0, 0].size * x.dtype.itemsize * (kd if method == "fold_in" else 1)
  pieces = tiling.row_pieces(num_rows, row_bytes, backward)
  y = jnp.zeros((num_rows, h, w, o), x.dtype) if len(pieces) > 1 else None
  outs = []
  for r0, r1 in pieces:
    (src,) = tiling.after_in_flight((x,), outs)
    if method == "fold_in":
      out = conv2d(_shifted_rows(src, pd, kd, r0, r1), k_in, pads)
    elif method == "fold_out":
      z = conv2d(tiling.slab_or_zeros(src, pd, pd, r0, r1 + kd - 1), k_out, pads)
      z = z.reshape(r1 - r0 + kd - 1, h, w, kd, o)
      out = functools.reduce(jnp.add, [z[a:a + r1 - r0, :, :, a] for a in range(kd)])
    else:
      terms = [(tiling.slab(src, pd, pd, r0 + a, r1 + a), kernel[a]) for a in range(kd)]
      out = functools.reduce(jnp.add, [conv2d(rows, k, pads) for rows, k in terms
                                       if rows is not None])
    outs.append(out)
    # In-place updates of one buffer, not a concatenation: XLA's CPU concatenation of many
    # pieces costs as much as the convolutions.
    y = out if y is None else lax.dynamic_update_slice_in_dim(y, out, r0, axis=0)
  if b > 1 and pd > 0:
    y = jnp.pad(y, [(0, 2 * pd), (0, 0), (0, 0), (0, 0)]).reshape(b, period, h, w, o)[:, :d]
  return y.reshape(b, d, h, w, o)


def rows_kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: Sequence[int]) -> jax.Array:
  """Kernel gradient of `rows_conv` for output gradient `g` `[B, D, H, W, O]`:
  `dk[a] = sum_r conv2d_kernel_grad(rows[r + a], g_rows[r])`, one 2D kernel gradient of the kd
  shifted rows side by side per piece of rows, accumulated."""
  kd, kh, kw, c, o = kernel_shape
  b, d, _, _, _ = x.shape
  pd, pads = kd // 2, (kh // 2, kw // 2)
  k_struct = jax.ShapeDtypeStruct((kh, kw, kd * c, o), g.dtype)
  parts, dk = [], None
  for r0, r1 in tiling.row_pieces(b * (d + 2 * pd) - 2 * pd,
                                  kd * x[0, 0].size * x.dtype.itemsize, backward=True):
    # Not before g exists (else XLA makes these copies in the forward pass), and at most
    # `IN_FLIGHT` pieces at a time.
    (src,) = tiling.after_in_flight((x,), parts, g)
    taps = _shifted_rows(src, pd, kd, r0, r1)
    transpose = jax.linear_transpose(lambda k, taps=taps: conv2d(taps, k, pads), k_struct)
    # Output-gradient rows laid out as the output rows: zero between volumes.
    part = transpose(tiling.slab_or_zeros(g, 0, 2 * pd, r0, r1))[0]
    parts.append(part)
    dk = part if dk is None else dk + part
  return dk.reshape(kh, kw, kd, c, o).transpose(2, 0, 1, 3, 4)


# Kernels with fewer outputs than this take `few_outputs_kernel_grad`.
FEW_OUTPUTS = 8


def few_outputs_kernel_grad(x: jax.Array, g: jax.Array,
                            kernel_shape: Sequence[int]) -> jax.Array:
  """Kernel gradient `[kd, kh, kw, C, O]` of the SAME, stride-1 3D convolution of `x`
  `[B, D, H, W, C]` for output gradient `g` `[B, D, H, W, O]`, for few outputs O (a network's
  classifier at full resolution, e.g. V-Net's 32 -> 4 channels with 5x5x5 kernels):
  `dk[a, p, q] = sum_u x[u]^T g[u + c - t]` (t = (a, p, q), c = k // 2 per axis), per piece
  of depth slices kd matrix products `x^T [C, voxels] @ [voxels, kh * kw * O]`, the (p, q)
  shifted copies made of `g` (O channels) rather than of `x` (C channels). The 2D kernel
  gradients of the other forms read `x` once per tap there (64^3 x 32 -> 4, 3x3x3 kernels:
  forward + backward 93 ms against 221 ms)."""
  kd, kh, kw, c, o = kernel_shape
  b, d, h, w, _ = x.shape
  # g[u + c - t] = gp[u + k - 1 - t] with g padded by c = k // 2 zeros at both ends.
  gp = jnp.pad(g, [(0, 0), (kd // 2, kd // 2), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)])
  pieces = [(v, z0, z1) for v in range(b) for z0, z1 in
            tiling.row_pieces(d, h * w * kh * kw * o * g.dtype.itemsize, backward=True)]
  dks, parts = [None] * kd, []
  for v, z0, z1 in pieces:
    # Not before g exists, and at most `IN_FLIGHT` pieces at a time: the shifted copies too,
    # else XLA makes all of them as soon as g exists (550 MB at 64^3 x 32 -> 4, 5x5x5).
    src, gp_piece = tiling.after_in_flight((x, gp), parts, g)
    shifted = jnp.concatenate(
        [gp_piece[v, z0:z1 + kd - 1, kh - 1 - p:kh - 1 - p + h, kw - 1 - q:kw - 1 - q + w]
         for p in range(kh) for q in range(kw)], axis=-1)
    rows = src[v, z0:z1].reshape(-1, c)
    for a in range(kd):
      taps = shifted[kd - 1 - a:kd - 1 - a + z1 - z0].reshape(-1, kh * kw * o)
      part = lax.dot_general(rows, taps, (((0,), (0,)), ((), ())))  # [C, kh * kw * O]
      dks[a] = part if dks[a] is None else dks[a] + part
    parts.append(dks[-1])
  return jnp.stack(dks).reshape(kd, c, kh, kw, o).transpose(0, 2, 3, 1, 4)
