"""Class names and label values: what the class ids of a segmentation mean."""


def default_class_names(num_classes: int) -> tuple[str, ...]:
  """Names for the classes of a dataset that gives none: background, class1, class2, ..."""
  return ("background",) + tuple(f"class{i}" for i in range(1, num_classes))
