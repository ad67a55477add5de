"""The committed results say what their files say: the example run and the fed9 run verify
with their anchors, and the README's headline numbers are those of results/fed9."""
import json
import re

import pytest

from ccfl_jax.ledger import audit
from tests.conftest import REPO_ROOT

RESULTS = REPO_ROOT / "results"


@pytest.mark.parametrize("run, rounds, checkpoints", [("example_tiny", 2, 2), ("fed9", 40, 1)])
def test_a_committed_run_verifies_with_its_trust_anchors(run, rounds, checkpoints):
  keys = audit.read_trusted_keys(RESULTS / f"{run}.trusted_keys.txt")
  head = (RESULTS / f"{run}.head.txt").read_text().strip()
  report = audit.verify_run(RESULTS / run, trusted_keys=keys, head=head)
  assert report.ok and report.closed and report.rounds == rounds, report.summary()
  assert not report.not_established, report.summary()
  assert report.checkpoints_rehashed == checkpoints


def test_readme_fed9_numbers_are_those_of_its_summary():
  summary = json.loads((RESULTS / "fed9" / "summary.json").read_text())
  readme = (REPO_ROOT / "README.md").read_text()
  line = re.search(r"`configs/fed9.py` \(`results/fed9/summary.md`\):(.*?)on a shared", readme,
                   flags=re.S).group(1)
  final = summary["final"]
  for name in ("sensitivity", "specificity", "auc"):
    assert f"{name.upper() if name == 'auc' else name} {final[name]:.3f}" in line, name
  assert f"(ε, δ) = ({summary['privacy']['epsilon']:.1e}".replace("e+0", "e") in line
  assert f"{summary['seconds_this_process']:.0f} s" in line


def test_readme_install_numbers_are_those_of_results_install():
  install = json.loads((RESULTS / "install.json").read_text())
  readme = " ".join((REPO_ROOT / "README.md").read_text().split())
  assert (f"took at most {install['max_seconds']} s and {install['venv_mib']} MiB "
          f"({install['packages']} packages) in `results/install.md`") in readme
