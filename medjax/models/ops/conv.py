"""`conv3d`: the stride-1 3D convolution of every layer, by any of `METHODS` (channels-last,
`[B, D, H, W, C]` * `[kd, kh, kw, C, O]`), SAME or VALID padding.

XLA's CPU backend (jaxlib 0.10.2) runs a 3D convolution at about a third of the speed per FLOP of
its 2D convolution, so on CPU the same sum is computed through 2D convolutions over (H, W):

* 'winograd': Winograd's minimal filtering F(4, kd) along depth (`winograd`): for 3-tap kernels 6
  2D convolutions per 4 output slices instead of 12, half the multiplications of the direct sum;
* 'fold_in', 'fold_out', 'sum': the direct sum over the depth taps in three layouts (`conv2d`);
* 'im2col': every tap side by side in the channels and one matrix product, for volumes of a few
  voxels (a network's deepest level), where a 2D convolution of a 4 x 4 image runs at a few
  GFLOP/s;
* 'xla': XLA's own 3D convolution (the default on GPU/TPU, whose libraries do 3D well);
* 'auto': per layer, the fastest measured on CPU (`auto_method`), 'xla' elsewhere.

Each 2D method has its own backward pass (`jax.custom_vjp`), runs its 2D convolutions on pieces of
a few depth slices, two at a time (1.5-2x faster on a 2-core CPU than one convolution over the
whole volume: `tiling`), and keeps only `x` and `kernel` for the backward pass. Measured figures:
benchmarks/README.md.
"""

import functools
from typing import Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from medjax.models.ops import conv2d as conv2d_lib
from medjax.models.ops import tiling
from medjax.models.ops import winograd

METHODS = ("auto", "winograd", "fold_in", "fold_out", "sum", "im2col", "xla")
# Names the two former layer stacks used, still accepted (configs and saved config.json files):
# zoo_layers' 'stack2d' was 'fold_in' without pieces, 'xla3d' and ConvBNReLU's 'plain'
# (`nn.Conv`) are XLA's 3D convolution.
ALIASES = {"stack2d": "fold_in", "xla3d": "xla", "plain": "xla"}
PADDINGS = ("SAME", "VALID")


def canonical_method(method: str, what: str = "conv3d method") -> str:
  """`method` under its name in `METHODS` (`ALIASES` resolved); ValueError naming `what` if
  unknown."""
  method = ALIASES.get(method, method)
  if method not in METHODS:
    raise ValueError(f"{what} must be one of {METHODS} (or an old name in {sorted(ALIASES)}); "
                     f"got {method!r}.")
  return method


# Volumes of at most this many voxels (4^3) convolve by 'im2col' on CPU.
IM2COL_MAX_VOXELS = 64


def auto_method(kernel_shape: Sequence[int], backend: str | None = None,
                spatial_shape: Sequence[int] | None = None) -> str:
  """The method 'auto' runs for a kernel `[kd, kh, kw, C, O]` on `backend` (default: JAX's) and
  an input of spatial shape `spatial_shape` `(D, H, W)` (None: not known, a large volume).

  Off CPU, 'xla'. On CPU (2-core Zen 5, jaxlib 0.10.2), forward + backward, batch 1:
  * volumes of at most `IM2COL_MAX_VOXELS` voxels: 'im2col'. V-Net's deepest stage at a 64^3
    input, 4^3 x 256 -> 256 with 5x5x5 kernels: 6 ms forward and 10 ms forward + backward
    against 131 / 244 ms by 'winograd', 195 / 261 ms by 'xla', 320 / 374 ms by 'sum'
    (PyTorch: 7 / 24 ms); 3x3x3, 4^3 x 256 -> 512: 2.0 / 3.5 ms against 3.6 / 45 ms, and
    4^3 x 128 -> 128: 0.9 / 0.9 ms against 0.4 / 3.0 ms. At 8^3 it was slower (8^3 x 256 -> 256,
    5x5x5: 99 / 131 ms, 'winograd' 36 / 152 ms);
  * 3-tap depth kernels: 'winograd', the fastest for nearly every U-Net layer from 8^3 to 64^3
    (benchmarks/README.md) and for the DenseNets' many-in, few-out layers (32^3, 101 -> 50:
    0.22 s against 0.50 s 'sum', 0.44 s 'fold_out'; 401 -> 75: 0.82 s against 1.76 / 1.68 s;
    XLA's 3D convolution made DENSENET1's train step 5x slower);
  * 5-tap (V-Net) kernels: 'winograd' F(4, 5) (8 2D convolutions per 4 output slices instead of
    20): 32^3, 32 -> 32: 0.08 s against 0.28 s 'fold_in' (the former V-Net path) and 0.22 s
    'sum'; 4^3, 128 -> 128: 0.04 s against 0.10 / 0.06 s. With few outputs (the output block's
    32 -> 4) 'sum' was faster (0.095 s against 0.127 s 'winograd', 0.102 s 'fold_in'), so
    'sum' below 8 outputs;
  * 1x1x1 kernels (classifiers, HyperDenseNet's fully connected layers): 'im2col', a matrix
    product: 46^3 x 1000 -> 400, forward + backward 0.67 s against 0.97 s by XLA's 3D
    convolution (`nn.Conv`), 46^3 x 150 -> 4 23 ms against 63 ms;
  * other 1-tap depth kernels: 'sum' (one 2D convolution).
  Under 'auto' the input gradient (a convolution with in and out channels swapped) takes the
  choice for the swapped kernel: V-Net's classifier, 64^3 x 32 -> 4 with 5x5x5 kernels, runs
  its forward by 'sum' and its input gradient (4 -> 32) by 'winograd'.
  """
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return "xla"  # GPU/TPU convolution libraries handle 3D convolutions well
  if (spatial_shape is not None and int(np.prod(spatial_shape)) <= IM2COL_MAX_VOXELS
      or all(k == 1 for k in kernel_shape[:3])):
    return "im2col"
  kd, o = kernel_shape[0], kernel_shape[-1]
  if kd == 1 or (kd >= 5 and o < 8):
    return "sum"
  return "winograd"


def _run_2d(xs: Sequence[jax.Array], kernel: jax.Array, method: str,
            backward: bool = False) -> jax.Array:
  if method == "winograd" and kernel.shape[0] > 1:
    return winograd.winograd_conv(xs, kernel, backward)
  return conv2d_lib.rows_conv(tiling.concat(xs), kernel,
                              "sum" if method == "winograd" else method, backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv3d_2d(xs: tuple[jax.Array, ...], kernel: jax.Array,
               methods: tuple[str, str]) -> jax.Array:
  """`methods`: (the forward convolution's, the input gradient's)."""
  return _run_2d(xs, kernel, methods[0])


def _conv3d_2d_fwd(xs, kernel, methods):
  # Residuals are the inputs and the kernel only, not the stacked, padded or transformed copies.
  return _run_2d(xs, kernel, methods[0]), (xs, kernel)


def _conv3d_2d_bwd(methods, residuals, g):
  xs, kernel = residuals
  method, input_grad_method = methods
  # The transposed SAME convolution is the SAME convolution with the kernel flipped in space
  # and its in/out channels swapped. Tied to g: else XLA transforms the flipped kernel in the
  # forward pass and keeps it until here.
  flipped = jnp.flip(tiling.tie(kernel, g), (0, 1, 2)).swapaxes(3, 4).astype(g.dtype)
  xs_g = tuple(x.astype(g.dtype) for x in xs)
  if kernel.shape[-1] < conv2d_lib.FEW_OUTPUTS:
    dk = conv2d_lib.few_outputs_kernel_grad(tiling.concat(xs_g), g, kernel.shape)
  elif method == "winograd" and kernel.shape[0] > 1:
    dk = winograd.winograd_kernel_grad(xs_g, g, kernel.shape)
  else:
    dk = conv2d_lib.rows_kernel_grad(tiling.concat(xs_g), g, kernel.shape)
  # dx after dk: otherwise XLA defers every kernel gradient to the end of the backward pass (only
  # the optimiser needs them), keeping every layer's input alive until then. One convolution
  # per input, each to its own channels, so that no gradient of the whole concatenation is
  # formed.
  g = tiling.tie(g, dk)
  bounds = np.cumsum([0] + [x.shape[-1] for x in xs])
  dxs = tuple(_run_2d((g,), flipped[..., c0:c1], input_grad_method, backward=True).astype(x.dtype)
              for x, c0, c1 in zip(xs, bounds[:-1], bounds[1:]))
  return dxs, dk.astype(kernel.dtype)


_conv3d_2d.defvjp(_conv3d_2d_fwd, _conv3d_2d_bwd)


def _im2col(xs: Sequence[jax.Array], kernel: jax.Array, padding: str) -> jax.Array:
  """The convolution as one matrix product: the kd * kh * kw shifted copies of the (padded)
  input side by side in the channels, `[B * D' * H' * W', kd * kh * kw * C]`, times the kernel
  `[kd * kh * kw * C, O]`. Differentiated by JAX; the copies are small where it is used."""
  kd, kh, kw, c, o = kernel.shape
  x = tiling.concat(xs)
  if padding == "SAME":
    x = jnp.pad(x, [(0, 0), (kd // 2, kd // 2), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)])
  b, dp, hp, wp, _ = x.shape
  d, h, w = dp - kd + 1, hp - kh + 1, wp - kw + 1
  cols = jnp.concatenate([x[:, a:a + d, p:p + h, q:q + w] for a in range(kd) for p in range(kh)
                          for q in range(kw)], axis=-1)
  y = cols.reshape(-1, kd * kh * kw * c) @ kernel.reshape(kd * kh * kw * c, o)
  return y.reshape(b, d, h, w, o)


def _check(xs: Sequence[jax.Array], kernel: jax.Array, padding: str) -> None:
  shapes = [tuple(x.shape) for x in xs]
  if (not xs or kernel.ndim != 5 or any(len(s) != 5 or s[:4] != shapes[0][:4] for s in shapes)
      or sum(s[-1] for s in shapes) != kernel.shape[3]):
    raise ValueError(f"conv3d needs x [B, D, H, W, C] (or inputs [B, D, H, W, C_i] with "
                     f"sum C_i = C) and kernel [kd, kh, kw, C, O]; got x shape(s) "
                     f"{', '.join(map(str, shapes))} and kernel shape {kernel.shape}.")
  if padding not in PADDINGS:
    raise ValueError(f"conv3d padding must be one of {PADDINGS}; got {padding!r}.")
  if padding == "SAME" and any(k % 2 == 0 for k in kernel.shape[:3]):
    raise ValueError(f"conv3d (SAME padding) needs odd kernel sizes; got kernel shape "
                     f"{kernel.shape}.")
  if padding == "VALID" and any(s < k for s, k in zip(shapes[0][1:4], kernel.shape[:3])):
    raise ValueError(f"conv3d (VALID padding) needs spatial sizes >= the kernel's; got x shape "
                     f"{shapes[0]} and kernel shape {kernel.shape}.")


def conv3d(x: jax.Array | Sequence[jax.Array], kernel: jax.Array, *, method: str = "auto",
           padding: str = "SAME") -> jax.Array:
  """Stride-1 3D convolution, `[B, D, H, W, C]` * `[kd, kh, kw, C, O]`.

  SAME: `y[b, d, h, w, o] = sum_{a,p,q,c} x[b, d+a-kd//2, h+p-kh//2, w+q-kw//2, c]
  kernel[a, p, q, c, o]` (zero outside the volume; odd kernel sizes), the values of
  `nn.Conv(O, (kd, kh, kw), padding='SAME', use_bias=False)`. VALID: the same sum without the
  padding, `[B, D-kd+1, H-kh+1, W-kw+1, O]`, as `nn.Conv(..., padding='VALID')`; the 2D methods
  compute it as the SAME convolution cropped by `k // 2` at each end (odd kernel sizes), which on
  CPU is still faster than XLA's 3D VALID convolution. Methods, all the same sum up to float
  rounding:

  * 'winograd': Winograd's F(m, kd) along depth (m = 4 output slices per block, 2 for depth < 4):
    per block `y[m i + r] = sum_j A[r, j] conv2d(u_j, k_j)` with
    `u_j = sum_t B[j, t] x[m i + t - kd//2]`
    and `k_j = sum_a G[j, a] kernel[a]` (`winograd.matrices`); for 3x3x3 kernels 6 2D
    convolutions per 4 output slices instead of 12. Float32 results are within a few 1e-6 of the
    direct sum, relative to the largest output. Its kernel gradient is the transpose of the same
    form (`dk[a] = sum_j G[j, a] dk_j`);
  * 'fold_in': the kd depth-shifted copies of `x` side by side in the channels
    (`[B * D, H, W, kd * C]`), one 2D convolution with the kernel `[kh, kw, kd * C, O]`;
  * 'fold_out': one 2D convolution to `kd * O` channels (`kernel[a]` side by side), then the kd
    output blocks shifted in depth and summed;
  * 'sum': the sum of kd 2D convolutions of depth-shifted `x` with `kernel[a]`;
  * 'im2col': the kd * kh * kw shifted copies of `x` side by side in the channels, one matrix
    product with the kernel `[kd * kh * kw * C, O]` (for a few voxels: its copies grow with the
    volume times the kernel size), differentiated by JAX;
  * 'auto': `auto_method(kernel.shape, spatial shape)`: the fastest measured on CPU, 'xla' on
    other backends;
  * 'xla': XLA's 3D convolution (`lax.conv_general_dilated`), differentiated by JAX.
  Old names (`ALIASES`): 'stack2d' = 'fold_in'; 'xla3d' and 'plain' = 'xla'.

  The 2D methods have their own backward pass (`jax.custom_vjp`): the input gradient is the
  convolution of the output gradient with the flipped, channel-swapped kernel (by the same
  method, or under 'auto' by the one `auto_method` picks for that kernel), and the kernel
  gradient 2D kernel gradients of the transformed ('winograd') or depth-stacked input, or for
  fewer than `conv2d.FEW_OUTPUTS` outputs matrix products against shifted copies of the output
  gradient (`conv2d.few_outputs_kernel_grad`). The 2D convolutions run on pieces of a few depth slices (at most
  `tiling.PIECE_BYTES` of input, two at a time), 1.5-2x faster on CPU than on the whole volume.
  Only `x` and `kernel` are kept for the backward pass. Reverse-mode differentiation only (no
  `jax.jvp`).

  `x` may be a sequence of arrays `[B, D, H, W, C_i]` (a U-Net decoder's skip and up-sampled
  inputs): the convolution of their concatenation along the channels, `sum C_i = C`, which the
  2D methods never form (only piece by piece), nor its gradient (one per input). That saves
  the concatenation's memory in the forward pass and its gradient's in the backward pass.

  Args:
    x: input `[B, D, H, W, C]`, or a sequence of inputs to read as their concatenation.
    kernel: `[kd, kh, kw, C, O]` (odd kd, kh, kw for SAME padding and for VALID by a 2D method).
    method: one of `METHODS` or `ALIASES`.
    padding: 'SAME' or 'VALID'.

  Returns:
    `[B, D', H', W', O]` in the promoted dtype of `x` and `kernel`.
  """
  method = canonical_method(method)
  xs = tuple(x) if isinstance(x, (list, tuple)) else (x,)
  _check(xs, kernel, padding)
  dtype = jnp.result_type(*xs, kernel)
  xs, kernel = tuple(x.astype(dtype) for x in xs), kernel.astype(dtype)
  input_grad_method = method
  if method == "auto":
    spatial = xs[0].shape[1:4]
    method = auto_method(kernel.shape, spatial_shape=spatial)
    # The input gradient is a convolution with in and out channels swapped: its own choice.
    kd, kh, kw, c, o = kernel.shape
    input_grad_method = auto_method((kd, kh, kw, o, c), spatial_shape=spatial)
  if method == "im2col":
    return _im2col(xs, kernel, padding)
  if method != "xla" and any(k % 2 == 0 for k in kernel.shape[:3]):
    method = "xla"  # VALID with an even kernel size: no SAME form to crop
  if method == "xla":
    pads = ([(k // 2, k // 2) for k in kernel.shape[:3]] if padding == "SAME" else
            [(0, 0)] * 3)
    return lax.conv_general_dilated(tiling.concat(xs), kernel, (1, 1, 1), pads,
                                    dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  y = _conv3d_2d(xs, kernel, (method, input_grad_method))
  if padding == "VALID":
    (pd, ph, pw), (d, h, w) = [k // 2 for k in kernel.shape[:3]], y.shape[1:4]
    y = y[:, pd:d - pd, ph:h - ph, pw:w - pw]
  return y
