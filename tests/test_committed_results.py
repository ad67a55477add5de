"""The committed results say what their files say: the example run verifies with its anchors,
and the README's headline numbers are those of results/fed9."""
import json
import re

from ccfl_jax.ledger import audit
from tests.conftest import REPO_ROOT

RESULTS = REPO_ROOT / "results"


def test_the_committed_example_run_verifies_with_its_trust_anchors():
  keys = audit.read_trusted_keys(RESULTS / "example_tiny.trusted_keys.txt")
  head = (RESULTS / "example_tiny.head.txt").read_text().strip()
  report = audit.verify_run(RESULTS / "example_tiny", trusted_keys=keys, head=head)
  assert report.ok and report.closed and report.rounds == 2, report.summary()
  assert not report.not_established, report.summary()
  assert report.checkpoints_rehashed == 2


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
