"""DICOM reader: real scanner series, pydicom test files, and every kind of bad input."""
import shutil
import ml_collections
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from ccfl_jax.data import dicom
from ccfl_jax.data.errors import DataError
from ccfl_jax.data.preprocessing import lung_window

# COVID-CT-MD's de-identified UIDs are UUIDs, which pydicom flags; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")


def dataset_config(path, tmp_path, on_bad_file="error", image_size=32):
  return ml_collections.ConfigDict(dict(
      name="dicom", path=str(path), image_size=image_size, window_level=-600.0,
      window_width=1500.0, on_bad_file=on_bad_file, cache_dir=str(tmp_path / "cache")))


def ct_small_copy(path, series_uid=None, z=None, instance=None):
  """Writes pydicom's CT_small.dcm to `path`, optionally moved to another series or position."""
  dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
  if series_uid is not None:
    dataset.SeriesInstanceUID = series_uid
  if z is not None:
    dataset.ImagePositionPatient = [0.0, 0.0, z]
    dataset.SliceLocation = z
  if instance is not None:
    dataset.InstanceNumber = instance
  path.parent.mkdir(parents=True, exist_ok=True)
  dataset.save_as(path)
  return dataset


@pytest.fixture(scope="module")
def covid_ct_md_slices(tmp_path_factory):
  from tests.conftest import require_shared
  root = require_shared("covid_ct_md")
  return dicom.load(dataset_config(root, tmp_path_factory.mktemp("md")), seed=0)


def test_real_series_have_all_slices_in_slice_location_order(covid_ct_md_slices):
  for name, count in (("P002", 133), ("cap002", 131)):
    mine = covid_ct_md_slices.patient_ids == name
    assert mine.sum() == count
    locations = covid_ct_md_slices.slice_positions[mine]
    assert np.all(np.diff(locations) > 0)
    assert np.all(covid_ct_md_slices.slice_thickness[mine] == 2.0)


def test_real_series_order_matches_the_datasets_own_index(covid_ct_md_dir, covid_ct_md_slices):
  import csv
  with open(covid_ct_md_dir / "labels.csv") as f:
    rows = [r for r in csv.DictReader(f) if r["patient_id"] == "P002"]
  by_rank = sorted(rows, key=lambda r: int(r["rank_by_slice_location_asc"]))
  mine = covid_ct_md_slices.patient_ids == "P002"
  assert [p.split("/")[-1] for p in covid_ct_md_slices.source_paths[mine]] == \
      [r["path"].split("/")[-1] for r in by_rank]


def test_real_hounsfield_units(covid_ct_md_dir):
  for name in ("P002", "cap002"):
    files = sorted((covid_ct_md_dir / "dicom" / name).glob("*.dcm"))[::15]
    values = np.stack([dicom.read_dicom_file(f)[0].image for f in files])
    assert values.min() >= -1024 and values.max() <= 3071
  full = dicom.read_dicom_file(covid_ct_md_dir / "dicom" / "P002" / "IM0060.dcm")[0].image
  assert full[0, 0] == -1000.0  # outside the field of view
  assert abs(np.median(full[5:30, 236:276]) + 1000) < 40  # air above the body, inside the FOV
  windowed = lung_window(full, -600.0, 1500.0)
  assert windowed.min() >= 0.0 and windowed.max() <= 1.0


def test_covid_ct_md_loads_as_labelled_dataset(covid_ct_md_slices):
  slices = covid_ct_md_slices
  assert slices.images.shape == (264, 32, 32, 1)
  assert slices.images.min() >= 0.0 and slices.images.max() <= 1.0
  assert sorted(slices.patients()) == ["P002", "cap002"]
  assert set(slices.labels[slices.patient_ids == "P002"]) == {1}
  assert set(slices.labels[slices.patient_ids == "cap002"]) == {0}
  assert slices.split is None and slices.skipped == () and slices.warnings == ()


def test_ct_small_in_hounsfield_units():
  (s,) = dicom.read_dicom_file(get_testdata_file("CT_small.dcm"))
  dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
  center = dataset.pixel_array[64, 64] * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
  assert s.image[64, 64] == center
  assert s.image[0, 0] == -1000.0 and s.image.max() < 3072


def test_enhanced_ct_rescale_from_functional_groups():
  path = get_testdata_file("eCT_Supplemental.dcm")
  dataset = pydicom.dcmread(path)
  assert "RescaleIntercept" not in dataset  # only in the functional groups
  slices = dicom.read_dicom_file(path)
  assert len(slices) == 2
  stored = dataset.pixel_array[:, 256, 256].astype(np.float32)
  assert [s.image[256, 256] for s in slices] == list(stored - 1024.0)
  ordered = sorted(slices, key=dicom.slice_order_key)
  assert ordered[0].position < ordered[1].position
  assert all(s.thickness == 10.0 for s in slices)


def test_order_follows_position_not_file_name(tmp_path):
  for name, z in (("a.dcm", 30.0), ("b.dcm", -10.0), ("c.dcm", 5.0)):
    ct_small_copy(tmp_path / name, z=z, instance=1)
  slices = dicom.read_series_folder(tmp_path)
  assert [s.path.split("/")[-1] for s in slices] == ["b.dcm", "c.dcm", "a.dcm"]


def test_class_folders_label_without_labels_csv(tmp_path):
  ct_small_copy(tmp_path / "covid" / "patient_a" / "1.dcm")
  ct_small_copy(tmp_path / "normal" / "patient_b" / "1.dcm")
  slices = dicom.load(dataset_config(tmp_path / "", tmp_path / "c"), 0)
  assert dict(zip(slices.patient_ids, slices.labels)) == {"patient_a": 1, "patient_b": 0}


# --- bad input: each names the file and the problem -------------------------------------------

def labelled_series(root, *names):
  for i, name in enumerate(names):
    ct_small_copy(root / "p1" / name, z=float(i))
  (root / "labels.csv").write_text("path,label,patient_id\np1,1,p1\n")


def expect_error(root, tmp_path, file_name, problem):
  with pytest.raises(DataError, match=problem) as info:
    dicom.load(dataset_config(root, tmp_path), 0)
  assert file_name in str(info.value)


def test_truncated_dicom(tmp_path):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm", "2.dcm")
  data = (root / "p1" / "2.dcm").read_bytes()
  (root / "p1" / "2.dcm").write_bytes(data[:len(data) // 2])
  expect_error(root, tmp_path, "2.dcm", "pixel data")


def test_corrupt_dicom_without_preamble(tmp_path):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm")
  (root / "p1" / "2.dcm").write_bytes(b"\x00garbage" * 50)
  expect_error(root, tmp_path, "2.dcm", "not a DICOM file")


def test_non_dicom_file_in_series_folder(tmp_path):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm")
  (root / "p1" / "notes.txt").write_text("scanner notes")
  expect_error(root, tmp_path, "notes.txt", "not a DICOM file")


def test_missing_pixel_data(tmp_path):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm")
  dataset = pydicom.dcmread(root / "p1" / "1.dcm")
  del dataset.PixelData
  dataset.save_as(root / "p1" / "1.dcm")
  expect_error(root, tmp_path, "1.dcm", "no pixel data")


def test_transfer_syntax_without_decoder(tmp_path):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm")
  dataset = pydicom.dcmread(root / "p1" / "1.dcm")
  dataset.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML  # no pixel decoder exists
  dataset.PixelData = pydicom.encaps.encapsulate([dataset.PixelData])
  dataset.save_as(root / "p1" / "1.dcm", enforce_file_format=True)
  expect_error(root, tmp_path, "1.dcm", "no decoder")


def test_mixed_series_in_one_folder(tmp_path):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm", "2.dcm")
  ct_small_copy(root / "p1" / "3.dcm", series_uid=generate_uid(), z=9.0)
  expect_error(root, tmp_path, "3.dcm", "mixed series")


def test_labels_row_naming_missing_file(tmp_path):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm")
  (root / "labels.csv").write_text("path,label,patient_id\np1,1,p1\np2/x.dcm,0,p2\n")
  expect_error(root, tmp_path, "x.dcm", "missing")


def test_label_not_zero_or_one(tmp_path):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm")
  (root / "labels.csv").write_text("path,label,patient_id\np1,2,p1\n")
  expect_error(root, tmp_path, "labels.csv line 2", "not 0 or 1")


def test_duplicate_paths_in_labels(tmp_path):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm")
  (root / "labels.csv").write_text("path,label,patient_id\np1,1,p1\np1,0,p1\n")
  expect_error(root, tmp_path, "labels.csv line 3", "duplicate path")


def test_unlabelled_file(tmp_path):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm")
  ct_small_copy(root / "p2" / "1.dcm")
  expect_error(root, tmp_path, "p2/1.dcm", "no label")


def test_empty_folder(tmp_path):
  (tmp_path / "empty").mkdir()
  expect_error(tmp_path / "empty", tmp_path, "empty", "no DICOM slices")


def test_missing_dataset_path(tmp_path):
  expect_error(tmp_path / "nowhere", tmp_path, "nowhere", "does not exist")


def test_skip_counts_every_bad_file(tmp_path):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm", "2.dcm", "3.dcm")
  (root / "p1" / "notes.txt").write_text("x")
  (root / "p1" / "2.dcm").write_bytes(b"junk")
  ct_small_copy(root / "p1" / "4.dcm", series_uid=generate_uid(), z=9.0)
  slices = dicom.load(dataset_config(root, tmp_path, on_bad_file="skip"), 0)
  assert len(slices) == 2
  skipped = {s.path.split("/")[-1]: s.problem for s in slices.skipped}
  assert set(skipped) == {"notes.txt", "2.dcm", "4.dcm"}
  assert "mixed series" in skipped["4.dcm"]
  again = dicom.load(dataset_config(root, tmp_path, on_bad_file="skip"), 0)  # from the cache
  assert again.skipped == slices.skipped


# --- data-quality checks: mixed and tiny slice sizes warned, absurd sizes refused ------------

def resized_ct_small(path, step=1, crop=None, z=0.0, series_uid=None):
  """CT_small.dcm (128x128) subsampled by `step` and/or cropped to `crop` x `crop` pixels."""
  dataset = ct_small_copy(path, series_uid=series_uid, z=z)
  pixels = dataset.pixel_array[::step, ::step][:crop, :crop]
  dataset.PixelData = np.ascontiguousarray(pixels).tobytes()
  dataset.Rows, dataset.Columns = pixels.shape
  dataset.save_as(path)
  return dataset


def load_labelled(root, tmp_path, on_bad_file="error"):
  (root / "labels.csv").write_text("path,label,patient_id\np1,1,p1\n")
  return dicom.load(dataset_config(root, tmp_path, on_bad_file), 0)


def test_clean_series_gives_no_warning(tmp_path):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm", "2.dcm")
  assert dicom.load(dataset_config(root, tmp_path), 0).warnings == ()


def test_mixed_slice_sizes_in_a_series_are_warned_once(tmp_path):
  root = tmp_path / "data"
  for name, z in (("1.dcm", 0.0), ("3.dcm", 2.0), ("4.dcm", 3.0)):
    ct_small_copy(root / "p1" / name, z=z)
  resized_ct_small(root / "p1" / "2.dcm", step=2, z=1.0)
  resized_ct_small(root / "p1" / "5.dcm", step=2, z=4.0)
  slices = load_labelled(root, tmp_path)
  assert len(slices) == 5 and slices.images.shape[1:] == (32, 32, 1)
  uid = pydicom.dcmread(root / "p1" / "1.dcm").SeriesInstanceUID
  assert slices.warnings == (f"series {uid} mixes slice sizes 128x128 and 64x64 "
                             f"(first odd one: {root / 'p1' / '2.dcm'})",)


def test_mixed_slice_sizes_without_series_uid_name_the_folder(tmp_path):
  root = tmp_path / "data"
  for name, step in (("1.dcm", 1), ("2.dcm", 2)):
    dataset = resized_ct_small(root / "p1" / name, step=step, z=float(step))
    del dataset.SeriesInstanceUID
    dataset.save_as(root / "p1" / name)
  (warning,) = load_labelled(root, tmp_path).warnings
  # a tie: the size of the first slice in slice order is the usual one
  assert warning == (f"series {root / 'p1'} mixes slice sizes 128x128 and 64x64 "
                     f"(first odd one: {root / 'p1' / '2.dcm'})")


def test_tiny_slices_give_one_warning_with_count_and_first_file(tmp_path):
  root = tmp_path / "data"
  for i, name in enumerate(("1.dcm", "2.dcm", "3.dcm")):
    resized_ct_small(root / "p1" / name, crop=16, z=float(i))
  slices = load_labelled(root, tmp_path)
  assert len(slices) == 3
  assert slices.warnings == (
      f"3 slice(s) smaller than 32 pixels on a side (first: {root / 'p1' / '1.dcm'}, 16x16): "
      "upscaled to image_size, they carry little detail; check they are CT slices, not "
      "thumbnails",)
  assert dicom.load(dataset_config(root, tmp_path), 0).warnings == slices.warnings  # cache hit


def claim_absurd_size(path):
  dataset = pydicom.dcmread(path)
  dataset.Rows, dataset.Columns = 32768, 32768  # 2**30 pixels claimed, 32 KiB of pixel data
  dataset.save_as(path)


def test_absurd_claimed_size_is_refused_before_decoding(tmp_path, monkeypatch):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm", "2.dcm")
  claim_absurd_size(root / "p1" / "2.dcm")
  monkeypatch.setattr(dicom, "decode_frames", lambda *a: pytest.fail("decoded"))
  with pytest.raises(DataError) as info:
    dicom.read_dataset(root / "p1" / "2.dcm")
  assert str(info.value) == (
      f"{root / 'p1' / '2.dcm'}: header claims 32768x32768 pixels per frame (1,073,741,824), "
      "above the limit of 268,435,456 (2**28): refused before decoding; expected a CT slice "
      "image (typically 512x512)")


def test_absurd_claimed_size_follows_on_bad_file(tmp_path):
  root = tmp_path / "data"
  labelled_series(root, "1.dcm", "2.dcm")
  claim_absurd_size(root / "p1" / "2.dcm")
  expect_error(root, tmp_path, "2.dcm", "header claims 32768x32768 pixels per frame")
  slices = dicom.load(dataset_config(root, tmp_path, on_bad_file="skip"), 0)
  assert len(slices) == 1
  (skipped,) = slices.skipped
  assert skipped.path.endswith("2.dcm") and "refused before decoding" in skipped.problem
