"""evaluate and predict on a run directory made by the spine's checkpointing (untrained model)."""
import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from ccfl_jax import checkpointing, evaluate, inference, models, predict, reporting
from ccfl_jax.configuration import default_config
from ccfl_jax.data.errors import DataError
from ccfl_jax.federated import server


def _refuse(token):
  raise ValueError(f"non-standard JSON token {token}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A run directory as training leaves it: config.json and one orbax checkpoint."""
  root = tmp_path_factory.mktemp("run")
  config = default_config()
  config.run_name = "tiny"
  config.dataset.image_size = 16
  config.dataset.cache_dir = str(root / "cache")
  config.eval_batch_size = 8
  checkpointing.write_config(root, config)
  state = server.initial_state(config, models.from_config(config))
  checkpointing.save(checkpointing.checkpoint_manager(root), state, 3, config.seed, [9, 9, 9])
  return root


@pytest.fixture
def image_dataset(tmp_path):
  for i in range(4):
    Image.new("RGB", (30 + 10 * i, 20), (40 * i, 40 * i, 40 * i)).save(tmp_path / f"{i}.png")
  (tmp_path / "labels.csv").write_text(
      "path,label,patient_id,split\n0.png,0,a,train\n1.png,1,a,train\n2.png,1,b,val\n3.png,0,c,val\n")
  return tmp_path


def test_patient_score_is_the_mean_of_the_top_tenth():
  probabilities = np.r_[np.zeros(18), 0.9, 0.7]
  assert inference.patient_score(probabilities) == pytest.approx(0.8)  # k = ceil(0.1 * 20) = 2
  assert inference.patient_score([0.3]) == pytest.approx(0.3)


def test_evaluate_reports_every_metric(run_dir, image_dataset):
  report = evaluate.evaluate_run(run_dir, f"image_folder:{image_dataset}", split="val")
  assert report["round"] == 3 and report["slices"] == 2 and report["patients"] == 2
  for level in ("slice_metrics", "patient_metrics"):
    assert {"precision", "sensitivity", "specificity", "accuracy", "auc",
            "confusion_matrix"} <= set(report[level])
  assert sum(map(sum, report["slice_metrics"]["confusion_matrix"])) == 2
  assert report["preprocessing"]["image_size"] == 16
  assert "round3" in str(evaluate.default_output_path(run_dir, report))
  written = json.loads(reporting.json_text(report), parse_constant=_refuse)  # what main writes
  assert written["slice_metrics"]["confusion_matrix"] == report["slice_metrics"]["confusion_matrix"]


def test_evaluate_rejects_bad_data_spec(run_dir):
  with pytest.raises(ValueError, match="kind"):
    evaluate.evaluate_run(run_dir, "pictures:/nowhere")


def test_predict_dicom_folder_file_and_image(run_dir, image_dataset, tmp_path):
  series = tmp_path / "series" / "patient_x"
  series.mkdir(parents=True)
  shutil.copy(get_testdata_file("CT_small.dcm"), series / "1.dcm")
  paths = [tmp_path / "series", get_testdata_file("CT_small.dcm"), image_dataset / "2.png"]
  slices, patients, about = predict.run_predictions(run_dir, paths)
  assert [p["patient"] for p in patients] == ["patient_x", "CT_small", "2"]
  assert all(0.0 <= s["prob_covid"] <= 1.0 for s in slices)
  assert about["preprocessing"]["image_size"] == 16  # from the run, not retyped
  written = predict.write_outputs(tmp_path / "out.csv", slices, patients, about)
  with open(written[1]) as f:
    assert [r["verdict"] in ("COVID-19", "not COVID-19") for r in csv.DictReader(f)] == [True] * 3
  predict.write_outputs(tmp_path / "out.json", slices, patients, about)
  assert len(json.loads((tmp_path / "out.json").read_text())["slices"]) == 3


def test_predict_names_a_bad_path(run_dir, tmp_path):
  (tmp_path / "broken.png").write_bytes(b"no image")
  with pytest.raises(DataError, match="broken.png"):
    predict.run_predictions(run_dir, [tmp_path / "broken.png"])
  with pytest.raises(DataError, match="no such file"):
    predict.run_predictions(run_dir, [tmp_path / "absent"])
