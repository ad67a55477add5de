"""tools/paper_experiments.py: its variants are valid configs; a tiny providers sweep end to end."""
import json
import subprocess
import sys

import pytest

from ccfl_jax import configuration
from tests.conftest import REPO_ROOT
from tests.tools.test_report import _tool


@pytest.mark.parametrize("experiment", ["providers", "fed_vs_central", "privacy_at_scale",
                                        "precision"])
def test_every_variant_is_a_valid_config_that_changes_only_what_it_says(experiment):
  tool = _tool("paper_experiments")
  config_path, _, variants = tool.EXPERIMENTS[experiment]
  base = configuration.load_config_file(REPO_ROOT / config_path)
  for variant in variants:
    config = tool.configured(config_path, variant, 1, 0, "x")
    configuration.validate(config)
    assert config.seed == 1 and config.num_rounds == base.num_rounds
    assert config.dataset.to_dict() == base.dataset.to_dict()  # the same data for every variant
  labels = [v.label for v in variants]
  assert len(set(labels)) == len(labels)


def test_a_tiny_providers_sweep_writes_its_table_plot_and_curves(tmp_path):
  done = subprocess.run(
      [sys.executable, str(REPO_ROOT / "tools" / "paper_experiments.py"), "--experiment=providers",
       "--seeds=0", "--num_rounds=2", "--config=configs/tiny.py",
       f"--runs_dir={tmp_path / 'runs'}", f"--out_dir={tmp_path / 'out'}"],
      capture_output=True, text=True, cwd=REPO_ROOT,
      env={**__import__("os").environ, "CCFL_KEYSTORE": str(tmp_path / "keys")})
  assert done.returncode == 0, done.stderr[-2000:]
  records = json.loads((tmp_path / "out" / "providers.json").read_text())
  assert [r["variant"] for r in records] == ["3 hospitals", "5 hospitals", "7 hospitals",
                                             "9 hospitals"]
  assert all(len(r["accuracy"]) == len(r["loss"]) == len(r["round_seconds"]) == 2
             for r in records)
  table = (tmp_path / "out" / "providers.md").read_text()
  assert "--num_rounds=2 --config=configs/tiny.py" in table
  for r in records:
    assert f"| {r['variant']} | 1 | {r['final']['accuracy']:.3f} |" in table
    assert table.split(f"| {r['variant']} |")[1].splitlines()[0].endswith(
        f" | {r['round_seconds'][1]:.3f} |")  # the median of the rounds after the first
  assert (tmp_path / "out" / "providers.png").stat().st_size > 10_000
  rerun = subprocess.run(  # finished runs are read back, not retrained
      [sys.executable, str(REPO_ROOT / "tools" / "paper_experiments.py"), "--experiment=providers",
       "--seeds=0", "--num_rounds=2", "--config=configs/tiny.py", "--report_only",
       f"--runs_dir={tmp_path / 'runs'}", f"--out_dir={tmp_path / 'out'}"],
      capture_output=True, text=True, cwd=REPO_ROOT)
  assert rerun.returncode == 0 and json.loads((tmp_path / "out" / "providers.json").read_text()) == records


def test_privacy_at_scale_compares_each_sigma_with_the_non_private_run():
  tool = _tool("paper_experiments")
  curve = lambda last: [0.5] * 10 + [last] * tool.LAST_ROUNDS
  record = lambda label, seed, last, eps: dict(
      variant=label, seed=seed, wall_seconds=10.0, epsilon=eps, accuracy=curve(last),
      loss=[1.0] * 15, final=dict(accuracy=last, auc=0.9, sensitivity=0.8, specificity=0.7))
  records = [record("non-private (σ 0)", 0, 0.90, None), record("non-private (σ 0)", 1, 0.94, None),
             record("σ 3", 0, 0.85, 8.94), record("σ 3", 1, 0.87, 8.94)]
  table = tool.markdown("privacy_at_scale", records, [0, 1])
  assert "ε (δ 1e-06)" in table  # the config's delta, not fed9's
  assert "against non-private (σ 0), 0.920:" in table
  assert "- σ 3: 0.860, a gap of 6.0 points (n = 2 seeds; ε 8.94)" in table
  assert "σ 1" not in table.split("Accuracy (mean")[1]  # no runs, no line
