"""A run SIGKILLed mid-round, while a checkpoint is written, or while a ledger record is
appended resumes, by rerunning the same command, to the uninterrupted run's parameters and
metrics, and its ledger verifies (ccfl_jax.failpoints names the three moments).

Bit-identical: the final parameters and every metric but `round_seconds` (wall time). The
ledger files themselves cannot equal the uninterrupted run's byte for byte, because each
round block carries the sha256 of its metrics line, which holds that wall time.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ccfl_jax import configuration, failpoints, inference, training
from ccfl_jax.ledger import audit
from tests.conftest import REPO_ROOT

ROUNDS = 3
OVERRIDES = dict(num_rounds=ROUNDS, checkpoint_every=1)
# Ledger records: 0 and 1 are the setup blocks, 2 + r - 1 the block of round r.
KILLS = [("round", 2), ("checkpoint_write", 2), ("ledger_append", 3)]


def tiny(results_dir):
  config = configuration.load_config_file(REPO_ROOT / "configs" / "tiny.py")
  for key, value in dict(OVERRIDES, results_dir=str(results_dir)).items():
    config[key] = value
  return config


def metrics(run_dir):
  return [{k: v for k, v in json.loads(line).items() if k != "round_seconds"}
          for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  results = tmp_path_factory.mktemp("uninterrupted")
  training.train_and_evaluate(tiny(results), results / "tiny")
  return results / "tiny"


@pytest.mark.parametrize("point, counter", KILLS)
def test_killed_run_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path, point, counter):
  assert point in failpoints.POINTS
  command = [sys.executable, "-m", "ccfl_jax.main", f"--config={REPO_ROOT / 'configs/tiny.py'}",
             f"--config.results_dir={tmp_path}"]
  command += [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  killed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **{failpoints.ENV_VAR: f"{point}:{counter}"}))
  assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: no cleanup ran
  run_dir = tmp_path / "tiny"
  assert len(metrics(run_dir)) < ROUNDS
  training.train_and_evaluate(tiny(tmp_path), run_dir)  # the same command, rerun
  assert metrics(run_dir) == metrics(uninterrupted)
  _, resumed, rounds = inference.load_run(run_dir)
  _, straight, _ = inference.load_run(uninterrupted)
  assert rounds == ROUNDS
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  report = audit.verify_run(run_dir)
  assert report.ok and report.rounds == ROUNDS and report.closed, report.summary()
