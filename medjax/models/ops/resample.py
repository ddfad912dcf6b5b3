"""2x up- and down-sampling kernels as matrix products (channels-last): the 3D pixel-shuffle pair
`depth_to_space` / `space_to_depth`, the 2x2x2 stride-2 transposed convolution as a matmul and a
depth-to-space (`matmul_depth_to_space`), and the 2x2x2 stride-2 convolution as a space-to-depth
and a matmul (`space_to_depth_matmul`).

XLA's CPU convolutions are slow for these strided kernels: at 64^3 with 16 -> 32 channels the
space-to-depth form of the down convolution runs its forward+backward about 20x faster than
`nn.Conv`, and XLA's CPU transposed convolution is an order of magnitude slower than the matmul
form.
"""

import jax
import jax.numpy as jnp
import numpy as np

from medjax.models.ops import tiling


def depth_to_space(x: jax.Array, block_size: int = 2) -> jax.Array:
  """3D pixel shuffle: `[B, D, H, W, r^3 * C]` -> `[B, r*D, r*H, r*W, C]` with r = block_size.

  `y[b, r*i + p, r*j + q, r*k + s, c] = x[b, i, j, k, ((p * r + q) * r + s) * C + c]`: the
  channel axis is read as `(p, q, s, c)` in row-major order. Inverse of `space_to_depth`.
  """
  b, d, h, w, rc = x.shape
  r = block_size
  if rc % r**3:
    raise ValueError(f"depth_to_space with block_size={r} needs the channel count of input "
                     f"shape {x.shape} to be divisible by {r**3}.")
  c = rc // r**3
  x = x.reshape(b, d, h, w, r, r, r, c)
  x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, r * d, r * h, r * w, c)


def space_to_depth(x: jax.Array, block_size: int = 2) -> jax.Array:
  """Inverse of `depth_to_space`: `[B, r*D, r*H, r*W, C]` -> `[B, D, H, W, r^3 * C]`."""
  b, rd, rh, rw, c = x.shape
  r = block_size
  if rd % r or rh % r or rw % r:
    raise ValueError(f"space_to_depth with block_size={r} needs spatial sizes divisible by {r}; "
                     f"got input shape {x.shape} ([B, D, H, W, C]).")
  x = x.reshape(b, rd // r, r, rh // r, r, rw // r, r, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, rd // r, rh // r, rw // r, r**3 * c)


def space_to_depth_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """2x2x2 convolution with stride 2, no padding: `[B, 2D, 2H, 2W, C]` * `[2, 2, 2, C, O]` ->
  `[B, D, H, W, O]`, `y[b, i, j, k] = sum_{p,q,r} x[b, 2i+p, 2j+q, 2k+r] . kernel[p, q, r]`,
  as `space_to_depth(x) @ kernel.reshape(8 C, O)`."""
  return space_to_depth(x, 2) @ kernel.reshape(-1, kernel.shape[-1])


@jax.custom_vjp
def matmul_depth_to_space(x: jax.Array, k: jax.Array) -> jax.Array:
  """`depth_to_space(x @ k, 2)`: `[B, D, H, W, C]` * `[C, 8 * O]` -> `[B, 2D, 2H, 2W, O]`, with
  a backward pass that does not copy the output gradient into depth-to-space order."""
  return depth_to_space(jnp.dot(x, k), 2)


def _matmul_depth_to_space_fwd(x, k):
  return matmul_depth_to_space(x, k), (x, k)


def _matmul_depth_to_space_bwd(residuals, g):
  """One matrix product per output offset (p, q, s) on the strided view of g, so that g is not
  copied into depth-to-space order first (two copies of the up-sampled size in XLA's own
  derivative: 256 MB at the paper U-Net's top level)."""
  x, k = residuals
  b, d, h, w, c = x.shape
  o = k.shape[1] // 8
  g = g.reshape(b, d, 2, h, 2, w, 2, o)
  x2 = tiling.tie(x, g).reshape(-1, c)
  dx, dk = None, []
  for i, (p, q, s) in enumerate(np.ndindex(2, 2, 2)):
    gi = g[:, :, p, :, q, :, s].reshape(-1, o)
    dk.append(x2.T @ gi)
    term = gi @ k[:, i * o:(i + 1) * o].T
    dx = term if dx is None else dx + term
  return dx.reshape(x.shape).astype(x.dtype), jnp.concatenate(dk, axis=1).astype(k.dtype)


matmul_depth_to_space.defvjp(_matmul_depth_to_space_fwd, _matmul_depth_to_space_bwd)
