"""Data-quality rules on decoded images: the pure functions behind the loaders' warnings and
refusals, and the refusal of non-finite pixels by the readers."""
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from ccfl_jax.data import dicom, image_checks, image_folder
from ccfl_jax.data.errors import BadFilePolicy, DataError


def test_tiny_images_warning_counts_and_names_only_the_first():
  sized = [("ok.png", (32, 32))] + [(f"t{i}.png", (8, 40)) for i in range(10_000)]
  warning = image_checks.tiny_images_warning(sized)
  assert warning.startswith("10000 image(s) smaller than 32 pixels on a side (first: t0.png, "
                            "40x8)")
  assert image_checks.tiny_images_warning([("ok.png", (32, 512))]) is None


def test_mixed_sizes_most_common_first_and_first_odd_one():
  ordered = [("a", (256, 256)), ("b", (512, 512)), ("c", (512, 512)), ("d", (128, 64))]
  assert image_checks.mixed_sizes_warning("S", ordered) == (
      "series S mixes slice sizes 512x512, 256x256 and 64x128 (first odd one: a)")
  assert image_checks.mixed_sizes_warning("S", ordered[1:3]) is None


def test_series_are_checked_separately():
  slices = [("S1", "a", (512, 512)), ("S2", "b", (256, 256)), ("S1", "c", (512, 512))]
  assert image_checks.mixed_series_sizes_warnings(slices) == []


def test_dicom_claimed_size_limits():
  assert image_checks.dicom_claimed_size_problem(512, 512, 4000) is None
  assert "per frame" in image_checks.dicom_claimed_size_problem(16385, 16384, None)
  assert "9,000 frames" in image_checks.dicom_claimed_size_problem(512, 512, 9000)
  assert image_checks.dicom_claimed_size_problem(None, 512, 1) is None


def test_non_finite_values_are_counted_and_named():
  values = np.zeros((4, 4), np.float32)
  assert image_checks.non_finite_problem(values) is None
  values[0, 0], values[1, 1], values[2, 2] = np.nan, np.inf, np.nan
  assert image_checks.non_finite_problem(values).startswith(
      "3 of 16 pixel values are not finite (NaN, +Inf)")


def _float_dicom(path, hu_pixels):
  """CT_small.dcm with its pixels replaced by float pixel data (FloatPixelData)."""
  dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
  del dataset.PixelData
  dataset.FloatPixelData = np.asarray(hu_pixels, np.float32).tobytes()
  dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 32, 32, 31
  del dataset.PixelRepresentation
  dataset.RescaleSlope, dataset.RescaleIntercept = 1, 0
  dataset.save_as(path)
  return path


def test_a_dicom_slice_with_non_finite_hounsfield_units_is_a_bad_file(tmp_path):
  hu = np.full((128, 128), -500.0, np.float32)
  [finite] = dicom.read_dicom_file(_float_dicom(tmp_path / "finite.dcm", hu))
  assert np.isfinite(finite.image).all() and finite.image[64, 64] == -500.0
  hu[64, 64] = np.nan
  with pytest.raises(DataError, match=r"nan.dcm: 1 of 16,384 Hounsfield units .* not finite"):
    dicom.read_dicom_file(_float_dicom(tmp_path / "nan.dcm", hu))
  hu[0, 0] = np.inf  # outside the field of view: set to air, harmless; the NaN still counts
  policy = BadFilePolicy("skip")
  assert dicom.read_series([_float_dicom(tmp_path / "nan.dcm", hu),
                            tmp_path / "finite.dcm"], policy)[0].path.endswith("finite.dcm")
  assert [s.path for s in policy.skipped] == [str(tmp_path / "nan.dcm")]


def test_a_float_image_with_nan_or_inf_pixels_is_a_bad_file(tmp_path):
  pixels = np.full((40, 40), 0.5, np.float32)
  Image.fromarray(pixels, mode="F").save(tmp_path / "ok.tiff")
  pixels[3, 3] = np.inf
  Image.fromarray(pixels, mode="F").save(tmp_path / "inf.tiff")
  (tmp_path / "labels.csv").write_text("path,label,patient_id\nok.tiff,0,a\ninf.tiff,1,b\n")
  with pytest.raises(DataError, match=r"inf.tiff: 1 of 1,600 pixel values are not finite"):
    image_folder.read_labelled_folder(tmp_path, 16)
  slices = image_folder.read_labelled_folder(tmp_path, 16, on_bad_file="skip")
  assert len(slices) == 1 and np.isfinite(slices.images).all()
  assert [s.path for s in slices.skipped] == [str(tmp_path / "inf.tiff")]
