"""tools/report.py: REPORT.md from results files alone; every number in it read from them."""
import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

TOOLS = REPO_ROOT / "tools"
COMMITTED = ("fed9/summary.md", "fed9/summary.json", "fed9/curves.png", "table3.md",
             "table3.json", "ucsd_pretrained.md", "ucsd_pretrained.json", "privacy_sweep.md",
             "robustness.md", "robustness.json", "robustness.png")


def _tool(name):
  sys.path.insert(0, str(TOOLS))
  try:
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
  finally:
    sys.path.remove(str(TOOLS))


def _curve_records(experiment, accuracy_by_variant):
  return [dict(variant=label, seed=seed, wall_seconds=10.0 + seed,
               final=dict(accuracy=accuracy[-1], auc=0.9, sensitivity=0.8, specificity=0.7),
               epsilon=None, accuracy=accuracy, loss=[1.0 / r for r in range(1, 7)],
               test_loss=[1.0] * 6)
          for label, accuracy in accuracy_by_variant.items() for seed in (0, 1)]


@pytest.fixture
def results(tmp_path):
  """The committed results the report quotes, plus small fixture curves for the two
  experiments of tools/paper_experiments.py."""
  for name in COMMITTED:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "results" / name, tmp_path / name)
  experiments = _tool("paper_experiments")
  for name in ("providers", "fed_vs_central"):
    variants = experiments.EXPERIMENTS[name][2]
    records = _curve_records(name, {v.label: [0.5, 0.6, 0.7, 0.8, 0.9, 0.95 - 0.1 * i]
                                    for i, v in enumerate(variants)})
    (tmp_path / f"{name}.json").write_text(json.dumps(records))
    (tmp_path / f"{name}.md").write_text(experiments.markdown(name, records, [0, 1]))
    experiments.plot(name, records, tmp_path / f"{name}.png")
  return tmp_path


def test_report_numbers_come_from_the_results_files(results):
  report = _tool("report").report(results)
  summary = json.loads((results / "fed9/summary.json").read_text())
  assert f"test accuracy {summary['final']['accuracy']:.3f}" in report
  assert f"ε = {summary['privacy']['epsilon']:.4g}" in report
  # fixture curves: last-5 means (3.0 + 0.95 - 0.1 i) / 5 = 0.790 (first) to 0.730 (fourth)
  assert "ranges from 0.730 (federated Dirichlet 0.1) to 0.790 (centralized" in report
  assert "ranges from 0.730 (9 hospitals) to 0.790 (3 hospitals), 2 seed(s) each" in report
  ucsd = json.loads((results / "ucsd_pretrained.json").read_text())["runs"]
  fed9 = [r["slice"]["auc"] for r in ucsd if r["recipe"] == "fed9"]
  assert f"slice AUC {sum(fed9) / len(fed9):.3f} over {len(fed9)} seeds" in report
  for section in ("Table III", "Federated vs centralized", "Number of providers",
                  "Privacy-utility", "Robustness"):
    assert f"## {section}" in report
  assert "![Number of providers (Figs. 10 and 11)](providers.png)" in report
  assert "python tools/robustness.py" in report  # the command its results file quotes


@pytest.mark.parametrize("missing", ["providers.json", "robustness.png", "fed9/summary.json"])
def test_a_missing_results_file_is_one_line_naming_it(results, missing):
  (results / missing).unlink()
  done = subprocess.run([sys.executable, str(TOOLS / "report.py"), f"--results={results}"],
                        capture_output=True, text=True, cwd=REPO_ROOT)
  assert done.returncode == 1
  assert done.stderr.strip().splitlines() == [done.stderr.strip()]
  assert missing in done.stderr and "Traceback" not in done.stderr
  assert not (results / "REPORT.md").exists()
