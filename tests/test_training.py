"""End to end: the main command's outputs, resume == uninterrupted, and config errors."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ccfl_jax import checkpointing, configuration, training
from tests.conftest import REPO_ROOT


def tiny_config(run_dir_name="run", **overrides):
  c = configuration.default_config()
  c.run_name = run_dir_name
  c.dataset.num_patients = 12
  c.dataset.slices_per_patient = 2
  c.dataset.image_size = 16
  c.model.name = "mlp"
  c.model.hidden = (8,)
  c.num_hospitals = 3
  c.hospitals_per_round = 2
  c.local_steps = 2
  c.batch_size = 4
  c.num_rounds = 4
  c.checkpoint_every = 2
  for key, value in overrides.items():
    c[key] = value
  return c


def _metrics(run_dir):
  lines = (run_dir / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(line).items() if k != "round_seconds"} for line in lines]


def test_resume_after_stop_and_crash_matches_uninterrupted(tmp_path):
  straight = tmp_path / "straight"
  training.train_and_evaluate(tiny_config(), straight)
  resumed = tmp_path / "resumed"
  training.train_and_evaluate(tiny_config(num_rounds=2), resumed)
  with (resumed / "metrics.jsonl").open("a") as f:  # a crash after logging round 3, before its checkpoint
    f.write(json.dumps({"round": 3, "bogus": True}) + "\n")
  training.train_and_evaluate(tiny_config(), resumed)
  assert _metrics(straight) == _metrics(resumed)
  assert [r["round"] for r in _metrics(resumed)] == [1, 2, 3, 4]
  _, params_a, round_a = checkpointing.load_run(straight)
  _, params_b, round_b = checkpointing.load_run(resumed)
  assert round_a == round_b == 4
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _main(*args, cwd):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  return subprocess.run([sys.executable, "-m", "ccfl_jax.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


def test_main_writes_metrics_summary_plot_and_checkpoints(tmp_path):
  result = _main(f"--config={REPO_ROOT / 'configs' / 'tiny.py'}", f"--config.results_dir={tmp_path}",
                 cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  run_dir = tmp_path / "tiny"
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert [r["round"] for r in records] == [1, 2]
  for key in ("local_loss", "test_loss", "accuracy", "precision", "sensitivity", "specificity",
              "auc", "epsilon", "round_seconds"):
    assert key in records[-1]
  assert records[0]["epsilon"] < records[1]["epsilon"]
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["rounds"] == 2 and len(summary["data"]) == 4 + 1
  assert "sensitivity" in (run_dir / "summary.md").read_text()
  assert (run_dir / "curves.png").stat().st_size > 1000
  assert (run_dir / "checkpoints" / "2").is_dir()
  assert "round 2/2" in result.stderr and "eps" in result.stderr


@pytest.mark.parametrize("override, field", [
    ("--config.privacy.clip_norm=-1", "config.privacy.clip_norm"),
    ("--config.hospitals_per_round=5", "config.hospitals_per_round"),
    ("--config.model.name=resnet9000", "config.model.name"),
    ("--config.privacy.noise_multipler=1", "noise_multiplier"),
])
def test_main_rejects_bad_config_in_one_line(tmp_path, override, field):
  result = _main(f"--config={REPO_ROOT / 'configs' / 'tiny.py'}", override, cwd=tmp_path)
  assert result.returncode == 2
  assert field in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("change, message", [
    (lambda c: setattr(c.privacy, "noise_multiplier", -0.1), "noise_multiplier.*sigma >= 0"),
    (lambda c: setattr(c, "hospitals_per_round", 4), "hospitals_per_round.*num_hospitals"),
    (lambda c: setattr(c.dataset, "name", "mnist"), "dataset.name.*phantom, dicom"),
    (lambda c: setattr(c.partition, "kind", "pathological"), "partition.kind.*iid, dirichlet"),
    (lambda c: setattr(c.engine, "hospital_axis", "pmap"), "engine.hospital_axis.*vmap"),
    (lambda c: c.privacy.__setitem__("clip", 1.0), "privacy.clip: unknown field.*clip_norm"),
    (lambda c: c.model.__setitem__("depth", 3), "config.model.*depth"),
    (lambda c: setattr(c.local_optimizer, "name", "adamz"), "local_optimizer.name.*optax"),
])
def test_validate_names_field_and_choices(change, message):
  config = tiny_config()
  change(config)
  with pytest.raises(configuration.ConfigError, match=message):
    configuration.validate(config)


@pytest.mark.parametrize("name", ["fed3", "fed9", "tiny"])
def test_shipped_configs_validate(name):
  from ml_collections import config_flags  # noqa: F401  (configs are plain modules)
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  configuration.validate(module.get_config())
