"""Region-based training: the region helpers by hand, and train -> validate -> predict end to end."""

import numpy as np
import pytest

from medjax import checkpoint
from medjax import prediction
from medjax import regions
from medjax import train_lib
from medjax import outputs
import tiny

BRATS = ((1, 2, 3), (1, 3), (3,))


def test_paint_order_is_nnunets_regions_class_order():
  # BraTS (class ids 1 NCR, 2 ED, 3 ET): whole tumour paints ED, core NCR, enhancing ET.
  assert regions.paint_order(BRATS) == (2, 1, 3)
  with pytest.raises(ValueError, match="from the largest to the smallest"):
    regions.paint_order(((3,), (1, 3), (1, 2, 3)))  # smallest first: WT adds two classes


def test_masks_to_classes_gives_the_labels_back():
  label = np.array([[0, 1, 2], [3, 2, 1]])
  masks = regions.region_masks(label, BRATS)
  # By hand: WT = label > 0; TC = label in {1, 3}; ET = label == 3.
  np.testing.assert_array_equal(masks[..., 0], [[0, 1, 1], [1, 1, 1]])
  np.testing.assert_array_equal(masks[..., 1], [[0, 1, 0], [1, 0, 1]])
  np.testing.assert_array_equal(masks[..., 2], [[0, 0, 0], [1, 0, 0]])
  np.testing.assert_array_equal(regions.masks_to_classes(masks, BRATS), label)
  # A core voxel outside the whole tumour still paints as core (nnU-Net paints in order).
  odd = np.zeros((1, 1, 3), bool)
  odd[0, 0, 1] = True
  np.testing.assert_array_equal(regions.masks_to_classes(odd, BRATS), [[1]])


def test_check_regions_and_names():
  assert regions.check_regions([[3, 2, 1], [1, 3], [3]], 4) == BRATS
  with pytest.raises(ValueError, match=r"holds \[4\]"):
    regions.check_regions(((1, 4),), 4)
  with pytest.raises(ValueError, match="non-empty tuple"):
    regions.check_regions((), 4)
  assert regions.region_names(BRATS, {"WT": [1, 2, 3], "ET": [3]}) == ("WT", "region1", "ET")


@pytest.mark.slow
def test_region_training_validates_and_predicts(iseg_config, iseg_raw_dir, tmp_path):
  """iSeg's tissues as nested regions (brain, GM + WM, WM) through train, validation, predict."""
  nested = ((1, 2, 3), (2, 3), (3,))
  config = tiny.shrink(iseg_config, num_train_steps=2, eval_every_steps=2,
                       dataset__regions=nested, loss__name="dice", loss__sigmoid=True,
                       loss__softmax=False, **tiny.FAST_COMPILE)
  softmax = tiny.shrink(iseg_config, dataset__regions=nested)
  with pytest.raises(ValueError, match="sigmoid output per region"):
    train_lib.train_and_evaluate(softmax, str(tmp_path / "refused"))
  workdir = tmp_path / "w"
  metrics = train_lib.train_and_evaluate(config, str(workdir))
  assert set(metrics) == {"val_loss", "val_dice_region0", "val_dice_region1", "val_dice_region2",
                          "val_dice_mean"}
  assert all(np.isfinite(v) for v in metrics.values())
  model, variables, saved = checkpoint.restore_model(str(workdir), which="latest")
  assert saved.dataset.regions == nested
  assert outputs.output_activation(saved) == "sigmoid"
  t1 = next(iseg_raw_dir.rglob("subject-1-T1.hdr"))
  case = prediction.load_case(str(t1), str(t1).replace("-T1", "-T2"))
  image = prediction.check_modalities(case, saved, str(workdir))
  probs = prediction.segment(model, variables, saved, image, affine=case.affine)
  assert probs.shape[-1] == 3 and probs.min() >= 0 and probs.max() <= 1
  classes = outputs.output_classes(probs, saved)
  assert set(np.unique(classes)) <= {0, 1, 2, 3}
  # The painted classes are exactly the regions' masks turned back (checked voxel by voxel).
  masks = probs > 0.5
  expected = np.where(masks[..., 2], 3, np.where(masks[..., 1], 2, np.where(masks[..., 0], 1, 0)))
  np.testing.assert_array_equal(classes, expected)
