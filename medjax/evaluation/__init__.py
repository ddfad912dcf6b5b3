"""Scoring label maps against ground truth: the library behind `python -m medjax.evaluate`.

* `matching`: pair prediction and ground-truth files by case (`match_files`, `subject_key`);
* `scoring`: Dice, HD95, ASSD (and NSD) of one pair, per class and per region (`evaluate_pair`);
* `report`: the table and `metrics.csv` / `metrics.json` (`summarize`, `format_table`,
  `save_results`);
* `runner`: `run`, all of the above in one call.

Class names, label values and regions come from `medjax.labels`. Nothing here imports JAX, so
scoring files starts fast.
"""

from medjax.evaluation.matching import match_files
from medjax.evaluation.matching import subject_key
from medjax.evaluation.report import format_table
from medjax.evaluation.report import metric_names
from medjax.evaluation.report import METRIC_NAMES
from medjax.evaluation.report import NSD
from medjax.evaluation.report import row_names
from medjax.evaluation.report import save_results
from medjax.evaluation.report import summarize
from medjax.evaluation.report import UNITS
from medjax.evaluation.runner import run
from medjax.evaluation.scoring import evaluate_pair
from medjax.evaluation.scoring import region_metrics

__all__ = [
    "METRIC_NAMES", "NSD", "UNITS", "evaluate_pair", "format_table", "match_files",
    "metric_names", "region_metrics", "row_names", "run", "save_results", "subject_key",
    "summarize",
]
