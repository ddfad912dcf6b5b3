"""Class names and label values: what the class ids of a segmentation mean.

The one home of these facts for every dataset and entry point:

* `spec`: `LabelSpec` (class names, on-disk label values, regions), `ISEG2017`,
  `default_class_names`, `default_labels` (the meaning of K classes when nothing describes them);
* `values`: `values_to_classes` / `classes_to_values` (on-disk values <-> class ids 0..K-1),
  `to_class_ids` and `load_label_map` (which of the two a label map holds);
* `sources`: `labels_from_workdir`, `labels_from_dataset_json`, `resolve_labels`.

Nothing here imports JAX, so `medjax.evaluate` starts fast.
"""

from medjax.labels.sources import labels_from_dataset_json
from medjax.labels.sources import labels_from_workdir
from medjax.labels.sources import resolve_labels
from medjax.labels.spec import default_class_names
from medjax.labels.spec import default_labels
from medjax.labels.spec import ISEG2017
from medjax.labels.spec import LabelSpec
from medjax.labels.values import classes_to_values
from medjax.labels.values import load_label_map
from medjax.labels.values import to_class_ids
from medjax.labels.values import VALUES
from medjax.labels.values import values_to_classes

__all__ = [
    "ISEG2017", "LabelSpec", "VALUES", "classes_to_values", "default_class_names",
    "default_labels", "labels_from_dataset_json", "labels_from_workdir", "load_label_map",
    "resolve_labels", "to_class_ids", "values_to_classes",
]
