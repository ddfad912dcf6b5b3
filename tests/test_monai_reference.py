"""medjax against MONAI's (and torch's) own outputs, stored in tests/monai_reference/.

`tests/monai_reference/make_fixtures.py` ran MONAI (version in `cases.json`) on small fixed
inputs -- seeded volumes and the inputs of MONAI's own unit tests -- and stored inputs and outputs
in medjax's layout. This file needs neither torch nor MONAI: it replays each case through the
medjax function named in the fixture with the keyword options stored there, and compares.

Tolerances: MONAI computes in float32, so the losses and the blended sliding-window outputs are
compared at `rtol=1e-5` (float32 sums of at most a few thousand terms, accumulated in another
order) with `atol=1e-6` for values near 0. The metrics are compared at `rtol=1e-5`: MONAI
takes its percentiles in float32 (medjax float64), e.g. 3.100006 for an exact 3.1.
"""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import inference
from medjax import losses
from medjax import metrics
from monai_reference.spheres import create_spherical_seg_3d

HERE = pathlib.Path(__file__).resolve().parent / "monai_reference"
META = json.loads((HERE / "cases.json").read_text())
CASES = {c["name"]: c for c in META["cases"]}
ARRAYS = np.load(HERE / "fixtures.npz")
LOSS_TOL = dict(rtol=1e-5, atol=1e-6)
METRIC_TOL = dict(rtol=1e-5, atol=1e-9)
SW_TOL = dict(rtol=1e-5, atol=1e-6)


def _cases(group: str) -> list:
  return [pytest.param(c, id=c["name"]) for c in META["cases"] if c["group"] == group]


def _arrays(case: dict) -> dict[str, np.ndarray]:
  return {field: ARRAYS[key] for field, key in case["arrays"].items()}


def _function(module, name: str):
  fn = getattr(module, name, None)
  if fn is None:
    pytest.fail(f"{module.__name__}.{name} does not exist (the fixture needs it)")
  return fn


def _msg(case: dict) -> str:
  return f"{case['name']}: medjax vs {case['monai']} ({case['source']})"


def test_fixture_versions_and_size():
  versions = META["versions"]
  assert versions["monai"] and versions["torch"]
  size = sum(p.stat().st_size for p in HERE.iterdir() if p.suffix in (".npz", ".json"))
  assert size < 1 << 20, f"the fixtures hold {size} bytes; keep them under 1 MiB"


# ----------------------------------------------------------------------------------------------
# Losses: medjax.losses.<fn>(logits [B, ..., K], labels [B, ...] ids or [B, ..., K] floats)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", _cases("loss"))
def test_loss_matches_monai(case):
  a = _arrays(case)
  fn = _function(losses, case["fn"])
  kwargs = {k: (np.asarray(v, np.float32) if isinstance(v, list) else v)
            for k, v in case["kwargs"].items()}
  # Jitted, as in a train step (and one compilation per case instead of one per operation).
  loss = jax.jit(functools.partial(fn, **kwargs))
  got = np.asarray(loss(jnp.asarray(a["logits"]), jnp.asarray(a["labels"])))
  expected = a["expected"]
  if case["squeeze"]:  # MONAI's singleton axes (GeneralizedDiceLoss reduction='none': [B, 1])
    got, expected = np.squeeze(got), np.squeeze(expected)
  np.testing.assert_allclose(got, expected, **LOSS_TOL, err_msg=_msg(case))


# ----------------------------------------------------------------------------------------------
# DiceMetric: metrics.dice_per_class per case, then metrics.reduce_metric
# ----------------------------------------------------------------------------------------------

def _dice_values(case: dict, a: dict) -> np.ndarray:
  """`[B, K']` per-case, per-class Dice, as MONAI's DiceMetric(reduction='none')."""
  pred, label = a["pred"], a["label"]
  k, ignore_empty = case["num_classes"], case["ignore_empty"]
  if case["layout"] == "ids":  # class-id maps [B, ...]
    values = np.stack([metrics.dice_per_class(p, g, num_classes=k, ignore_empty=ignore_empty)
                       for p, g in zip(pred, label)])
  else:  # MONAI's one-hot (or multi-hot) channels [B, ..., C]: each channel its own binary map
    values = np.array([[metrics.dice_per_class(p[..., c], g[..., c], num_classes=2,
                                               ignore_empty=ignore_empty)[1]
                        for c in range(k)] for p, g in zip(pred, label)])
  first = 0 if case["include_background"] or k == 1 else 1
  return values[:, first:]


@pytest.mark.parametrize("case", _cases("dice_metric"))
def test_dice_metric_matches_monai(case):
  a = _arrays(case)
  values = _dice_values(case, a)
  np.testing.assert_allclose(values, a["none"], **METRIC_TOL, equal_nan=True, err_msg=_msg(case))
  for reduction in case["reductions"]:
    if f"{reduction}.value" not in a:
      continue
    value, not_nans = metrics.reduce_metric(values, reduction)
    np.testing.assert_allclose(value, a[f"{reduction}.value"], **METRIC_TOL, equal_nan=True,
                               err_msg=f"{_msg(case)}, reduction={reduction!r} value")
    np.testing.assert_allclose(not_nans, a[f"{reduction}.not_nans"], err_msg=(
        f"{_msg(case)}, reduction={reduction!r} not_nans"))


# ----------------------------------------------------------------------------------------------
# Hausdorff / surface distance / surface Dice, per (case, class) on binary masks
# ----------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _distance_values(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(medjax `[B, K']`, MONAI `[B, K']`, mask of the (case, class) pairs with an empty mask)."""
  case = CASES[name]
  a = _arrays(case)
  fn = _function(metrics, case["fn"])
  kwargs = dict(case["kwargs"])
  tolerances = case.get("tolerances")
  got = np.zeros(a["expected"].shape)
  empty = np.zeros(a["expected"].shape, bool)
  for b in range(a["pred"].shape[0]):
    for j, c in enumerate(range(case["first_class"], case["num_classes"])):
      p, g = a["pred"][b] == c, a["label"][b] == c
      extra = {} if tolerances is None else {"tolerance": tolerances[j]}
      got[b, j] = fn(p, g, **kwargs, **extra)
      empty[b, j] = not p.any() or not g.any()
  return got, a["expected"], empty


@pytest.mark.parametrize("case", _cases("distance"))
def test_distance_metric_matches_monai(case):
  got, expected, empty = _distance_values(case["name"])
  np.testing.assert_allclose(got[~empty], expected[~empty], **METRIC_TOL, err_msg=_msg(case))


def _has_empty_mask(case: dict) -> bool:
  a = _arrays(case)
  return any(not (a["pred"][b] == c).any() or not (a["label"][b] == c).any()
             for b in range(a["pred"].shape[0])
             for c in range(case["first_class"], case["num_classes"]))


@pytest.mark.parametrize("case", [c for c in _cases("distance") if _has_empty_mask(c.values[0])])
def test_distance_metric_empty_masks_match_monai(case):
  """(case, class) pairs where the prediction or the truth (or both) is empty.

  One documented difference: with exactly one mask empty, the distances are inf, and MONAI's
  percentile of those infs comes out nan (its quantile of an all-inf list); medjax's percentile
  Hausdorff keeps inf there, as MONAI's own maximum (percentile=None) and ASSD do.
  """
  got, expected, empty = _distance_values(case["name"])
  a = _arrays(case)
  expected = expected.copy()
  if case["fn"] == "hausdorff_distance" and case["kwargs"].get("percentile") is not None:
    for b, j in np.argwhere(empty):
      c = case["first_class"] + j
      one_empty = (a["pred"][b] == c).any() != (a["label"][b] == c).any()
      if one_empty:
        assert np.isnan(expected[b, j]), "MONAI's percentile of infs is no longer nan"
        expected[b, j] = np.inf
  np.testing.assert_allclose(got[empty], expected[empty], equal_nan=True, err_msg=(
      f"{_msg(case)}; empty-mask pairs (batch, class) {np.argwhere(empty).tolist()}"))


def _sphere(spec):
  return (np.zeros((99, 99, 99), bool) if spec is None
          else create_spherical_seg_3d(**spec).astype(bool))


@pytest.mark.parametrize("case", _cases("sphere"))
def test_sphere_distances_match_monai(case):
  pred, gt = _sphere(case["pred_sphere"]), _sphere(case["gt_sphere"])
  spacing = case["spacing"]
  fn = _function(metrics, case["fn"])
  if case["fn"] == "hausdorff_distance":
    got = [fn(pred, gt, spacing=spacing, percentile=case["percentile"], directed=directed,
              distance_metric=metric) for metric, directed in case["combos"]]
  else:
    got = [fn(pred, gt, spacing=spacing, symmetric=symmetric,
              distance_metric=case["distance_metric"]) for symmetric in case["symmetric"]]
  np.testing.assert_allclose(got, _arrays(case)["expected"], **METRIC_TOL, equal_nan=True,
                             err_msg=_msg(case))


# ----------------------------------------------------------------------------------------------
# Sliding-window inference
# ----------------------------------------------------------------------------------------------

def _predictor(kind: str, w, b):
  """The fixture's predictors in jnp, channels-last (make_fixtures.torch_predictor), jitted.

  Cached by (kind, W, b), so that cases sharing them (and their shapes) compile once.
  """
  key = (kind, None if w is None else (w.tobytes(), w.shape), None if b is None else b.tobytes())
  if key not in _PREDICTORS:
    _PREDICTORS[key] = jax.jit(_make_predictor(kind, w, b))
  return _PREDICTORS[key]


_PREDICTORS: dict = {}


def _make_predictor(kind: str, w, b):
  w = None if w is None else jnp.asarray(w)
  b = None if b is None else jnp.asarray(b)

  def predict(x):
    if kind == "cval_sum":
      return x + jnp.sum(x)
    z = jnp.einsum("ndhwc,ck->ndhwk", x, w) + b
    window_mean = jnp.mean(z, axis=(1, 2, 3), keepdims=True)
    if kind == "window_mean":
      return jnp.tanh(z) + window_mean
    if kind == "batch_mean":
      return jnp.tanh(z) + jnp.mean(z, axis=(0, 1, 2, 3), keepdims=True)
    if kind == "multi":
      return jnp.tanh(z), 0.5 * z + window_mean
    if kind == "multi_dict":
      return {"seg": jnp.tanh(z), "aux": 0.5 * z + window_mean}
    if kind == "multi_scale":
      return jnp.tanh(z), z[:, ::2, ::2, ::2]
    raise ValueError(kind)

  return predict


def _expected_structure(case, a):
  kind = case["structure"][0]
  if kind == "array":
    return a["expected"]
  if kind == "tuple":
    return tuple(a[f"expected.{i}"] for i in range(case["structure"][1]))
  return {key: a[f"expected.{key}"] for key in case["structure"][1]}


def _assert_same_structure(got, expected, msg):
  if isinstance(expected, dict):
    assert isinstance(got, dict) and sorted(got) == sorted(expected), msg
    for key in expected:
      np.testing.assert_allclose(np.asarray(got[key]), expected[key], **SW_TOL,
                                 err_msg=f"{msg}, output {key!r}")
  elif isinstance(expected, tuple):
    assert isinstance(got, (tuple, list)) and len(got) == len(expected), msg
    for i, (g, e) in enumerate(zip(got, expected)):
      np.testing.assert_allclose(np.asarray(g), e, **SW_TOL, err_msg=f"{msg}, output {i}")
  else:
    np.testing.assert_allclose(np.asarray(got), expected, **SW_TOL, err_msg=msg)


def _run_sw(case, a, **extra):
  return inference.sliding_window_inference(
      jnp.asarray(a["image"]), case["roi_size"], case["sw_batch_size"],
      _predictor(case["predictor"], a.get("w"), a.get("b")), **case["options"], **extra)


@pytest.mark.parametrize("case", _cases("sliding_window"))
def test_sliding_window_matches_monai(case):
  a = _arrays(case)
  expected = _expected_structure(case, a)
  if case["predictor"] == "multi_scale":
    # MONAI blends a half-resolution second output on its own grid; medjax may support it or
    # refuse it with a ValueError (spec B), but never return something else.
    try:
      got = _run_sw(case, a)
    except ValueError as e:
      assert "output" in str(e).lower(), str(e)
      return
    _assert_same_structure(got, expected, _msg(case))
    return
  # The default, pad_last_batch=False, runs MONAI's window batches (the last one short).
  _assert_same_structure(_run_sw(case, a), expected, _msg(case))


@pytest.mark.parametrize("case", [c for c in _cases("sliding_window")
                                  if c.values[0]["predictor"] in ("window_mean", "multi")
                                  and len(set(c.values[0]["monai_batch_sizes"])) > 1])
def test_sliding_window_pad_last_batch_matches_monai_for_windowwise_predictors(case):
  # A predictor that treats windows independently may see repeats in the last batch.
  a = _arrays(case)
  _assert_same_structure(_run_sw(case, a, pad_last_batch=True), _expected_structure(case, a),
                         _msg(case) + " with pad_last_batch=True")


def test_batch_mixing_fixtures_have_a_short_last_batch():
  # The fixtures that check pad_last_batch=False really have a short last batch in MONAI.
  mixing = [c for c in META["cases"] if c["group"] == "sliding_window"
            and c["predictor"] in ("batch_mean",)]
  assert len(mixing) >= 3
  for c in mixing:
    sizes = c["monai_batch_sizes"]
    assert sizes[-1] < c["sw_batch_size"] and all(s == c["sw_batch_size"] for s in sizes[:-1]), c
