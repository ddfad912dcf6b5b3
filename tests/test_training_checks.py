"""What training refuses before it starts: a saved run's preprocessing, an unwritable workdir."""

import os
import types

import pytest

from medjax.training import checks
from medjax.training import workdir as workdir_lib


def test_saved_preprocessing_must_agree_with_the_config(tmp_path):
  saved = types.SimpleNamespace(normalization="z_score", spacing=(1.0, 1.0, 1.0))
  checks.check_saved_preprocessing(saved, {"normalization": "z_score"}, str(tmp_path))
  with pytest.raises(ValueError) as e:
    checks.check_saved_preprocessing(saved, {"normalization": "z_score", "spacing": None},
                                     str(tmp_path))
  assert str(e.value) == (
      f"{tmp_path}/preprocessing.json was written with spacing=(1.0, 1.0, 1.0), but the config "
      "asks for None; use the run's own config or a new --workdir.")


def test_prepare_workdir_creates_and_probes(tmp_path):
  workdir = workdir_lib.prepare_workdir(str(tmp_path / "a" / "b"))
  assert workdir == str(tmp_path / "a" / "b") and os.listdir(workdir) == []  # probe removed
  (tmp_path / "file").write_text("x")
  with pytest.raises(PermissionError, match="file/run is not writable"):
    workdir_lib.prepare_workdir(str(tmp_path / "file" / "run"))
