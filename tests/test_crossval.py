"""`medjax.crossval` end to end on the tiny built-in dataset: every fold trained and validated,
resumed without retraining, summarised; then the folds' ensemble through `prediction.run`."""

import json

import nibabel as nib
import numpy as np
import pytest

import tiny
from medjax import prediction
from medjax.evaluation import crossval

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def cv_root(tmp_path_factory, _iseg_base_config):
  config = tiny.shrink(_iseg_base_config, num_train_steps=2, eval_every_steps=2,
                       dataset__num_folds=2, **tiny.FAST_COMPILE)
  root = tmp_path_factory.mktemp("cv")
  lines = []
  summary = crossval.run(config, root, log=lines.append)
  return config, root, summary, lines


def test_every_fold_validates_other_cases_and_the_summary_adds_up(cv_root):
  _, root, summary, _ = cv_root
  docs = [json.loads((root / f"fold_{k}" / "validation.json").read_text()) for k in (0, 1)]
  cases = [set(d["cases"]) for d in docs]
  assert cases[0] and cases[1] and not cases[0] & cases[1]  # each case validates in one fold
  for d in docs:
    for case in d["cases"].values():
      assert nib.load(case["prediction"]).shape[:3] == (24, 28, 32)
  assert summary["folds"] == [0, 1]
  keep = json.loads((root / "postprocessing.json").read_text())["keep_largest_component"]
  assert keep == summary["keep_largest_component"]
  on_disk = json.loads((root / "crossval.json").read_text())
  for k, name in ((1, "CSF"), (2, "GM"), (3, "WM")):
    row = on_disk["classes"][name]
    variant = "largest_component" if k in keep else "raw"
    assert row["postprocessing"] == variant
    fold_means = [np.mean([c[variant][str(k)]["dice"] for c in d["cases"].values()])
                  for d in docs]
    assert row["dice"]["folds"] == {"0": pytest.approx(fold_means[0]),
                                    "1": pytest.approx(fold_means[1])}
    assert row["dice"]["mean"] == pytest.approx(np.mean(fold_means))
    assert row["dice"]["std"] == pytest.approx(np.std(fold_means))


def test_rerun_resumes_without_training(cv_root):
  config, root, summary, _ = cv_root

  def must_not_train(*args):
    raise AssertionError("a finished fold was trained again")

  lines = []
  assert crossval.run(config, root, train_fn=must_not_train, log=lines.append) == summary
  assert all("validated already" in line for line in lines[:2])
  # A fold trained but not validated (killed during validation) is validated, not retrained.
  (root / "fold_1" / "validation.json").unlink()
  lines = []
  assert crossval.run(config, root, train_fn=must_not_train, log=lines.append) == summary
  assert "fold 1: trained already; validating." in lines
  with pytest.raises(ValueError, match="fold 2: expected 0..1"):
    crossval.run(config, root, folds=[2])


def test_folds_ensemble_averages_probabilities(cv_root, iseg_raw_dir, tmp_path):
  _, root, _, _ = cv_root
  folds = [str(root / "fold_0"), str(root / "fold_1")]
  t1 = str(iseg_raw_dir / "iSeg-2017-Testing" / "subject-11-T1.hdr")
  t2 = t1.replace("-T1", "-T2")

  def probs(workdirs, out, **kwargs):
    result, = prediction.run(workdirs, output_dir=str(tmp_path / out), t1=t1, t2=t2,
                             save_probabilities=True, png=False, **kwargs)
    return result["files"], np.asarray(nib.load(result["files"]["probabilities"]).dataobj)

  _, p0 = probs(folds[0], "f0")
  _, p1 = probs(folds[1], "f1")
  files, both = probs(folds, "ens", uncertainty="variance", postprocessing=str(root))
  np.testing.assert_allclose(both, (p0 + p1) / 2, atol=1e-6)
  variance = np.asarray(nib.load(files["uncertainty"]).dataobj)
  np.testing.assert_allclose(variance.reshape(p0.shape[:3]),
                             (((p0 - p1) / 2) ** 2).mean(-1), atol=1e-6)
  with pytest.raises(ValueError, match="at least two members"):
    prediction.run(folds[0], output_dir=str(tmp_path / "x"), t1=t1, t2=t2,
                   uncertainty="variance")
