"""MONAI's sphere test input (tests/metrics/test_hausdorff_distance.py), numpy only.

Shared by make_fixtures.py (which ran MONAI on it) and tests/test_monai_reference.py (which
rebuilds the same volumes from their stored parameters).
"""

import numpy as np


def create_spherical_seg_3d(radius=20.0, centre=(49, 49, 49), im_shape=(99, 99, 99),
                            im_spacing=(1.0, 1.0, 1.0)):
  """1 inside a sphere of `radius` mm around `centre` (mm), 0 outside: int32 `im_shape`."""
  image = np.zeros(im_shape, dtype=np.int32)
  spy, spx, spz = np.ogrid[: im_shape[0], : im_shape[1], : im_shape[2]]
  spy = spy.astype(float) * im_spacing[0] - centre[0]
  spx = spx.astype(float) * im_spacing[1] - centre[1]
  spz = spz.astype(float) * im_spacing[2] - centre[2]
  image[(spx * spx + spy * spy + spz * spz) <= radius * radius] = 1
  return image
