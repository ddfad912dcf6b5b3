"""Pictures of a segmentation: median axial, coronal, sagittal slices of image, truth, prediction.

Rendered with matplotlib's Agg canvas on a private `Figure` (no pyplot state), so it is safe in
scripts, tests and training loops alike.
"""

from collections.abc import Sequence
import os
import tempfile

from matplotlib import colors
from matplotlib import patches
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import nibabel as nib
import numpy as np

from medjax import labels as labels_lib

# Fixed colours for class ids 0..3 (background, CSF, GM, WM), so pictures compare across runs.
CLASS_COLORS = ("#000000", "#1f77b4", "#d62728", "#f2e205")
VIEWS = ("axial", "coronal", "sagittal")


def view_axes(affine: np.ndarray | None = None) -> dict[str, int]:
  """Array axis normal to each view: `{'axial': i, 'coronal': j, 'sagittal': k}`.

  From the affine's orientation codes when given (axial slices are normal to the S/I axis,
  coronal to A/P, sagittal to L/R); otherwise NIfTI's nominal voxel order i, j, k = x, y, z
  (sagittal 0, coronal 1, axial 2).
  """
  if affine is None:
    return {"sagittal": 0, "coronal": 1, "axial": 2}
  codes = nib.aff2axcodes(np.asarray(affine, np.float64))
  lookup = {"L": "sagittal", "R": "sagittal", "A": "coronal", "P": "coronal",
            "S": "axial", "I": "axial"}
  axes = {lookup[c]: i for i, c in enumerate(codes) if c in lookup}
  if len(axes) != 3:  # degenerate affine: fall back to the nominal order
    return {"sagittal": 0, "coronal": 1, "axial": 2}
  return axes


def _slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
  # Transposed and drawn with origin='lower' so the second remaining axis points up.
  return np.take(volume, index, axis=axis).T


def _check_labels(name: str, labels: np.ndarray, shape: tuple[int, ...], num_colors: int
                  ) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != shape:
    raise ValueError(f"{name} has shape {labels.shape}; expected the image's spatial shape "
                     f"{shape}.")
  if labels.size and (labels.min() < 0 or labels.max() >= num_colors):
    raise ValueError(f"{name} holds values in [{labels.min()}, {labels.max()}]; expected class "
                     f"ids in [0, {num_colors}) (convert iSeg values 0/10/150/250 first).")
  return labels


def comparison_figure(image: np.ndarray, label: np.ndarray | None, prediction: np.ndarray, *,
                      affine: np.ndarray | None = None,
                      spacing: Sequence[float] | None = None,
                      class_names: Sequence[str] = labels_lib.ISEG2017.class_names,
                      title: str | None = None, legend: bool = True, dpi: int = 80) -> Figure:
  """A figure: rows = axial, coronal, sagittal median slices; columns = T1, truth, prediction.

  Args:
    image: `[D, H, W]` or `[D, H, W, C]` (channel 0, T1, is shown in grey, 1st-99th percentile).
    label: ground-truth class ids `[D, H, W]`, or None (column omitted).
    prediction: predicted class ids `[D, H, W]`.
    affine: optional `[4, 4]` voxel-to-world matrix deciding which axis is axial etc.
    spacing: optional voxel size per axis (mm), for the aspect ratio of each slice.
    class_names: legend names of class ids 0..len-1 (at most 4 colours).
    title: optional figure title.
    legend: draw a legend of the class colours.
    dpi: resolution.
  """
  image = np.asarray(image, np.float32)
  if image.ndim == 4:
    image = image[..., 0]
  if image.ndim != 3:
    raise ValueError(f"image has shape {image.shape}: expected [D, H, W] or [D, H, W, C].")
  num_colors = len(class_names)
  if not 1 <= num_colors <= len(CLASS_COLORS):
    raise ValueError(f"{num_colors} class names; expected 1 to {len(CLASS_COLORS)}.")
  prediction = _check_labels("prediction", prediction, image.shape, num_colors)
  if label is not None:
    label = _check_labels("label", label, image.shape, num_colors)
  spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0, 1.0, 1.0)

  cmap = colors.ListedColormap(CLASS_COLORS[:num_colors])
  norm = colors.BoundaryNorm(np.arange(num_colors + 1) - 0.5, num_colors)
  finite = image[np.isfinite(image)]
  lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
  hi = hi if hi > lo else lo + 1.0
  columns = [("T1", image, dict(cmap="gray", vmin=lo, vmax=hi))]
  if label is not None:
    columns.append(("ground truth", label, dict(cmap=cmap, norm=norm)))
  columns.append(("prediction", prediction, dict(cmap=cmap, norm=norm)))

  fig = Figure(figsize=(2.6 * len(columns), 2.6 * len(VIEWS) + 0.6), dpi=dpi)
  FigureCanvasAgg(fig)
  axes = fig.subplots(len(VIEWS), len(columns), squeeze=False)
  normals = view_axes(affine)
  for row, view in enumerate(VIEWS):
    axis = normals[view]
    index = image.shape[axis] // 2
    rest = [a for a in range(3) if a != axis]
    aspect = spacing[rest[1]] / spacing[rest[0]]  # rows are axis rest[1] after the transpose
    for col, (name, volume, style) in enumerate(columns):
      ax = axes[row, col]
      ax.imshow(_slice(volume, axis, index), origin="lower", interpolation="nearest",
                aspect=aspect, **style)
      ax.set_xticks([])
      ax.set_yticks([])
      if row == 0:
        ax.set_title(name, fontsize=10)
      if col == 0:
        ax.set_ylabel(f"{view} {index}", fontsize=9)
  if legend:
    handles = [patches.Patch(facecolor=CLASS_COLORS[k], edgecolor="white", label=class_names[k])
               for k in range(num_colors)]
    fig.legend(handles=handles, loc="lower center", ncol=num_colors, fontsize=8, frameon=False)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout(rect=(0, 0.05 if legend else 0, 1, 0.97 if title else 1))
  return fig


def comparison_figure_array(image: np.ndarray, label: np.ndarray | None,
                            prediction: np.ndarray, **kwargs) -> np.ndarray:
  """`comparison_figure` rendered to uint8 RGB `[H, W, 3]` (e.g. for TensorBoard images)."""
  fig = comparison_figure(image, label, prediction, **kwargs)
  fig.canvas.draw()
  return np.array(fig.canvas.buffer_rgba())[..., :3]


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def save_comparison_png(path: str, image: np.ndarray, label: np.ndarray | None,
                        prediction: np.ndarray, **kwargs) -> str:
  """Writes `comparison_figure` as a PNG at `path` (atomically: temp file + rename)."""
  path = os.fspath(path)
  fig = comparison_figure(image, label, prediction, **kwargs)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      fig.savefig(f, format="png")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path
