"""Renders docs/images/builtin_brain.png: T1, T2 and label of one full-size built-in subject.

Axial and coronal slices through the brain centre of `generate_subject` (144 x 192 x 256, 1 mm,
seed 0, subject 1) and a sagittal slice through the right lateral ventricle, as shown in README's
"Built-in data" section. Run from the repo root:

  python docs/images/make_builtin_brain.py [--out docs/images/builtin_brain.png]
"""

import argparse
import os
import time

from matplotlib import colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from medjax import viz
from medjax.data import iseg
from medjax.data import synthetic


def render(out: str, *, seed: int = 0, subject_id: int = 1, dpi: int = 90) -> None:
  """Writes the 3 x 3 panel (rows T1, T2, label; columns axial, coronal, sagittal) to `out`."""
  start = time.perf_counter()
  t1, t2, label = synthetic.generate_subject(seed=seed, subject_id=subject_id)
  print(f"generated {t1.shape} in {time.perf_counter() - start:.2f} s")
  class_ids = np.searchsorted(iseg.LABEL_VALUES, label)
  # Show the brain's bounding box (plus a margin), not the whole field of view.
  crop = tuple(slice(max(i.min() - 4, 0), i.max() + 5) for i in np.nonzero(class_ids))
  t1, t2, class_ids = t1[crop], t2[crop], class_ids[crop]
  # Slice through the centre of the brain, not of the field of view, which it need not fill.
  center = [int(round(np.mean(idx))) for idx in np.nonzero(class_ids)]
  # Sagittal 9 mm right of the midline: through a lateral ventricle rather than the fissure.
  center[0] += 9
  axes = viz.view_axes()  # RAS voxels: sagittal 0, coronal 1, axial 2
  cmap = colors.ListedColormap(viz.CLASS_COLORS)

  rows = (("T1", t1, dict(cmap="gray", vmin=0, vmax=np.percentile(t1[t1 > 0], 99.5))),
          ("T2", t2, dict(cmap="gray", vmin=0, vmax=np.percentile(t2[t2 > 0], 99.5))),
          ("label", class_ids, dict(cmap=cmap, vmin=-0.5, vmax=3.5, interpolation="nearest")))
  widths = [t1.shape[0], t1.shape[0], t1.shape[1]]  # each view's horizontal extent
  fig = Figure(figsize=(9, 6.2))
  FigureCanvasAgg(fig)
  grid = fig.add_gridspec(3, 3, width_ratios=widths, wspace=0.03, hspace=0.08, left=0.06,
                          right=0.99, top=0.95, bottom=0.01)
  for r, (name, volume, style) in enumerate(rows):
    for c, view in enumerate(viz.VIEWS):
      ax = fig.add_subplot(grid[r, c])
      axis = axes[view]
      ax.imshow(np.take(volume, center[axis], axis=axis).T, origin="lower", aspect="equal",
                **style)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(view, fontsize=10)
      if c == 0:
        ax.set_ylabel(name, fontsize=10)
  fig.savefig(out, dpi=dpi)
  print(f"wrote {out} ({os.path.getsize(out) / 1024:.0f} KB)")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                    "builtin_brain.png"))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--subject_id", type=int, default=1)
  parser.add_argument("--dpi", type=int, default=90)
  args = parser.parse_args()
  render(args.out, seed=args.seed, subject_id=args.subject_id, dpi=args.dpi)


if __name__ == "__main__":
  main()
