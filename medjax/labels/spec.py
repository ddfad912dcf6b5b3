"""What the class ids of a segmentation mean: class names, label values, regions (`LabelSpec`)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LabelSpec:
  """What the classes of the label maps are.

  Attributes:
    class_names: class id k's name; class 0 is the background.
    label_values: the on-disk label value of class k (e.g. BraTS (0, 1, 2, 4)).
    regions: region name -> the class ids it unites, e.g. {"WT": (1, 2, 3)}; may be empty.
    source: where this came from (a file, or `--num_classes`), for messages.
  """
  class_names: tuple[str, ...]
  label_values: tuple[int, ...]
  regions: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
  source: str = "--num_classes"

  def __post_init__(self):
    k = len(self.class_names)
    if not 2 <= k <= 256:
      raise ValueError(f"{self.source}: {k} classes {list(self.class_names)[:8]}; expected 2 to "
                       "256 (background included).")
    if len(self.label_values) != k or len(set(self.label_values)) != k:
      raise ValueError(f"{self.source}: label values {list(self.label_values)} must be {k} "
                       f"distinct integers, one per class {list(self.class_names)}.")
    for name, ids in self.regions.items():
      if not ids or any(not 0 <= i < k for i in ids):
        raise ValueError(f"{self.source}: region {name!r} = {list(ids)}; expected class ids in "
                         f"0..{k - 1}.")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


# medjax's first dataset, and the meaning of 4 classes when nothing else says (`medjax.evaluate
# --num_classes=4` without a workdir, README): iSeg-2017's names and its on-disk values.
ISEG2017 = LabelSpec(class_names=("background", "CSF", "GM", "WM"),
                     label_values=(0, 10, 150, 250), source="iSeg-2017")
# Label conventions known by their number of classes alone.
_BY_NUM_CLASSES = {ISEG2017.num_classes: ISEG2017}


def default_class_names(num_classes: int) -> tuple[str, ...]:
  """Names for the classes of a dataset that gives none: background, class1, class2, ..."""
  return ("background",) + tuple(f"class{i}" for i in range(1, num_classes))


def default_labels(num_classes: int) -> LabelSpec:
  """The classes of label maps nothing describes (no workdir, no dataset.json): iSeg-2017's
  for 4 classes, else class ids 0..K-1 named `class0`, `class1`, ..."""
  known = _BY_NUM_CLASSES.get(num_classes)
  if known is not None:
    return dataclasses.replace(known, source=f"--num_classes={num_classes}")
  return LabelSpec(class_names=tuple(f"class{k}" for k in range(num_classes)),
                   label_values=tuple(range(num_classes)), source=f"--num_classes={num_classes}")
