"""Every registered model against what it was before the two layer stacks became one (commit
c087c0e, `tests/fixtures/model_reference.json`, written by `make_model_reference.py` there):
the same variable trees (checkpoints keep loading), and, at tiny widths, the same logits in both
modes, updated batch statistics and parameter gradients."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))
import make_model_reference as ref  # pylint: disable=g-import-not-at-top,wrong-import-position

from medjax import models  # pylint: disable=g-import-not-at-top,wrong-import-position

with open(os.path.join(os.path.dirname(__file__), "fixtures", "model_reference.json")) as f:
  REFERENCE = json.load(f)


def test_every_model_has_a_reference():
  assert sorted(REFERENCE["trees"]) == sorted(models.MODELS)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_variable_trees_unchanged(name):
  assert ref.trees(name) == REFERENCE["trees"][name]


def _assert_close(actual: list, expected: list, what: str, floor: float = 0.0) -> None:
  # [norm, samples...]: the norm within 1e-4 relative, samples within 1e-4 of the norm, both
  # up to `floor` (rounding noise of values that are zero in exact arithmetic, such as the
  # gradient of a convolution bias that feeds a BatchNorm).
  actual, expected = np.asarray(actual), np.asarray(expected)
  np.testing.assert_allclose(actual[0], expected[0], rtol=1e-4, atol=floor, err_msg=what)
  np.testing.assert_allclose(actual[1:], expected[1:], atol=1e-4 * expected[0] + floor,
                             err_msg=what)


def _assert_tree_close(actual: dict, expected: dict, what: str) -> None:
  assert sorted(actual) == sorted(expected), what
  floor = 1e-5 * max([v[0] for v in expected.values()], default=0.0)
  for key in expected:
    _assert_close(actual[key], expected[key], f"{what} {key}", floor)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_values_unchanged(name):
  # XLA's convolution: it compiles 3-4x faster than 'auto' (the default) in float64, and every
  # other method is checked against it, layer by layer and in the U-Net, in test_fast_conv.py.
  values = ref.values(ref.tiny_model(name, conv_method="xla"))
  expected = REFERENCE["values"][name]
  for key in ("eval_logits", "train_logits"):
    _assert_close(values[key], expected[key], f"{name} {key}")
  _assert_tree_close(values["batch_stats"], expected["batch_stats"], f"{name} batch_stats")
  _assert_tree_close(values["grads"], expected["grads"], f"{name} grads")
