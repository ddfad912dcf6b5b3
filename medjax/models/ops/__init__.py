"""The maths beneath `medjax.models.layers` (channels-last, `[B, D, H, W, C]`), one job a module:

* `tiling`: how a convolution is cut into pieces of depth slices, and `tie` (ordering for XLA);
* `conv2d`: 2D convolutions and the direct 3D-as-2D forms ('fold_in', 'fold_out', 'sum');
* `winograd`: Winograd's minimal filtering F(m, kd) along depth;
* `conv`: the dispatcher `conv3d` (every method, SAME and VALID) with its backward pass;
* `pooling`: `max_pool_2x`;
* `batch_norm`: BatchNorm (+ ReLU) with a memory-saving backward pass;
* `resample`: the matmul forms of the 2x2x2 stride-2 convolution and transposed convolution,
  and the 3D pixel-shuffle pair `depth_to_space` / `space_to_depth`.
"""
