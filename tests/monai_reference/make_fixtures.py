"""Regenerates the MONAI reference fixtures that tests/test_monai_reference.py compares medjax with.

Run from the repository root with torch and MONAI installed (see README.md beside this file):

  python tests/monai_reference/make_fixtures.py

It computes MONAI's (and torch's) outputs on small fixed inputs -- seeded numpy, or the inputs of
MONAI's own unit tests (tests/losses, tests/metrics, tests/inferers of Project-MONAI/MONAI) -- and
writes, beside this file:

* `fixtures.npz`: inputs and outputs in medjax's layout (channels-last logits `[B, ..., K]`,
  integer class-id maps `[B, ...]`, float targets `[B, ..., K]`), keys `<case>.<field>`;
* `cases.json`: one entry per case (which medjax function, with which keyword options, which
  arrays), and the torch / MONAI / numpy versions used.

The translation from MONAI's options to medjax's (`softmax`, `sigmoid`, `class_weights`,
`ignore_empty`, `distance_metric`, ...) is made here, once, per case; the test only replays it.
Where a MONAI test case comes with its own expected number, that number is checked here against
the installed MONAI too (`monai_test_value`), so a fixture never silently drifts from MONAI's
suite.
"""

import hashlib
import json
import pathlib
import platform

import monai
import numpy as np
import scipy
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.losses import (DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss, GeneralizedDiceLoss,
                          TverskyLoss)
from monai.metrics import (DiceMetric, compute_average_surface_distance,
                           compute_hausdorff_distance, compute_surface_dice)
from monai.metrics.utils import do_metric_reduction
from scipy import ndimage
from spheres import create_spherical_seg_3d

HERE = pathlib.Path(__file__).resolve().parent
ARRAYS: dict[str, np.ndarray] = {}
CASES: list[dict] = []
_STORED: dict[tuple, str] = {}
REDUCTIONS = ("none", "mean", "sum", "mean_batch", "sum_batch", "mean_channel", "sum_channel")
T = torch.tensor


def _add(case: dict, **arrays: np.ndarray) -> None:
  names = {c["name"] for c in CASES}
  if case["name"] in names:
    raise ValueError(f"duplicate case name {case['name']}")
  case["arrays"] = {}
  for field, value in arrays.items():
    value = np.asarray(value)
    # Cases that share an input (the same scan, the same label maps) share one stored array.
    digest = (value.dtype.str, value.shape, hashlib.sha1(value.tobytes()).hexdigest())
    key = _STORED.get(digest)
    if key is None:
      key = _STORED[digest] = f"{case['name']}.{field}"
      ARRAYS[key] = value
    case["arrays"][field] = key
  CASES.append(case)


def _np(x) -> np.ndarray:
  return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _cl(x: torch.Tensor) -> np.ndarray:
  """Channel-first `[B, C, ...]` -> medjax's channels-last `[B, ..., C]`."""
  return np.moveaxis(_np(x), 1, -1)


def _check_monai_test_value(name: str, got, expected, rtol=1e-4, atol=1e-4) -> None:
  if expected is None:
    return
  np.testing.assert_allclose(_np(got), np.asarray(expected, np.float64), rtol=rtol, atol=atol,
                             err_msg=f"{name}: installed MONAI differs from its own unit test")


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------

def loss_case(name: str, source: str, monai_loss, inp: torch.Tensor, target: torch.Tensor,
              fn: str, kwargs: dict, *, labels: str, monai_desc: str, pre_act=None,
              monai_test_value=None, squeeze: bool = False) -> None:
  """One MONAI loss evaluation and its medjax call.

  Args:
    inp, target: MONAI's channel-first tensors.
    fn, kwargs: the medjax.losses function and its keyword options.
    labels: 'ids' (target `[B, 1, ...]` of class ids -> `[B, ...]` int32) or 'float' (target of the
      input's shape -> channels-last float32).
    pre_act: a torch activation MONAI applied through `other_act`; medjax gets the activated input
      with softmax=sigmoid=False.
    squeeze: compare squeezed arrays (MONAI's reduction='none' shapes with singleton axes that
      medjax's layout does not have, e.g. GeneralizedDiceLoss's `[B, 1, 1, ...]`).
  """
  out = monai_loss(inp, target)
  _check_monai_test_value(name, out, monai_test_value)
  logits = inp if pre_act is None else pre_act(inp)
  if labels == "ids":
    medjax_labels = _np(target[:, 0]).astype(np.int32)
  else:
    medjax_labels = _cl(target).astype(np.float32)
  expected = _np(out).astype(np.float64)
  reduction = kwargs.get("reduction", "mean")
  if reduction == "none" and fn in ("dice_loss", "tversky_loss", "generalized_dice_loss"):
    spatial = inp.ndim - 2
    if fn != "tversky_loss":  # Dice/GDL keep MONAI's broadcastable [B, K, 1, ...]
      expected = expected.reshape(expected.shape[:expected.ndim - spatial])
  elif reduction == "none" and fn == "focal_loss":
    expected = np.moveaxis(expected, 1, -1)
  _add({"name": name, "group": "loss", "source": source, "fn": fn, "kwargs": kwargs,
        "monai": monai_desc, "pre_activated": None if pre_act is None else _show(pre_act),
        "squeeze": squeeze},
       logits=_cl(logits).astype(np.float32), labels=medjax_labels, expected=expected)


def _show(value) -> str:
  """A value for the case description; a function by its name (no address: reproducible)."""
  return getattr(value, "__name__", None) if callable(value) else repr(value)


def _mk(monai_cls, **kw):
  options = ", ".join(f"{k}={_show(v)}" for k, v in kw.items())
  return monai_cls(**kw), f"{monai_cls.__name__}({options})"


# MONAI's unit-test inputs (tests/losses/test_dice_loss.py and siblings).
X1 = T([[[[1.0, -1.0], [-1.0, 1.0]]]])                       # (1, 1, 2, 2)
Y1 = T([[[[1.0, 0.0], [1.0, 1.0]]]])
X2 = T([[[[1.0, -1.0], [-1.0, 1.0]]], [[[1.0, -1.0], [-1.0, 1.0]]]])  # (2, 1, 2, 2)
Y2 = T([[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, 0.0], [1.0, 0.0]]]])
XS = T([[[[0.3, 0.4], [0.7, 0.9]]], [[[1.0, 0.1], [0.5, 0.3]]]])  # soft input = soft target
X3 = T([[[-1.0, 0.0, 1.0], [1.0, 0.0, -1.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # (2, 2, 3)
Y3 = T([[[1.0, 0.0, 0.0]], [[1.0, 1.0, 0.0]]])               # (2, 1, 3) class ids
X4 = T([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])  # probabilities
Y4 = T([[[0.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]]])
X1B = T([[[[1.0, -0.0], [-1.0, 1.0]]], [[[1.0, -1.0], [-1.0, 1.0]]]])


def monai_dice_loss_cases() -> None:
  src = "MONAI tests/losses/test_dice_loss.py"
  none = dict(softmax=False, sigmoid=False)
  cases = [
      ("sigmoid_1e6", dict(include_background=True, sigmoid=True, smooth_nr=1e-6, smooth_dr=1e-6),
       X1, Y1, "float", None, 0.307576),
      ("sigmoid_b2", dict(include_background=True, sigmoid=True, smooth_nr=1e-4, smooth_dr=1e-4),
       X2, Y2, "float", None, 0.416657),
      ("soft_target", dict(include_background=True, smooth_nr=1e-4, smooth_dr=1e-4), XS, XS,
       "float", None, 0.307773),
      ("nobg_onehot", dict(include_background=False, to_onehot_y=True, smooth_nr=0, smooth_dr=0),
       X4, Y4, "ids", None, 0.0),
      ("onehot_sigmoid", dict(include_background=True, to_onehot_y=True, sigmoid=True,
                              smooth_nr=1e-4, smooth_dr=1e-4), X3, Y3, "ids", None, 0.435050),
      ("onehot_sigmoid_none", dict(include_background=True, to_onehot_y=True, sigmoid=True,
                                   reduction="none", smooth_nr=1e-4, smooth_dr=1e-4), X3, Y3, "ids",
       None, [[[0.296529], [0.415136]], [[0.599976], [0.428559]]]),
      ("onehot_softmax", dict(include_background=True, to_onehot_y=True, softmax=True,
                              smooth_nr=1e-4, smooth_dr=1e-4), X3, Y3, "ids", None, 0.383713),
      ("onehot_softmax_sum", dict(include_background=True, to_onehot_y=True, softmax=True,
                                  reduction="sum", smooth_nr=1e-4, smooth_dr=1e-4), X3, Y3, "ids",
       None, 1.534853),
      ("squared_pred", dict(include_background=True, sigmoid=True, squared_pred=True), X1, Y1,
       "float", None, 0.178337),
      ("jaccard", dict(include_background=True, sigmoid=True, jaccard=True), X1, Y1, "float", None,
       0.470451),
      ("tanh", dict(include_background=True, other_act=torch.tanh, smooth_nr=1e-4, smooth_dr=1e-4),
       X2, Y2, "float", torch.tanh, 0.999963),
      ("log_softmax", dict(include_background=True, to_onehot_y=True,
                           other_act=lambda x: torch.log_softmax(x, dim=1), smooth_nr=1e-4,
                           smooth_dr=1e-4), X3, Y3, "ids", lambda x: torch.log_softmax(x, dim=1),
       -8.522593),
      ("tanh_batch", dict(include_background=True, other_act=torch.tanh, smooth_nr=1e-4,
                          smooth_dr=1e-4, batch=True), X1B, Y2, "float", torch.tanh, 0.774718),
      ("tanh_batch_nr0", dict(include_background=True, other_act=torch.tanh, smooth_nr=0,
                              smooth_dr=1e-4, batch=True), X1B, Y2, "float", torch.tanh, 0.774733),
      ("tanh_nobatch_nr0", dict(include_background=True, other_act=torch.tanh, smooth_nr=0,
                                smooth_dr=1e-4, batch=False), X1B, Y2, "float", torch.tanh,
       0.840058),
      ("log_softmax_weight", dict(include_background=True, to_onehot_y=True,
                                  other_act=lambda x: torch.log_softmax(x, dim=1), smooth_nr=1e-4,
                                  smooth_dr=1e-4, weight=(0, 1)), X3, Y3, "ids",
       lambda x: torch.log_softmax(x, dim=1), -8.268515),
  ]
  for name, mk, x, y, labels, act, value in cases:
    loss, desc = _mk(DiceLoss, **mk)
    kw = dict(none)
    kw.update(softmax=bool(mk.get("softmax", False)), sigmoid=bool(mk.get("sigmoid", False)))
    for k in ("include_background", "squared_pred", "jaccard", "reduction", "smooth_nr",
              "smooth_dr", "batch"):
      if k in mk:
        kw[k] = mk[k]
    if "weight" in mk:
      kw["class_weights"] = [float(w) for w in mk["weight"]]
    loss_case(f"monai_dice_loss_{name}", src, loss, x, y, "dice_loss", kw, labels=labels,
              monai_desc=desc, pre_act=act, monai_test_value=value)


def monai_generalized_dice_cases() -> None:
  src = "MONAI tests/losses/test_generalized_dice_loss.py"
  cases = [
      ("sigmoid_1e6", dict(include_background=True, sigmoid=True, smooth_nr=1e-6, smooth_dr=1e-6),
       X1, Y1, "float", None, 0.307576),
      ("sigmoid_b2", dict(include_background=True, sigmoid=True, smooth_nr=1e-4, smooth_dr=1e-4),
       X2, Y2, "float", None, 0.416597),
      ("soft_target", dict(include_background=True, smooth_nr=1e-4, smooth_dr=1e-4), XS, XS,
       "float", None, 0.307748),
      ("nobg_onehot", dict(include_background=False, to_onehot_y=True, smooth_nr=0.0,
                           smooth_dr=0.0), X4, Y4, "ids", None, 0.0),
      ("onehot_sigmoid", dict(include_background=True, to_onehot_y=True, sigmoid=True,
                              smooth_nr=1e-4, smooth_dr=1e-4), X3, Y3, "ids", None, 0.469964),
      ("onehot_softmax", dict(include_background=True, to_onehot_y=True, softmax=True,
                              smooth_nr=1e-4, smooth_dr=1e-4), X3, Y3, "ids", None, 0.414507),
      ("onehot_softmax_sum", dict(include_background=True, to_onehot_y=True, softmax=True,
                                  reduction="sum", smooth_nr=1e-4, smooth_dr=1e-4), X3, Y3, "ids",
       None, 0.829015),
      ("onehot_softmax_none", dict(include_background=True, to_onehot_y=True, softmax=True,
                                   reduction="none", smooth_nr=1e-4, smooth_dr=1e-4), X3, Y3, "ids",
       None, [[[0.273476]], [[0.555539]]]),
      ("all_empty", dict(include_background=False, to_onehot_y=True, smooth_nr=1e-8,
                         smooth_dr=1e-8), X4, T([[[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]]), "ids",
       None, 0.0),
      ("simple_w", dict(include_background=True, to_onehot_y=True, softmax=True, w_type="simple",
                        smooth_nr=0, smooth_dr=0),
       T([[[0.0, 10.0, 10.0, 10.0], [10.0, 0.0, 0.0, 0.0]]]), T([[[1, 1, 0, 0]]]), "ids", None,
       0.250023),
      ("tanh", dict(include_background=True, other_act=torch.tanh, smooth_nr=1e-4, smooth_dr=1e-4),
       X2, Y2, "float", torch.tanh, 0.99970),
      ("log_softmax", dict(include_background=True, to_onehot_y=True,
                           other_act=lambda x: torch.log_softmax(x, dim=1), smooth_nr=1e-4,
                           smooth_dr=1e-4), X3, Y3, "ids", lambda x: torch.log_softmax(x, dim=1),
       -0.097833),
  ]
  for name, mk, x, y, labels, act, value in cases:
    loss, desc = _mk(GeneralizedDiceLoss, **mk)
    kw = dict(softmax=bool(mk.get("softmax", False)), sigmoid=bool(mk.get("sigmoid", False)))
    for k in ("include_background", "reduction", "smooth_nr", "smooth_dr", "batch", "w_type"):
      if k in mk:
        kw[k] = mk[k]
    loss_case(f"monai_generalized_dice_{name}", src, loss, x, y, "generalized_dice_loss", kw,
              labels=labels, monai_desc=desc, pre_act=act, monai_test_value=value,
              squeeze=mk.get("reduction") == "none")


def monai_tversky_cases() -> None:
  src = "MONAI tests/losses/test_tversky_loss.py"
  cases = [
      ("sigmoid_1e6", dict(include_background=True, sigmoid=True, smooth_nr=1e-6, smooth_dr=1e-6),
       X1, Y1, "float", None, 0.307576),
      ("sigmoid_b2", dict(include_background=True, sigmoid=True, smooth_nr=1e-4, smooth_dr=1e-4),
       X2, Y2, "float", None, 0.416657),
      ("soft_target", dict(include_background=True, smooth_nr=1e-4, smooth_dr=1e-4), XS, XS,
       "float", None, 0.307773),
      ("nobg_onehot", dict(include_background=False, to_onehot_y=True, smooth_nr=0, smooth_dr=0),
       X4, Y4, "ids", None, 0.0),
      ("nobg_onehot_dr", dict(include_background=False, to_onehot_y=True, smooth_nr=0,
                              smooth_dr=1e-3), X4, Y4, "ids", None, 0.000999),
      ("onehot_sigmoid", dict(include_background=True, to_onehot_y=True, sigmoid=True,
                              smooth_nr=1e-4, smooth_dr=1e-4), X3, Y3, "ids", None, 0.435050),
      ("onehot_sigmoid_batch", dict(include_background=True, to_onehot_y=True, sigmoid=True,
                                    batch=True), X3, Y3, "ids", None, 0.422979),
      ("onehot_sigmoid_sum", dict(include_background=True, to_onehot_y=True, sigmoid=True,
                                  reduction="sum", smooth_nr=1e-4, smooth_dr=1e-4), X3, Y3, "ids",
       None, 1.74013),
      ("onehot_softmax", dict(include_background=True, to_onehot_y=True, softmax=True,
                              smooth_nr=1e-4, smooth_dr=1e-4), X3, Y3, "ids", None, 0.383713),
      ("onehot_softmax_none", dict(include_background=True, to_onehot_y=True, softmax=True,
                                   reduction="none", smooth_nr=1e-4, smooth_dr=1e-4), X3, Y3, "ids",
       None, [[0.210961, 0.295339], [0.599952, 0.428547]]),
      ("alpha03", dict(include_background=True, sigmoid=True, alpha=0.3, beta=0.7, smooth_nr=1e-6,
                       smooth_dr=1e-6), X1, Y1, "float", None, 0.3589),
      ("alpha07", dict(include_background=True, sigmoid=True, alpha=0.7, beta=0.3, smooth_nr=1e-6,
                       smooth_dr=1e-6), X1, Y1, "float", None, 0.247366),
      ("tanh", dict(include_background=True, other_act=torch.tanh, smooth_nr=1e-4, smooth_dr=1e-4),
       X2, Y2, "float", torch.tanh, 0.999963),
      ("tanh_batch", dict(include_background=True, other_act=torch.tanh, smooth_nr=0,
                          smooth_dr=1e-3, batch=True), X2, Y2, "float", torch.tanh, 0.999963),
      ("log_softmax", dict(include_background=True, to_onehot_y=True,
                           other_act=lambda x: torch.log_softmax(x, dim=1), smooth_nr=1e-4,
                           smooth_dr=1e-4), X3, Y3, "ids", lambda x: torch.log_softmax(x, dim=1),
       -8.533317),
  ]
  for name, mk, x, y, labels, act, value in cases:
    loss, desc = _mk(TverskyLoss, **mk)
    kw = dict(softmax=bool(mk.get("softmax", False)), sigmoid=bool(mk.get("sigmoid", False)))
    for k in ("include_background", "reduction", "smooth_nr", "smooth_dr", "batch", "alpha",
              "beta"):
      if k in mk:
        kw[k] = mk[k]
    loss_case(f"monai_tversky_{name}", src, loss, x, y, "tversky_loss", kw, labels=labels,
              monai_desc=desc, pre_act=act, monai_test_value=value)


def monai_dice_ce_cases() -> None:
  src = "MONAI tests/losses/test_dice_ce_loss.py"
  x100 = T([[[100.0, 100.0, 0.0], [0.0, 0.0, 1.0]], [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
  cases = [
      ("onehot", dict(to_onehot_y=True), X4, Y4, "ids", 0.3133),
      ("float_target", dict(), X4, X4, "float", 0.3133),
      ("nobg_weight", dict(include_background=False, to_onehot_y=True, weight=T([1.0, 1.0])),
       x100, Y4, "ids", 0.2088),
      ("nobg_weight_lambda", dict(include_background=False, to_onehot_y=True,
                                  weight=T([1.0, 1.0]), lambda_dice=1.0, lambda_ce=2.0), x100, Y4,
       "ids", 0.4176),
      ("nobg_weight01", dict(include_background=False, to_onehot_y=True, weight=T([0.0, 1.0])),
       x100, Y4, "ids", 0.3133),
      ("bce_pos_weight", dict(weight=T([0.5]), sigmoid=True),
       T([[[0.8, 0.6, 0.0]], [[0.0, 0.0, 0.9]]]), T([[[0.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]]]),
       "float", 1.445239),
  ]
  for name, mk, x, y, labels, value in cases:
    loss, desc = _mk(DiceCELoss, **mk)
    kw = dict(softmax=bool(mk.get("softmax", False)), sigmoid=bool(mk.get("sigmoid", False)))
    for k in ("include_background", "lambda_dice", "lambda_ce"):
      if k in mk:
        kw[k] = mk[k]
    if "weight" in mk:
      kw["class_weights"] = [float(w) for w in mk["weight"]]
    loss_case(f"monai_dice_ce_{name}", src, loss, x, y, "dice_ce_loss", kw, labels=labels,
              monai_desc=desc, monai_test_value=value)


def monai_focal_cases() -> None:
  src = "MONAI tests/losses/test_focal_loss.py"
  x = T([[[[1.0, 1.0], [0.5, 0.0]], [[1.0, 1.0], [0.5, 0.0]], [[1.0, 1.0], [0.5, 0.0]]]])
  y = T([[[[0, 1], [2, 0]]]])
  y_onehot = F.one_hot(y.squeeze(1)).permute(0, 3, 1, 2).float()
  cases = [
      ("onehot", dict(to_onehot_y=True), y, "ids", 0.34959),
      ("float_target", dict(to_onehot_y=False), y_onehot, "float", 0.34959),
      ("nobg", dict(to_onehot_y=True, include_background=False), y, "ids", 0.36498),
      ("alpha08", dict(to_onehot_y=True, alpha=0.8), y, "ids", 0.08423),
      ("none", dict(to_onehot_y=True, reduction="none"), y, "ids",
       [[[[0.02266, 0.70187], [0.37741, 0.17329]], [[0.70187, 0.02266], [0.37741, 0.17329]],
         [[0.70187, 0.70187], [0.06757, 0.17329]]]]),
      ("weight_none", dict(to_onehot_y=True, weight=T([0.5, 0.1, 0.2]), reduction="none"), y,
       "ids", [[[[0.01133, 0.35093], [0.18871, 0.08664]], [[0.07019, 0.00227], [0.03774, 0.01733]],
                [[0.14037, 0.14037], [0.01352, 0.03466]]]]),
      ("softmax", dict(to_onehot_y=True, use_softmax=True), y, "ids", 0.16276),
      ("softmax_alpha08", dict(to_onehot_y=True, alpha=0.8, use_softmax=True), y, "ids", 0.08138),
  ]
  for name, mk, target, labels, value in cases:
    loss, desc = _mk(FocalLoss, **mk)
    use_softmax = bool(mk.get("use_softmax", False))
    kw = dict(softmax=use_softmax, sigmoid=not use_softmax)
    for k in ("include_background", "reduction", "alpha", "gamma"):
      if k in mk:
        kw[k] = mk[k]
    if "weight" in mk:
      kw["class_weights"] = [float(w) for w in mk["weight"]]
    loss_case(f"monai_focal_{name}", src, loss, x, target, "focal_loss", kw, labels=labels,
              monai_desc=desc, monai_test_value=value)


def generated_loss_cases() -> None:
  """Seeded volumes `[2, K, 4, 5, 3]` through the options medjax exposes."""
  rng = np.random.default_rng(13)
  shape = (2, 4, 5, 3)
  k = 3
  logits = T(rng.normal(0.0, 1.5, (2, k) + shape[1:]).astype(np.float32))
  ids = rng.integers(0, k, shape)
  ids[1][ids[1] == 2] = 0  # class 2 absent from sample 1 (absent-class rules)
  target = T(ids[:, None].astype(np.float32))
  multi = T((rng.random((2, k) + shape[1:]) < 0.4).astype(np.float32))  # multi-label targets
  soft = F.softmax(T(rng.normal(0, 1, (2, k) + shape[1:]).astype(np.float32)), 1)
  logits1 = T(rng.normal(0.0, 1.5, (2, 1) + shape[1:]).astype(np.float32))
  bin1 = T((rng.random((2, 1) + shape[1:]) < 0.5).astype(np.float32))
  src = "generated"

  def dice(name, labels="ids", y=target, **mk):
    loss, desc = _mk(DiceLoss, to_onehot_y=labels == "ids", **mk)
    kw = dict(softmax=mk.pop("softmax", False), sigmoid=mk.pop("sigmoid", False))
    if "weight" in mk:
      kw["class_weights"] = [float(w) for w in mk.pop("weight")]
    kw.update(mk)
    loss_case(f"gen_dice_{name}", src, loss, logits, y, "dice_loss", kw, labels=labels,
              monai_desc=desc)

  dice("softmax", softmax=True)
  dice("softmax_nobg", softmax=True, include_background=False)
  dice("sigmoid", sigmoid=True)
  dice("raw_probs", y=target, labels="ids")
  dice("jaccard", softmax=True, jaccard=True)
  dice("squared", softmax=True, squared_pred=True)
  dice("batch", softmax=True, batch=True)
  dice("batch_none", softmax=True, batch=True, reduction="none")
  dice("none", softmax=True, reduction="none")
  dice("sum", softmax=True, reduction="sum")
  dice("weight", softmax=True, weight=[0.2, 1.0, 3.0])
  dice("weight_nobg", softmax=True, include_background=False, weight=[1.0, 3.0])
  dice("weight_none", softmax=True, weight=[0.2, 1.0, 3.0], reduction="none")
  dice("multilabel_sigmoid", labels="float", y=multi, sigmoid=True)
  dice("soft_target_softmax", labels="float", y=soft, softmax=True)
  loss, desc = _mk(DiceLoss, sigmoid=True)
  loss_case("gen_dice_binary_1ch", src, loss, logits1, bin1, "dice_loss",
            dict(softmax=False, sigmoid=True), labels="float", monai_desc=desc)
  # One channel: MONAI's DiceLoss ignores `weight` ("num_of_classes != 1").
  loss, desc = _mk(DiceLoss, sigmoid=True, weight=[0.5])
  loss_case("gen_dice_binary_1ch_weight", src, loss, logits1, bin1, "dice_loss",
            dict(softmax=False, sigmoid=True, class_weights=[0.5]), labels="float",
            monai_desc=desc)
  loss, desc = _mk(DiceLoss, sigmoid=True)
  # One channel, integer labels: medjax takes labels == 1 as the binary target (spec A).
  loss_case("gen_dice_binary_1ch_ids", src, loss, logits1, bin1, "dice_loss",
            dict(softmax=False, sigmoid=True), labels="ids", monai_desc=desc)

  for name, mk in [("softmax", dict(softmax=True)), ("sigmoid_nobg", dict(sigmoid=True,
                                                                        include_background=False)),
                   ("a3b7_batch", dict(softmax=True, alpha=0.3, beta=0.7, batch=True)),
                   ("none", dict(softmax=True, alpha=0.6, beta=0.4, reduction="none")),
                   ("sum", dict(softmax=True, reduction="sum"))]:
    loss, desc = _mk(TverskyLoss, to_onehot_y=True, **mk)
    kw = dict(softmax=mk.pop("softmax", False), sigmoid=mk.pop("sigmoid", False), **mk)
    loss_case(f"gen_tversky_{name}", src, loss, logits, target, "tversky_loss", kw, labels="ids",
              monai_desc=desc)

  for name, mk in [("square", dict(softmax=True)), ("simple_nobg", dict(softmax=True,
                                                                      w_type="simple",
                                                                      include_background=False)),
                   ("square_batch", dict(softmax=True, batch=True)),
                   ("sigmoid_sum", dict(sigmoid=True, reduction="sum")),
                   ("none", dict(softmax=True, reduction="none"))]:
    loss, desc = _mk(GeneralizedDiceLoss, to_onehot_y=True, **mk)
    kw = dict(softmax=mk.pop("softmax", False), sigmoid=mk.pop("sigmoid", False), **mk)
    loss_case(f"gen_generalized_dice_{name}", src, loss, logits, target,
              "generalized_dice_loss", kw, labels="ids", monai_desc=desc,
              squeeze=mk.get("reduction") == "none")

  for name, mk in [("softmax", dict(softmax=True)),
                   ("softmax_nobg_weight", dict(softmax=True, include_background=False,
                                                weight=T([0.5, 1.0, 2.0]))),
                   ("jaccard_batch", dict(softmax=True, jaccard=True, batch=True)),
                   ("lambdas_sum", dict(softmax=True, lambda_dice=0.3, lambda_ce=1.7,
                                        reduction="sum")),
                   ("label_smoothing", dict(softmax=True, label_smoothing=0.1)),
                   ("label_smoothing_weight", dict(softmax=True, label_smoothing=0.2,
                                                   weight=T([0.5, 1.0, 2.0]))),
                   ("squared", dict(softmax=True, squared_pred=True))]:
    loss, desc = _mk(DiceCELoss, to_onehot_y=True, **mk)
    kw = dict(softmax=mk.pop("softmax", False), sigmoid=mk.pop("sigmoid", False))
    if "weight" in mk:
      kw["class_weights"] = [float(w) for w in mk.pop("weight")]
    kw.update(mk)
    loss_case(f"gen_dice_ce_{name}", src, loss, logits, target, "dice_ce_loss", kw, labels="ids",
              monai_desc=desc)
  # sigmoid=True with one channel: the CE term is BCE-with-logits, `weight` is its pos_weight.
  for name, mk in [("sigmoid_1ch", dict(sigmoid=True)),
                   ("sigmoid_1ch_pos_weight", dict(sigmoid=True, weight=T([2.5])))]:
    loss, desc = _mk(DiceCELoss, **mk)
    kw = dict(softmax=False, sigmoid=True)
    if "weight" in mk:
      kw["class_weights"] = [float(w) for w in mk["weight"]]
    loss_case(f"gen_dice_ce_{name}", src, loss, logits1, bin1, "dice_ce_loss", kw,
              labels="float", monai_desc=desc)
  # sigmoid=True with K > 1 channels and multi-label targets: MONAI 1.6.1 DiceCELoss uses the
  # sigmoid for the Dice term only; its CE term is still nn.CrossEntropyLoss (softmax) on the
  # logits with the float targets (`ce_loss = self.ce(...) if input.shape[1] != 1 else self.bce`).
  # medjax's dice_ce_loss(sigmoid=True) takes BCE for any K (documented in medjax.losses), so its
  # reference is MONAI's sigmoid DiceLoss plus torch's BCEWithLogitsLoss.
  sigmoid_dice = DiceLoss(sigmoid=True)
  loss_case("gen_dice_ce_sigmoid_multilabel", src,
            lambda i, t: sigmoid_dice(i, t) + F.binary_cross_entropy_with_logits(i, t),
            logits, multi, "dice_ce_loss", dict(softmax=False, sigmoid=True), labels="float",
            monai_desc="DiceLoss(sigmoid=True) + torch BCEWithLogitsLoss()")

  for name, mk in [("sigmoid", dict()),
                   ("sigmoid_g1_alpha", dict(gamma=1.0, alpha=0.25)),
                   ("sigmoid_alpha_vec", dict(alpha=[0.2, 0.5, 0.8])),
                   ("sigmoid_weight_sum", dict(weight=[0.5, 1.0, 2.0], reduction="sum")),
                   ("sigmoid_nobg_none", dict(include_background=False, reduction="none")),
                   ("softmax", dict(use_softmax=True)),
                   ("softmax_g3_alpha", dict(use_softmax=True, gamma=3.0, alpha=0.3)),
                   ("softmax_alpha_vec", dict(use_softmax=True, alpha=[0.2, 0.5, 0.8])),
                   ("softmax_weight", dict(use_softmax=True, weight=[0.5, 1.0, 2.0])),
                   ("softmax_nobg_sum", dict(use_softmax=True, include_background=False,
                                             reduction="sum")),
                   ("softmax_none", dict(use_softmax=True, reduction="none"))]:
    loss, desc = _mk(FocalLoss, to_onehot_y=True, **mk)
    use_softmax = bool(mk.pop("use_softmax", False))
    kw = dict(softmax=use_softmax, sigmoid=not use_softmax)
    if "weight" in mk:
      kw["class_weights"] = [float(w) for w in mk.pop("weight")]
    kw.update(mk)
    loss_case(f"gen_focal_{name}", src, loss, logits, target, "focal_loss", kw, labels="ids",
              monai_desc=desc)
  loss, desc = _mk(FocalLoss, use_softmax=False, alpha=0.3)
  loss_case("gen_focal_multilabel", src, loss, logits, multi, "focal_loss",
            dict(softmax=False, sigmoid=True, alpha=0.3), labels="float", monai_desc=desc)

  # DiceFocalLoss (MONAI 1.6.1): `softmax`/`sigmoid` act on the Dice term only; the focal term is
  # FocalLoss(use_softmax=False), the sigmoid focal loss, whatever `softmax` says.
  for name, mk in [("sigmoid", dict(sigmoid=True)),
                   ("sigmoid_g1_alpha_w", dict(sigmoid=True, gamma=1.0, alpha=0.25,
                                               weight=[1.0, 1.0, 2.0], lambda_focal=0.5)),
                   ("sigmoid_sum_nobg", dict(sigmoid=True, reduction="sum",
                                             include_background=False, lambda_dice=0.7)),
                   ("softmax", dict(softmax=True)),
                   ("softmax_nobg_lambda", dict(softmax=True, include_background=False,
                                                lambda_focal=1.5, weight=[1.0, 2.0]))]:
    loss, desc = _mk(DiceFocalLoss, to_onehot_y=True, **mk)
    kw = dict(softmax=mk.pop("softmax", False), sigmoid=mk.pop("sigmoid", False))
    if "weight" in mk:
      kw["class_weights"] = [float(w) for w in mk.pop("weight")]
    kw.update(mk)
    loss_case(f"gen_dice_focal_{name}", src, loss, logits, target, "dice_focal_loss", kw,
              labels="ids", monai_desc=desc)


def torch_ce_cases() -> None:
  """torch.nn.CrossEntropyLoss / BCEWithLogitsLoss, the references of spec A's CE terms."""
  rng = np.random.default_rng(7)
  k = 3  # the shapes of generated_loss_cases: the test reuses their compiled operations
  logits = T(rng.normal(0, 2, (2, k, 4, 5, 3)).astype(np.float32))
  ids = rng.integers(0, k, (2, 4, 5, 3))
  ids_ignore = ids.copy()
  ids_ignore[0, 0] = 255
  ids_ignore[1, 2, 1] = 255
  src = "torch.nn"
  w = [0.3, 1.0, 2.0]
  for name, mk, y in [("plain", dict(), ids), ("weight", dict(weight=T(w)), ids),
                      ("sum", dict(reduction="sum"), ids), ("none", dict(reduction="none"), ids),
                      ("weight_none", dict(weight=T(w), reduction="none"), ids),
                      ("ignore", dict(ignore_index=255), ids_ignore),
                      ("ignore_weight", dict(ignore_index=255, weight=T(w)), ids_ignore),
                      ("ignore_none", dict(ignore_index=255, reduction="none"), ids_ignore),
                      ("smoothing", dict(label_smoothing=0.1), ids),
                      ("smoothing_weight", dict(label_smoothing=0.2, weight=T(w)), ids),
                      ("smoothing_weight_ignore", dict(label_smoothing=0.2, weight=T(w),
                                                       ignore_index=255), ids_ignore),
                      ("smoothing_sum", dict(label_smoothing=0.15, reduction="sum"), ids)]:
    ce = torch.nn.CrossEntropyLoss(**mk)
    out = ce(logits, T(y))
    kw = {}
    if "weight" in mk:
      kw["class_weights"] = w
    for key in ("ignore_index", "label_smoothing", "reduction"):
      if key in mk:
        kw[key] = mk[key]
    _add({"name": f"torch_cross_entropy_{name}", "group": "loss", "source": src,
          "fn": "cross_entropy_loss", "kwargs": kw, "squeeze": False,
          "monai": f"torch.nn.CrossEntropyLoss({mk})".replace("tensor", "")},
         logits=_cl(logits), labels=y.astype(np.int32), expected=_np(out).astype(np.float64))
  multi = (rng.random((2, k, 4, 5, 3)) < 0.3).astype(np.float32)
  pw = [3.0, 0.5, 2.0]
  for name, mk, kw in [("plain", dict(), {}),
                       ("pos_weight", dict(pos_weight=T(pw).view(1, k, 1, 1, 1)),
                        {"pos_weight": pw}),
                       ("weight_sum", dict(weight=T(w).view(1, k, 1, 1, 1), reduction="sum"),
                        {"class_weights": w, "reduction": "sum"}),
                       ("none", dict(reduction="none"), {"reduction": "none"}),
                       ("both_mean", dict(weight=T(w).view(1, k, 1, 1, 1),
                                          pos_weight=T(pw).view(1, k, 1, 1, 1)),
                        {"class_weights": w, "pos_weight": pw})]:
    bce = torch.nn.BCEWithLogitsLoss(**mk)
    out = bce(logits, T(multi))
    expected = _np(out).astype(np.float64)
    if expected.ndim:
      expected = np.moveaxis(expected, 1, -1)
    _add({"name": f"torch_bce_{name}", "group": "loss", "source": src,
          "fn": "binary_cross_entropy_loss", "kwargs": kw, "squeeze": False,
          "monai": f"torch.nn.BCEWithLogitsLoss({list(mk)}) with per-channel weights"},
         logits=_cl(logits), labels=np.moveaxis(multi, 1, -1), expected=expected)


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------

def _label_maps(rng, batch, shape, k, smooth=1.2):
  """Blobby class-id maps: the argmax of smoothed noise, one field per class."""
  fields = ndimage.gaussian_filter(rng.normal(size=(batch, k) + shape), (0, 0) + (smooth,) * 3)
  return np.argmax(fields, axis=1).astype(np.int32)


def _onehot(ids: np.ndarray, k: int) -> torch.Tensor:
  return F.one_hot(T(ids, dtype=torch.int64), k).movedim(-1, 1)


def _metric_maps():
  rng = np.random.default_rng(2024)
  k, shape = 4, (9, 10, 8)
  gt = _label_maps(rng, 2, shape, k)
  pred = np.roll(gt, 1, axis=1)  # a one-voxel shift...
  flip = rng.random(gt.shape) < 0.08  # ...and some voxels relabelled
  pred[flip] = rng.integers(0, k, gt.shape)[flip]
  gt[1][gt[1] == 3] = 0      # class 3 absent from the truth of sample 1 (pred has it)
  pred[0][pred[0] == 2] = 1  # class 2 absent from the prediction of sample 0 (truth has it)
  pred[1][pred[1] == 2] = 0  # class 2 absent from both in sample 1
  gt[1][gt[1] == 2] = 0
  return pred, gt, k


def dice_metric_cases() -> None:
  pred, gt, k = _metric_maps()
  for include_background in (True, False):
    for ignore_empty in (True, False):
      metric = DiceMetric(include_background=include_background, reduction="none",
                          ignore_empty=ignore_empty, num_classes=k)
      raw = metric(_onehot(pred, k), _onehot(gt, k))
      arrays = {"pred": pred, "label": gt, "none": _np(raw).astype(np.float64)}
      for r in REDUCTIONS:
        f, not_nans = do_metric_reduction(raw.clone(), r)
        arrays[f"{r}.value"] = _np(f).astype(np.float64)
        arrays[f"{r}.not_nans"] = _np(not_nans).astype(np.float64)
      _add({"name": f"gen_dice_metric_bg{int(include_background)}_ie{int(ignore_empty)}",
            "group": "dice_metric", "source": "generated", "num_classes": k,
            "include_background": include_background, "ignore_empty": ignore_empty,
            "reductions": list(REDUCTIONS), "layout": "ids",
            "monai": f"DiceMetric(include_background={include_background}, reduction='none', "
                     f"ignore_empty={ignore_empty}, num_classes={k}); do_metric_reduction"},
           **arrays)


def monai_dice_metric_cases() -> None:
  """MONAI tests/metrics/test_compute_meandice.py: one-hot (possibly multi-hot) channel maps.

  Channel c is compared as its own binary map (`dice_per_class` with 2 classes, class 1), which is
  exactly MONAI's per-channel computation.
  """
  yp = T([[[[1.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]],
          [[[1.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]])
  y4 = T([[[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]],
          [[[0.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]]])
  y6 = T([[[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]],
          [[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])
  cases = [
      ("case1", T([[[[1.0, 0.0], [0.0, 1.0]]]]), T([[[[1.0, 0.0], [1.0, 1.0]]]]),
       dict(include_background=True), "none", [[0.8]]),
      ("case2", T([[[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]],
                   [[[0.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]]]),
       T([[[[0.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]],
          [[[0.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]]]),
       dict(include_background=False), "none", [[0.5000, 0.0000], [0.6667, 0.6667]]),
      ("case4", yp, y4, dict(include_background=True), "mean_batch", [0.6786, 0.4000, 0.6667]),
      ("case5", yp, y4, dict(include_background=True), "mean", 0.689683),
      ("case6", yp, y6, dict(include_background=True), "sum_batch", [1.7143, 0.0000, 0.0000]),
      ("case7", yp, y6, dict(include_background=True), "mean", 0.857143),
      ("case8", yp, y6, dict(include_background=False), "sum_batch", [0.0000, 0.0000]),
      ("case9", torch.ones((2, 2, 3, 3)), torch.ones((2, 2, 3, 3)), dict(), "mean", None),
      ("case11", torch.zeros((2, 2, 3, 3)), torch.zeros((2, 2, 3, 3)), dict(ignore_empty=False),
       "mean", None),
      ("case12", torch.ones((2, 2, 3, 3)), torch.zeros((2, 2, 3, 3)), dict(ignore_empty=False),
       "mean", None),
  ]
  for name, y_pred, y, mk, reduction, value in cases:
    include_background = mk.get("include_background", True)
    ignore_empty = mk.get("ignore_empty", True)
    raw = DiceMetric(include_background=include_background, reduction="none",
                     ignore_empty=ignore_empty)(y_pred, y)
    f, not_nans = do_metric_reduction(raw.clone(), reduction)
    if value is not None:
      _check_monai_test_value(f"monai_dice_metric_{name}", f,
                              np.reshape(value, np.shape(_np(f))))
    _add({"name": f"monai_dice_metric_{name}", "group": "dice_metric",
          "source": "MONAI tests/metrics/test_compute_meandice.py", "num_classes": y.shape[1],
          "include_background": include_background, "ignore_empty": ignore_empty,
          "reductions": sorted({"none", reduction}), "layout": "channels",
          "monai": f"DiceMetric(include_background={include_background}, "
                   f"ignore_empty={ignore_empty}); do_metric_reduction(..., {reduction!r})"},
         pred=_cl(y_pred).astype(np.int32), label=_cl(y).astype(np.int32),
         none=_np(raw).astype(np.float64),
         **({} if reduction == "none" else {f"{reduction}.value": _np(f).astype(np.float64),
                                            f"{reduction}.not_nans": _np(not_nans)}))


SPACING = (0.85, 1.2, 0.9)


def distance_cases() -> None:
  """Hausdorff (percentile, directed), average surface distance and NSD on seeded label maps."""
  pred, gt, k = _metric_maps()
  yp, y = _onehot(pred, k), _onehot(gt, k)
  for metric in ("euclidean", "chessboard", "taxicab"):
    for spacing in (None, SPACING):
      sp = "aniso" if spacing else "unit"
      for percentile in (None, 95, 50.0):
        for directed in (False, True):
          hd = compute_hausdorff_distance(yp, y, include_background=False, distance_metric=metric,
                                          percentile=percentile, directed=directed,
                                          spacing=spacing)
          _add({"name": f"gen_hausdorff_{metric}_{sp}_p{percentile}_d{int(directed)}",
                "group": "distance", "source": "generated", "fn": "hausdorff_distance",
                "num_classes": k, "first_class": 1,
                "kwargs": {"distance_metric": metric, "spacing": spacing,
                           "percentile": percentile, "directed": directed},
                "monai": f"compute_hausdorff_distance(include_background=False, "
                         f"distance_metric={metric!r}, percentile={percentile}, "
                         f"directed={directed}, spacing={spacing})"},
               pred=pred, label=gt, expected=_np(hd).astype(np.float64))
      for symmetric in (True, False):
        asd = compute_average_surface_distance(yp, y, include_background=False, symmetric=symmetric,
                                               distance_metric=metric, spacing=spacing)
        _add({"name": f"gen_surface_distance_{metric}_{sp}_s{int(symmetric)}", "group": "distance",
              "source": "generated", "fn": "average_surface_distance", "num_classes": k,
              "first_class": 1,
              "kwargs": {"distance_metric": metric, "spacing": spacing, "symmetric": symmetric},
              "monai": f"compute_average_surface_distance(include_background=False, "
                       f"symmetric={symmetric}, distance_metric={metric!r}, spacing={spacing})"},
             pred=pred, label=gt, expected=_np(asd).astype(np.float64))
      for tolerances in ([0.0, 0.0, 0.0], [1.0, 1.5, 2.0]):
        nsd = compute_surface_dice(yp, y, tolerances, include_background=False,
                                   distance_metric=metric, spacing=spacing)
        tag = "t0" if not any(tolerances) else "t1"
        _add({"name": f"gen_surface_dice_{metric}_{sp}_{tag}", "group": "distance",
              "source": "generated", "fn": "normalized_surface_dice", "num_classes": k,
              "first_class": 1, "tolerances": tolerances,
              "kwargs": {"distance_metric": metric, "spacing": spacing},
              "monai": f"compute_surface_dice(class_thresholds={tolerances}, "
                       f"include_background=False, distance_metric={metric!r}, "
                       f"spacing={spacing})"},
             pred=pred, label=gt, expected=_np(nsd).astype(np.float64))


def _sphere(spec):
  if spec is None:
    return np.zeros((99, 99, 99), np.int32)
  return create_spherical_seg_3d(**spec)


def monai_distance_cases() -> None:
  """MONAI's sphere cases for HausdorffDistanceMetric and SurfaceDistanceMetric."""
  S = lambda **kw: kw  # noqa: E731
  sp = SPACING
  hd_cases = [  # (pred, gt, spacing, percentile, MONAI's expected: (metric, directed) ordered)
      (S(), S(), None, None, [0, 0, 0, 0, 0, 0]),
      (S(radius=20, centre=(20, 20, 20)), S(radius=20, centre=(19, 19, 19)), None, None,
       [1.7320508075688772, 1.7320508075688772, 1, 1, 3, 3]),
      (S(radius=33, centre=(19, 33, 22)), S(radius=33, centre=(20, 33, 22)), None, None,
       [1, 1, 1, 1, 1, 1]),
      (S(radius=20, centre=(20, 33, 22)), S(radius=40, centre=(20, 33, 22)), None, None,
       [20.09975124224178, 20.223748416156685, 15, 20, 24, 35]),
      (None, S(radius=40, centre=(20, 33, 22)), None, None, [np.inf] * 6),
      (S(), None, None, None, [np.inf] * 6),
      (S(radius=20, centre=(20, 33, 22)), S(radius=40, centre=(20, 33, 22)), None, 95,
       [19.924858845171276, 20.09975124224178, 14, 18, 22, 33]),
      (S(radius=20, centre=(20, 20, 20), im_spacing=sp),
       S(radius=20, centre=(19, 19, 19), im_spacing=sp), sp, None,
       [2.0808651447296143, 2.2671568, 2, 2, 3, 4]),
      (S(radius=15, centre=(20, 33, 22), im_spacing=sp),
       S(radius=30, centre=(20, 33, 22), im_spacing=sp), sp, None,
       [15.439640998840332, 15.62594, 11, 17, 20, 28]),
      (None, None, None, None, None),  # test_nans: both empty -> nan per element
      (None, None, sp, None, None),
  ]
  for i, (p, g, spacing, percentile, values) in enumerate(hd_cases):
    yp = T(_sphere(p))[None, None]
    y = T(_sphere(g))[None, None]
    combos = [(m, d) for m in ("euclidean", "chessboard", "taxicab") for d in (True, False)]
    expected = []
    for j, (metric, directed) in enumerate(combos):
      hd = compute_hausdorff_distance(yp, y, include_background=True, distance_metric=metric,
                                      percentile=percentile, directed=directed, spacing=spacing)
      if values is not None:
        _check_monai_test_value(f"hd sphere case {i} {metric} {directed}", hd[0, 0], values[j],
                                rtol=1e-6, atol=0)
      expected.append(float(hd[0, 0]))
    _add({"name": f"monai_hausdorff_sphere_{i}", "group": "sphere",
          "source": "MONAI tests/metrics/test_hausdorff_distance.py", "fn": "hausdorff_distance",
          "pred_sphere": p, "gt_sphere": g, "spacing": spacing, "percentile": percentile,
          "combos": [[m, d] for m, d in combos],
          "monai": "HausdorffDistanceMetric(distance_metric=m, percentile=p, directed=d)"},
         expected=np.asarray(expected))
  sd_cases = [  # (pred, gt, metric, spacing, MONAI's expected (symmetric, not symmetric))
      (S(), S(), "euclidean", None, [0, 0]),
      (S(radius=20, centre=(20, 20, 20)), S(radius=20, centre=(19, 19, 19)), "taxicab", None,
       [1.0380029806259314, 1.0380029806259314]),
      (S(radius=33, centre=(19, 33, 22)), S(radius=33, centre=(20, 33, 22)), "euclidean", None,
       [0.350217, 0.3483278807706289]),
      (S(radius=20, centre=(20, 33, 22)), S(radius=40, centre=(20, 33, 22)), "euclidean", None,
       [15.117741, 12.040033513150455]),
      (S(radius=20, centre=(20, 33, 22)), S(radius=40, centre=(20, 33, 22)), "chessboard", None,
       [11.492719, 9.605067064083457]),
      (S(radius=20, centre=(20, 33, 22)), S(radius=40, centre=(20, 33, 22)), "taxicab", None,
       [20.214613, 12.432687531048186]),
      (None, S(radius=40, centre=(20, 33, 22)), "euclidean", None, [np.inf, np.inf]),
      (S(), None, "taxicab", None, [np.inf, np.inf]),
      (S(radius=33, centre=(42, 45, 52), im_spacing=sp),
       S(radius=33, centre=(43, 45, 52), im_spacing=sp), "euclidean", sp, [0.4951, 0.4951]),
  ]
  for i, (p, g, metric, spacing, values) in enumerate(sd_cases):
    yp = T(_sphere(p))[None, None]
    y = T(_sphere(g))[None, None]
    expected = []
    for j, symmetric in enumerate((True, False)):
      asd = compute_average_surface_distance(yp, y, include_background=True, symmetric=symmetric,
                                             distance_metric=metric, spacing=spacing)
      _check_monai_test_value(f"sd sphere case {i} {symmetric}", asd[0, 0], values[j], rtol=1e-4,
                              atol=0)
      expected.append(float(asd[0, 0]))
    _add({"name": f"monai_surface_distance_sphere_{i}", "group": "sphere",
          "source": "MONAI tests/metrics/test_surface_distance.py",
          "fn": "average_surface_distance", "pred_sphere": p, "gt_sphere": g, "spacing": spacing,
          "distance_metric": metric, "symmetric": [True, False],
          "monai": "SurfaceDistanceMetric(symmetric=s, distance_metric=m)"},
         expected=np.asarray(expected))


def monai_surface_dice_cases() -> None:
  """MONAI tests/metrics/test_surface_dice.py (2-D cases; medjax's metrics take any rank)."""
  src = "MONAI tests/metrics/test_surface_dice.py"
  pred = np.zeros((2, 480, 640), np.int32)
  gt = np.zeros((2, 480, 640), np.int32)
  pred[0, :, 50:] = 1
  gt[0, :, 60:] = 1
  for spacing in (None, (0.85, 1.2)):
    for tol in (0, 1, 9, 10, 11, 12, 13):
      nsd = compute_surface_dice(_onehot(pred, 2), _onehot(gt, 2), [tol, tol],
                                 include_background=True, spacing=spacing)
      if tol == 0:
        expected0 = np.zeros((2, 2))
        expected0[0, 1] = 1 - (478 + 480 + 9 * 2) / (480 * 4 + 588 * 2 + 578 * 2)
        expected0[0, 0] = 1 - (478 + 480 + 9 * 2) / (480 * 4 + 48 * 2 + 58 * 2)
        expected0[1, 0] = 1
        expected0[1, 1] = np.nan
        _check_monai_test_value("nsd 480x640", nsd, expected0, rtol=1e-6, atol=1e-7)
      _add({"name": f"monai_surface_dice_shift_{'aniso' if spacing else 'unit'}_t{tol}",
            "group": "distance", "source": src, "fn": "normalized_surface_dice", "num_classes": 2,
            "first_class": 0, "tolerances": [tol, tol], "kwargs": {"spacing": spacing},
            "monai": f"SurfaceDiceMetric(class_thresholds=[{tol}, {tol}], "
                     f"include_background=True)(..., spacing={spacing})"},
           pred=pred.astype(np.uint8), label=gt.astype(np.uint8), expected=_np(nsd))
  pred = np.zeros((1, 10, 10), np.int32)
  gt = np.zeros((1, 10, 10), np.int32)
  pred[0, 1:4, 1] = 1
  gt[0, 5:8, 6] = 1
  for metric, tol_list in (("euclidean", ([0, 0], [2.8, 5.5], [3, 6])),
                           ("chessboard", ([0, 0], [1, 4.999], [2, 5])),
                           ("taxicab", ([0, 0], [1, 7], [3, 9]))):
    for j, tols in enumerate(tol_list):
      nsd = compute_surface_dice(_onehot(pred, 2), _onehot(gt, 2), tols, include_background=True,
                                 distance_metric=metric)
      _add({"name": f"monai_surface_dice_all_distances_{metric}_{j}", "group": "distance",
            "source": src, "fn": "normalized_surface_dice", "num_classes": 2, "first_class": 0,
            "tolerances": tols, "kwargs": {"distance_metric": metric},
            "monai": f"SurfaceDiceMetric(class_thresholds={tols}, include_background=True, "
                     f"distance_metric={metric!r})"},
           pred=pred, label=gt, expected=_np(nsd))
  pred = np.zeros((1, 80, 80), np.int32)
  gt = np.zeros((1, 80, 80), np.int32)
  pred[0, 10:20, 10:20] = 1
  gt[0, 10:20, 10:20] = 2
  for include_background in (True, False):
    tols = [1.0] * (4 if include_background else 3)
    nsd = compute_surface_dice(_onehot(pred, 4), _onehot(gt, 4), tols,
                               include_background=include_background)
    _check_monai_test_value("nsd not predicted", nsd,
                            [[1, 0, 0, np.nan]] if include_background else [[0, 0, np.nan]])
    _add({"name": f"monai_surface_dice_not_predicted_bg{int(include_background)}",
          "group": "distance", "source": src, "fn": "normalized_surface_dice", "num_classes": 4,
          "first_class": 0 if include_background else 1, "tolerances": tols, "kwargs": {},
          "monai": f"SurfaceDiceMetric(class_thresholds={tols}, "
                   f"include_background={include_background})"},
         pred=pred, label=gt, expected=_np(nsd))


# ----------------------------------------------------------------------------------------------
# Sliding-window inference
# ----------------------------------------------------------------------------------------------

def torch_predictor(kind: str, w: np.ndarray | None, b: np.ndarray | None):
  """The fixture predictors in torch, channel-first. The test file has the same in jnp.

  z = x W + b (a 1x1x1 convolution, W `[C, K]`), then:
    window_mean: tanh(z) + mean of z over the window's voxels (per window, per channel);
    batch_mean:  tanh(z) + mean of z over the whole window batch (mixes the windows: the
                 result depends on which windows share a predictor call);
    cval_sum:    x + sum(x) over the whole batch (MONAI's test_cval predictor);
    multi:       (tanh(z), 0.5 z + window mean of z): a tuple of two outputs;
    multi_dict:  the same as a dict {'seg': ..., 'aux': ...};
    multi_scale: (tanh(z), z[:, :, ::2, ::2, ::2]): a second output at half resolution.
  """
  if w is not None:
    wt, bt = T(w), T(b)

  def z_of(x):
    return torch.einsum("bcdhw,ck->bkdhw", x, wt) + bt.view(1, -1, 1, 1, 1)

  def predict(x):
    if kind == "cval_sum":
      return x + x.sum()
    z = z_of(x)
    if kind == "window_mean":
      return torch.tanh(z) + z.mean(dim=(2, 3, 4), keepdim=True)
    if kind == "batch_mean":
      return torch.tanh(z) + z.mean(dim=(0, 2, 3, 4), keepdim=True)
    if kind == "multi":
      return torch.tanh(z), 0.5 * z + z.mean(dim=(2, 3, 4), keepdim=True)
    if kind == "multi_dict":
      return {"seg": torch.tanh(z), "aux": 0.5 * z + z.mean(dim=(2, 3, 4), keepdim=True)}
    if kind == "multi_scale":
      return torch.tanh(z), z[:, :, ::2, ::2, ::2]
    raise ValueError(kind)

  return predict


def sw_case(name: str, source: str, image: np.ndarray, roi, sw_batch_size: int, kind: str, *,
            k: int = 2, seed: int = 0, monai_test_value=None, **options) -> None:
  """`image` channels-last `[B, D, H, W, C]`; options are sliding_window_inference's."""
  rng = np.random.default_rng(seed)
  c = image.shape[-1]
  w = rng.normal(0, 0.7, (c, k)).astype(np.float32) if kind != "cval_sum" else None
  b = rng.normal(0, 0.3, (k,)).astype(np.float32) if kind != "cval_sum" else None
  x = T(np.moveaxis(image, -1, 1).copy())
  batch_sizes = []  # the window count of each predictor call MONAI makes

  def counted(windows):
    batch_sizes.append(int(windows.shape[0]))
    return predictor(windows)

  predictor = torch_predictor(kind, w, b)
  with torch.no_grad():
    out = sliding_window_inference(x, roi, sw_batch_size, counted, **options)
  _check_monai_test_value(name, out, monai_test_value, rtol=1e-4, atol=0)
  if isinstance(out, dict):
    outputs = {f"expected.{key}": _cl(v) for key, v in out.items()}
    structure = ["dict", sorted(out)]
  elif isinstance(out, (tuple, list)):
    outputs = {f"expected.{i}": _cl(v) for i, v in enumerate(out)}
    structure = ["tuple", len(out)]
  else:
    outputs = {"expected": _cl(out)}
    structure = ["array"]
  spatial = image.shape[1:4]
  roi_t = tuple(s if r is None or r <= 0 else r for r, s in zip(
      (roi,) * 3 if isinstance(roi, int) else roi, spatial))
  arrays = {"image": image, **outputs}
  if w is not None:
    arrays.update(w=w, b=b)
  _add({"name": name, "group": "sliding_window", "source": source, "predictor": kind,
        "roi_size": list(roi) if not isinstance(roi, int) else roi,
        "sw_batch_size": sw_batch_size, "options": options, "structure": structure,
        "roi_effective": list(roi_t), "monai_batch_sizes": batch_sizes,
        "monai": f"sliding_window_inference(inputs, {roi}, {sw_batch_size}, predictor, "
                 + ", ".join(f"{k_}={v!r}" for k_, v in options.items()) + ")"},
       **arrays)


def sliding_window_cases() -> None:
  rng = np.random.default_rng(5)
  img = rng.normal(0, 1, (2, 10, 9, 8, 2)).astype(np.float32)
  gen = "generated"
  # Most cases share one scan, ROI and window batch, so that the test compiles them once.
  roi, sw = (5, 5, 4), 4
  sw_case("sw_constant_o25", gen, img, roi, sw, "window_mean", overlap=0.25, mode="constant")
  sw_case("sw_gaussian_o50", gen, img, roi, sw, "window_mean", overlap=0.5, mode="gaussian")
  sw_case("sw_gaussian_o60_sigma", gen, img, roi, sw, "window_mean", overlap=0.6,
          mode="gaussian", sigma_scale=0.3)
  sw_case("sw_gaussian_axes", gen, img, roi, sw, "window_mean", overlap=(0.3, 0.5, 0.7),
          mode="gaussian", sigma_scale=(0.2, 0.5, 1.0))
  sw_case("sw_constant_axes", gen, img, roi, sw, "window_mean", overlap=(0.0, 0.5, 0.75),
          mode="constant")
  # Batch-mixing predictor, short last batch: MONAI runs the last windows as a smaller batch.
  sw_case("sw_batchmix_constant_short_last", gen, img, roi, sw, "batch_mean", overlap=0.25,
          mode="constant")
  sw_case("sw_batchmix_gaussian_short_last", gen, img, roi, sw, "batch_mean",
          overlap=(0.25, 0.5, 0.5), mode="gaussian")
  # ROI larger than the scan along some axes: padding (MONAI: half before, the rest after).
  small = rng.normal(0, 1, (1, 3, 9, 5, 2)).astype(np.float32)
  for pad in ("constant", "replicate", "reflect", "circular"):
    # torch's F.pad takes a fill value for the constant mode only.
    extra = {"cval": -0.5} if pad == "constant" else {}
    sw_case(f"sw_padding_{pad}", gen, small, (6, 4, 7), 2, "window_mean", overlap=0.25,
            mode="gaussian", padding_mode=pad, **extra)
  sw_case("sw_fits_one_roi", gen, img[:, :4, :4, :4], (6, 6, 6), 1, "window_mean",
          mode="gaussian", padding_mode="constant", cval=0.25)
  # MONAI tests/inferers/test_sliding_window_inference.py::test_cval, as a 3-D scan of depth 1.
  sw_case("monai_sw_test_cval", "MONAI tests/inferers/test_sliding_window_inference.py::test_cval",
          np.ones((1, 1, 3, 3, 1), np.float32), (1, 5, 5), 10, "cval_sum", k=1, overlap=0.5,
          padding_mode="constant", cval=-1.0, mode="constant", sigma_scale=1.0,
          monai_test_value=np.ones((1, 1, 1, 3, 3)) * -6.0)
  # test_sigma's geometry (7x7, ROI 3x3, overlap 0.5, 25 windows in batches of 10, 10, 5) with a
  # batch-mixing predictor on a ramp (its own predictor counts calls, which a jitted one cannot).
  ramp = (np.arange(49, dtype=np.float32).reshape(1, 1, 7, 7, 1) / 49.0)
  for mode in ("constant", "gaussian"):
    sw_case(f"monai_sw_test_sigma_geometry_{mode}",
            "MONAI tests/inferers/test_sliding_window_inference.py::test_sigma (geometry)", ramp,
            (1, 3, 3), 10, "batch_mean", k=1, overlap=0.5, padding_mode="constant", cval=-1.0,
            mode=mode, sigma_scale=1.0)
  # Geometries of MONAI's TEST_CASES (test_sliding_window_default), 3-D ones, with a predictor
  # that depends on the window (MONAI's own `data + 1` cannot tell a misplaced window).
  n = 3 * 16 * 15 * 7
  for i, (shape, roi_i, sw_i, overlap, mode) in enumerate([
      ((1, 3, 16, 15, 7), (4, -1, 7), 3, 0.25, "constant"),
      ((1, 3, 16, 15, 7), (20, 22, 23), 10, 0.5, "constant"),
      ((2, 3, 16, 15, 7), (4, 1, 7), 3, 0.25, "constant")]):
    base = (np.arange(n, dtype=np.float32).reshape(3, 16, 15, 7) / n)
    image = np.stack([base + 0.1 * j for j in range(shape[0])])
    sw_case(f"monai_sw_default_geometry_{i}",
            "MONAI tests/inferers/test_sliding_window_inference.py::test_sliding_window_default "
            "(geometry)", np.moveaxis(image, 1, -1).copy(), roi_i, sw_i, "window_mean", seed=i,
            overlap=overlap, mode=mode)
  # Several outputs.
  sw_case("sw_multi_tuple", gen, img, roi, sw, "multi", overlap=0.25, mode="gaussian")
  sw_case("sw_multi_dict", gen, img, roi, sw, "multi_dict", overlap=0.5, mode="constant")
  img8 = rng.normal(0, 1, (1, 8, 12, 8, 2)).astype(np.float32)
  sw_case("sw_multi_scale", gen, img8, (4, 4, 4), 3, "multi_scale", overlap=0.5, mode="constant")


def main() -> None:
  torch.manual_seed(0)
  monai_dice_loss_cases()
  monai_generalized_dice_cases()
  monai_tversky_cases()
  monai_dice_ce_cases()
  monai_focal_cases()
  generated_loss_cases()
  torch_ce_cases()
  dice_metric_cases()
  monai_dice_metric_cases()
  distance_cases()
  monai_distance_cases()
  monai_surface_dice_cases()
  sliding_window_cases()
  versions = {"monai": monai.__version__, "torch": torch.__version__, "numpy": np.__version__,
              "scipy": scipy.__version__, "python": platform.python_version()}
  dump = lambda obj: json.dumps(obj, separators=(",", ":"), default=float)  # noqa: E731
  # One case a line, so that a regeneration diffs readably.
  text = ('{"versions":' + dump(versions) + ',\n"regenerate":'
          + dump("python tests/monai_reference/make_fixtures.py") + ',\n"cases":[\n'
          + ",\n".join(dump(c) for c in CASES) + "\n]}\n")
  json.loads(text)
  np.savez_compressed(HERE / "fixtures.npz", **ARRAYS)
  (HERE / "cases.json").write_text(text)
  size = (HERE / "fixtures.npz").stat().st_size + (HERE / "cases.json").stat().st_size
  print(f"{len(CASES)} cases, {len(ARRAYS)} arrays, {size / 1024:.0f} KiB")


if __name__ == "__main__":
  main()
