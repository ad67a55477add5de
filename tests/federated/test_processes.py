"""Several JAX processes, one mesh (federated/processes.py): 2 processes x 4 CPU devices on
localhost give the run of one process with 8 devices, process 0 alone writes the run folder,
and a multi-process run resumes from its checkpoint."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from ccfl_jax import inference
from ccfl_jax.federated import processes
from ccfl_jax.ledger import audit
from tests.conftest import REPO_ROOT

TIMEOUT_S = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _command(results_dir, num_rounds, *extra):
  return [sys.executable, "-m", "ccfl_jax.main", "--config=configs/tiny.py",
          f"--config.results_dir={results_dir}", f"--config.num_rounds={num_rounds}",
          "--config.checkpoint_every=1", *extra]


def _env(devices: int):
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              JAX_PLATFORMS="cpu")


def _run_single(results_dir, num_rounds):
  subprocess.run(_command(results_dir, num_rounds), cwd=REPO_ROOT, env=_env(8), check=True,
                 capture_output=True, timeout=TIMEOUT_S)


def _run_two_processes(results_dirs, num_rounds):
  """Process i writes (if it writes at all) under results_dirs[i]."""
  address = f"--config.distributed.coordinator_address=localhost:{_free_port()}"
  launched = [subprocess.Popen(
      _command(results_dirs[i], num_rounds, "--config.distributed.num_processes=2",
               f"--config.distributed.process_id={i}", address),
      cwd=REPO_ROOT, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in launched]
  for p, output in zip(launched, outputs):
    assert p.returncode == 0, output[-3000:]
  return outputs


def _metrics(run_dir):
  return [{k: v for k, v in json.loads(line).items() if k != "round_seconds"}
          for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The single-process run of 3 rounds; the 2-process run stopped after 2, then resumed."""
  root = tmp_path_factory.mktemp("processes")
  _run_single(root / "single", 3)
  first = _run_two_processes([root / "multi", root / "multi_1"], 2)
  resumed = _run_two_processes([root / "multi", root / "multi_1"], 3)
  return root, first, resumed


def test_two_processes_give_the_single_process_run_and_resume(runs):
  root, _, resumed = runs
  single, multi = root / "single" / "tiny", root / "multi" / "tiny"
  assert "resuming" in resumed[0]
  assert _metrics(multi) == _metrics(single)
  _, params_single, rounds_single = inference.load_run(single)
  _, params_multi, rounds_multi = inference.load_run(multi)
  assert rounds_single == rounds_multi == 3
  # Same shards, same collectives (exactly equal on this CPU; allclose leaves room for
  # another reduction order across hosts).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               params_single, params_multi)
  environment = json.loads((multi / "summary.json").read_text())["environment"]
  assert (environment["processes"], environment["device_count"]) == (2, 8)
  report = audit.verify_run(multi)
  assert report.ok and report.rounds == 3, report.summary()


def test_only_process_zero_writes_and_prints(runs):
  root, first, resumed = runs
  assert not (root / "multi_1").exists()
  assert "round 2/2" in first[0] and "round 3/3" in resumed[0] and "results in" in resumed[0]
  for output in (first[1], resumed[1]):
    assert "round 1/" not in output and "results in" not in output and "resuming" not in output


def test_one_process_is_the_identity():
  tree = {"a": np.arange(3), "b": (np.float32(2.0),)}
  assert processes.from_primary(tree) is tree
  assert processes.local_copy(tree) is tree
  assert processes.is_primary()
  np.testing.assert_array_equal(processes.to_host(tree)["a"], tree["a"])
