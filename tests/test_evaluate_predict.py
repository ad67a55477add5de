"""evaluate and predict on a run directory made by the spine's checkpointing (untrained model)."""
import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from ccfl_jax import evaluate, inference, metrics, predict, reporting, training
from ccfl_jax.configuration import default_config
from ccfl_jax.data.errors import DataError
from ccfl_jax.ledger import audit


def _refuse(token):
  raise ValueError(f"non-standard JSON token {token}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A run folder as training leaves it (config.json, checkpoint, ledger): 1 round of an MLP."""
  root = tmp_path_factory.mktemp("runs")
  config = default_config()
  config.run_name = "tiny"
  config.dataset.num_patients = 8
  config.dataset.slices_per_patient = 2
  config.dataset.image_size = 16
  config.dataset.cache_dir = str(root / "run_cache")
  config.model.name = "mlp"
  config.model.hidden = (8,)
  config.num_hospitals = config.hospitals_per_round = 2
  config.num_rounds = config.local_steps = 1
  config.batch_size = config.eval_batch_size = 4
  training.train_and_evaluate(config, root / "tiny")
  return root / "tiny"


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
  assert report["round"] == 1 and report["slices"] == 2 and report["patients"] == 2
  assert report["checkpoint"].startswith("checkpoint and config.json verified")
  for level in ("slice_metrics", "patient_metrics"):
    assert {"precision", "sensitivity", "specificity", "accuracy", "auc",
            "confusion_matrix"} <= set(report[level])
  assert sum(map(sum, report["slice_metrics"]["confusion_matrix"])) == 2
  assert report["bootstrap"] == dict(resamples=1000, seed=0, resampled="patients",
                                     interval="percentiles 2.5, 97.5")
  for level in ("slice_metrics", "patient_metrics"):  # 1 slice per patient: a fixed AUC
    m = report[level]
    assert m["auc_ci95"] == [m["auc"], m["auc"]] and 400 < m["auc_ci95_resamples"] < 600
    assert m["specificity_at_sensitivity_95"] in (0.0, 1.0)  # one negative patient
    assert 0.0 <= m["threshold_at_sensitivity_95"] <= 1.0
  text = evaluate.format_report(report)
  assert "AUC 95% CI [" in text and "patient resamples with both classes, seed 0" in text
  assert "at sensitivity >= 0.95 (threshold " in text
  off = evaluate.evaluate_run(run_dir, f"image_folder:{image_dataset}", split="val",
                              bootstrap=metrics.Bootstrap(resamples=0))
  assert off["patient_metrics"]["auc_ci95"] is None
  assert "AUC 95% CI none (--bootstrap=0)" in evaluate.format_report(off)
  assert report["preprocessing"]["image_size"] == 16
  assert "round1" in str(evaluate.default_output_path(run_dir, report))
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


def test_evaluate_and_predict_refuse_what_the_ledger_does_not_vouch_for(run_dir, image_dataset,
                                                                       tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(run_dir, copy)
  config_file = copy / "config.json"
  text = config_file.read_text()
  assert '"eval_batch_size": 4' in text
  config_file.write_text(text.replace('"eval_batch_size": 4', '"eval_batch_size": 2'))
  data = f"image_folder:{image_dataset}"
  with pytest.raises(audit.CheckpointRefused, match=r"config.json .*sha256.*--no_verify"):
    evaluate.evaluate_run(copy, data)
  with pytest.raises(audit.CheckpointRefused, match="config.json"):
    predict.run_predictions(copy, [image_dataset / "2.png"])
  report = evaluate.evaluate_run(copy, data, verify=False)  # unaudited, and says so
  assert report["checkpoint"].startswith("NOT verified") and report["slices"] == 4
  shutil.rmtree(copy / "ledger")
  with pytest.raises(audit.CheckpointRefused, match="ledger does not verify"):
    evaluate.evaluate_run(copy, data)


def test_evaluate_never_uses_the_runs_cache_and_checks_its_arguments(run_dir, image_dataset):
  config = inference.load_run(run_dir).config
  assert config.dataset.cache_dir.endswith("run_cache")
  evaluation = evaluate.evaluation_dataset_config(config, "image_folder", str(image_dataset),
                                                  "error", cache_dir="/auditor/cache")
  assert evaluation.cache_dir == "/auditor/cache" and evaluation.tfds_data_dir == ""
  assert evaluate.evaluation_dataset_config(config, "phantom", "", "error").cache_dir == ""
  with pytest.raises(ValueError, match=r"--threshold=2.*\[0, 1\]"):
    evaluate.evaluate_run(run_dir, f"image_folder:{image_dataset}", threshold=2)
  with pytest.raises(ValueError, match=r"--top_fraction=0.*\(0, 1\]"):
    predict.run_predictions(run_dir, [image_dataset / "2.png"], top_fraction=0)
  with pytest.raises(FileNotFoundError, match=r"checkpoints/7: no such checkpoint.*present: 1"):
    evaluate.evaluate_run(run_dir, f"image_folder:{image_dataset}", round_=7)
