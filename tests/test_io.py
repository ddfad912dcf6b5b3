"""Tests for medjax.io: round trips, dropped singleton axes, atomic writes, clear errors."""

import os

import nibabel as nib
import numpy as np
import pytest

from medjax import io


def _volume(shape=(4, 5, 6), dtype=np.int16):
  return (np.arange(np.prod(shape)).reshape(shape) % 97).astype(dtype)


def test_analyze_round_trip_drops_trailing_singleton(tmp_path):
  data = _volume((4, 5, 6, 1))
  io.save_image(tmp_path / "subject-1-T1.hdr", data, np.eye(4))
  assert sorted(os.listdir(tmp_path)) == ["subject-1-T1.hdr", "subject-1-T1.img"]
  # nibabel itself keeps the singleton axis, like the real iSeg files.
  assert nib.load(tmp_path / "subject-1-T1.hdr").shape == (4, 5, 6, 1)
  img = io.load_image(tmp_path / "subject-1-T1.img")  # either file of the pair works
  assert img.data.shape == (4, 5, 6)
  assert img.data.dtype == np.int16
  np.testing.assert_array_equal(img.data, data[..., 0])
  assert img.spacing == (1.0, 1.0, 1.0)
  # Analyze keeps only the voxel size: x flipped, origin at the volume centre.
  expected = np.array([[-1, 0, 0, 1.5], [0, 1, 0, -2], [0, 0, 1, -2.5], [0, 0, 0, 1]])
  np.testing.assert_array_equal(img.affine, expected)


@pytest.mark.parametrize("name", ["a.nii", "a.nii.gz"])
def test_nifti_round_trip_keeps_affine(tmp_path, name):
  data = np.linspace(-1, 1, 60, dtype=np.float32).reshape(3, 4, 5)
  affine = np.array([[0, 0, 2.0, 10], [0, 1.5, 0, -3], [-3.0, 0, 0, 7], [0, 0, 0, 1]])
  io.save_image(tmp_path / name, data, affine)
  img = io.load_image(tmp_path / name)
  np.testing.assert_array_equal(img.data, data)
  np.testing.assert_allclose(img.affine, affine, atol=1e-6)
  assert img.spacing == pytest.approx((3.0, 1.5, 2.0))
  assert os.listdir(tmp_path) == [name]


def test_dtype_option(tmp_path):
  io.save_image(tmp_path / "l.hdr", np.array([[[0, 10], [150, 250]]]), np.eye(4), dtype=np.uint8)
  img = io.load_image(tmp_path / "l.hdr")
  assert img.data.dtype == np.uint8
  np.testing.assert_array_equal(img.data, [[[0, 10], [150, 250]]])


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
  def fail(self, filename):
    with open(filename, "wb") as f:  # a partial file, as a crash mid-write would leave
      f.write(b"partial")
    raise OSError("disk full")

  monkeypatch.setattr(nib.AnalyzeImage, "to_filename", fail)
  with pytest.raises(OSError, match="disk full"):
    io.save_image(tmp_path / "x.hdr", _volume(), np.eye(4))
  assert os.listdir(tmp_path) == []


def test_overwrite_is_atomic_replace(tmp_path):
  io.save_image(tmp_path / "x.nii.gz", _volume(), np.eye(4))
  io.save_image(tmp_path / "x.nii.gz", _volume() + 1, np.eye(4))
  np.testing.assert_array_equal(io.load_image(tmp_path / "x.nii.gz").data, _volume() + 1)
  assert os.listdir(tmp_path) == ["x.nii.gz"]


def test_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.nii"):
    io.load_image(tmp_path / "nope.nii")
  io.save_image(tmp_path / "x.hdr", _volume(), np.eye(4))
  os.remove(tmp_path / "x.img")
  with pytest.raises(FileNotFoundError, match=r"x\.img: missing"):
    io.load_image(tmp_path / "x.hdr")


def test_not_an_image(tmp_path):
  (tmp_path / "bad.hdr").write_bytes(b"this is not an Analyze header")
  (tmp_path / "bad.img").write_bytes(b"\0" * 10)
  with pytest.raises(ValueError, match=r"bad\.hdr: not a readable \.hdr image"):
    io.load_image(tmp_path / "bad.hdr")


def test_bad_names_and_shapes(tmp_path):
  with pytest.raises(ValueError, match="unsupported image file name"):
    io.load_image(tmp_path / "x.png")
  with pytest.raises(ValueError, match="affine must be"):
    io.save_image(tmp_path / "x.nii", _volume(), np.eye(3))
  io.save_image(tmp_path / "x4.nii", _volume((3, 4, 5, 2)), np.eye(4))
  with pytest.raises(ValueError, match=r"expected a 3-D volume.*\(3, 4, 5, 2\)"):
    io.load_image(tmp_path / "x4.nii")


@pytest.mark.parametrize("name", ["m.nii", "m.nii.gz"])
def test_allow_4d_reads_channels_last(tmp_path, name):
  data = np.arange(3 * 4 * 5 * 2, dtype=np.float32).reshape(3, 4, 5, 2)
  affine = np.array([[-0.8, 0, 0, 5], [0, 1.0, 0, -2], [0, 0, 2.5, 1], [0, 0, 0, 1]])
  nib.save(nib.Nifti1Image(data, affine), tmp_path / name)
  img = io.load_image(tmp_path / name, allow_4d=True)
  ref = nib.load(tmp_path / name)
  assert img.data.shape == (3, 4, 5, 2) and img.data.dtype == np.float32
  np.testing.assert_array_equal(img.data, np.asanyarray(ref.dataobj))
  np.testing.assert_array_equal(img.affine, ref.affine)
  assert img.spacing == pytest.approx((0.8, 1.0, 2.5))
  assert img.spacing == tuple(float(z) for z in ref.header.get_zooms()[:3])
  with pytest.raises(ValueError, match=r"expected a 3-D volume.*\(3, 4, 5, 2\)"):
    io.load_image(tmp_path / name)  # 4-D needs the opt-in


def test_allow_4d_still_drops_trailing_singletons(tmp_path):
  data = _volume((3, 4, 5, 1))
  nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "one.nii.gz")
  img = io.load_image(tmp_path / "one.nii.gz", allow_4d=True)
  assert img.data.shape == (3, 4, 5)
  np.testing.assert_array_equal(img.data, data[..., 0])
  nib.save(nib.Nifti1Image(_volume((3, 4, 5, 2, 1)), np.eye(4)), tmp_path / "five.nii.gz")
  assert io.load_image(tmp_path / "five.nii.gz", allow_4d=True).data.shape == (3, 4, 5, 2)
  nib.save(nib.Nifti1Image(_volume((3, 4, 5, 2, 2)), np.eye(4)), tmp_path / "bad.nii.gz")
  with pytest.raises(ValueError, match=r"bad\.nii\.gz: expected a 3-D or 4-D.*\(3, 4, 5, 2, 2\)"):
    io.load_image(tmp_path / "bad.nii.gz", allow_4d=True)


def test_write_text_is_atomic_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "config.json"
  path.write_text("old")
  assert io.write_text(path, '{"a": 1}\n') == path
  assert path.read_text() == '{"a": 1}\n'
  assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
  mask = os.umask(0)
  os.umask(mask)
  assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_write_text_failure_keeps_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "results.csv"
  path.write_text("old")

  def fail(*args):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError, match="No space"):
    io.write_text(path, "new")
  assert path.read_text() == "old"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]
