"""CC-19 tfds builder on a small CC-19-shaped tree made from real COVID-CT-MD slices."""
import pathlib
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from ccfl_jax.configuration import ConfigError
from ccfl_jax.data import cc19, datasets

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")


def make_manual_dir(covid_ct_md_dir, root, with_junk=False):
  """Two patients x 3 slices, labelled per patient folder, with an official split."""
  for patient in ("P002", "cap002"):
    (root / "scans" / patient).mkdir(parents=True)
    for number in ("0040", "0041", "0042"):
      shutil.copy(covid_ct_md_dir / "dicom" / patient / f"IM{number}.dcm",
                  root / "scans" / patient / f"IM{number}.dcm")
  (root / "labels.csv").write_text("path,label,patient_id,split\n"
                                   "scans/P002,1,P002,train\nscans/cap002,0,cap002,test\n")
  if with_junk:
    (root / "scans" / "P002" / "IM0099.dcm").write_bytes(b"truncated")
  return root


def dataset_config(path, tmp_path, on_bad_file="error"):
  return ml_collections.ConfigDict(dict(
      name="cc19", path=str(path), image_size=32, window_level=-600.0, window_width=1500.0,
      on_bad_file=on_bad_file, cache_dir=str(tmp_path / "cache")))


def test_builds_and_reads_array_record_without_tensorflow(covid_ct_md_dir, tmp_path):
  manual = make_manual_dir(covid_ct_md_dir, tmp_path / "manual")
  slices = cc19.load(dataset_config(manual, tmp_path), 0)
  assert slices.images.shape == (6, 32, 32, 1)
  assert 0.0 <= slices.images.min() and slices.images.max() <= 1.0
  assert dict(zip(slices.patient_ids, slices.split)) == {"P002": "train", "cap002": "test"}
  assert dict(zip(slices.patient_ids, slices.labels)) == {"P002": 1, "cap002": 0}
  positions = slices.slice_positions[slices.patient_ids == "P002"]
  assert np.all(np.diff(positions) > 0)
  assert "tensorflow" not in sys.modules

  import tensorflow_datasets as tfds
  builder = cc19.prepared_builder(dataset_config(manual, tmp_path))
  assert list(builder.data_path.glob("*.array_record*"))
  source = tfds.data_source(f"cc19/{builder.builder_config.name}", split="test",
                            data_dir=str(tmp_path / "cache" / "tensorflow_datasets"))
  assert len(source) == 3 and source[0]["label"] == 0


def test_changed_source_rebuilds_and_skips_are_recorded(covid_ct_md_dir, tmp_path):
  manual = make_manual_dir(covid_ct_md_dir, tmp_path / "manual", with_junk=True)
  slices = cc19.load(dataset_config(manual, tmp_path, on_bad_file="skip"), 0)
  assert len(slices) == 6
  assert [s.path.split("/")[-1] for s in slices.skipped] == ["IM0099.dcm"]
  prepared = cc19.load(dataset_config(manual, tmp_path, on_bad_file="skip"), 0)
  assert prepared.skipped == slices.skipped  # read back from the prepared dataset's metadata
  (manual / "scans" / "P002" / "IM0099.dcm").unlink()
  assert cc19.load(dataset_config(manual, tmp_path, on_bad_file="skip"), 0).skipped == ()


def test_a_manual_dir_without_labels_csv_is_named_in_the_error(covid_ct_md_dir, tmp_path):
  manual = make_manual_dir(covid_ct_md_dir, tmp_path / "manual")
  (manual / "labels.csv").unlink()
  with pytest.raises(ValueError, match="labels.csv"):
    cc19.load(dataset_config(manual, tmp_path), 0)


def test_manual_download_instructions_name_the_layout():
  assert "labels.csv" in cc19.MANUAL_DOWNLOAD_INSTRUCTIONS
  assert cc19.Cc19.MANUAL_DOWNLOAD_INSTRUCTIONS == cc19.MANUAL_DOWNLOAD_INSTRUCTIONS


def test_cc19_without_tensorflow_datasets_names_the_extra(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now raises
  with pytest.raises(ConfigError) as error:
    datasets.load_dataset(dataset_config(tmp_path, tmp_path), 0)
  message = str(error.value)
  assert 'pip install -e ".[cc19]"' in message and "tensorflow-datasets" in message
  assert "\n" not in message


_IMPORTS_WITHOUT_TFDS = """
import sys
sys.modules["tensorflow_datasets"] = None  # as if the cc19 extra were not installed
import ccfl_jax.training, ccfl_jax.evaluate, ccfl_jax.predict, ccfl_jax.main
import ccfl_jax.data.datasets, ccfl_jax.data.cc19
loaded = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets")
          and sys.modules[m] is not None]
print("loaded:", loaded)
"""


def test_the_package_imports_without_tensorflow_datasets():
  done = subprocess.run([sys.executable, "-c", _IMPORTS_WITHOUT_TFDS], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "loaded: []" in done.stdout
