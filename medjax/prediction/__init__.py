"""Segmenting whole scans with a trained model: the library behind `python -m medjax.predict`.

* `cases`: the scans to segment (`Case`; `load_case` for a T1/T2 pair, `load_images_case` for
  channel files, `select_cases` for a folder; `check_modalities`);
* `segment`: `preprocessing_of(workdir, config)` and `segment(model, variables, config, image)`
  -> probabilities `[D, H, W, K]` on the scan's grid;
* `ensemble`: the mean of several members (models, flips) and their spread (`MemberStats`);
* `writing`: `write_outputs` (label map, probabilities, uncertainty, PNG);
* `runner`: `run`, all of the above for the scans of one workdir.
"""

from medjax.prediction.cases import Case
from medjax.prediction.cases import check_modalities
from medjax.prediction.cases import load_case
from medjax.prediction.cases import load_images_case
from medjax.prediction.cases import load_iseg_case
from medjax.prediction.cases import select_cases
from medjax.prediction.cases import select_subjects
from medjax.prediction.ensemble import UNCERTAINTIES
from medjax.prediction.ensemble import MemberStats
from medjax.prediction.runner import run
from medjax.prediction.segment import preprocessing_of
from medjax.prediction.segment import segment
from medjax.prediction.writing import FORMATS
from medjax.prediction.writing import VALUES
from medjax.prediction.writing import write_outputs

__all__ = [
    "Case", "FORMATS", "MemberStats", "UNCERTAINTIES", "VALUES", "check_modalities", "load_case", "load_images_case",
    "load_iseg_case", "preprocessing_of", "run", "segment", "select_cases", "select_subjects",
    "write_outputs",
]
