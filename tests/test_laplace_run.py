"""End to end under privacy.mechanism = laplace_local (configs/tiny_laplace.py): the metrics'
epsilon against a hand computation, the outputs (V_c and U_s too), the ledger verifying, a
resume equal to a straight run, and the refusals in one line naming the field."""
import json

import pytest

from ccfl_jax import configuration, recorder, training
from ccfl_jax.ledger import audit
from tests.conftest import REPO_ROOT

EPSILON_ROUND = 50.0  # configs/tiny_laplace.py


def _config(num_rounds=2, **privacy):
  c = configuration.load_config_file(REPO_ROOT / "configs" / "tiny_laplace.py")
  c.num_rounds = num_rounds
  for key, value in privacy.items():
    c.privacy[key] = value
  return c


def _metrics(run_dir):
  return [{k: v for k, v in json.loads(line).items() if k != "round_seconds"}
          for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("laplace") / "straight"
  summary = training.train_and_evaluate(_config(), run_dir)
  return run_dir, summary


def test_epsilon_is_each_hospitals_rounds_times_epsilon_round(straight):
  run_dir, summary = straight
  records = _metrics(run_dir)
  counts = {}
  for r in records:
    for h in r["sampled"]:
      counts[h] = counts.get(h, 0) + 1
    # Basic composition, the worst hospital so far: 50 x its rounds (advanced composition at
    # eps_t = 50 is astronomically larger: e^50 terms), pure DP.
    assert r["epsilon"] == EPSILON_ROUND * max(counts.values())
    assert r["epsilon_basic"] == r["epsilon"] and r["epsilon_advanced"] > 1e20
    assert r["epsilon_delta"] == 0.0 and r["epsilon_composition"] == "basic"
    assert r["hospital_rounds"] == max(counts.values())
    assert r["mechanism"] == "laplace_local" and r["laplace_epsilon"] == EPSILON_ROUND
    assert r["noise_multiplier"] == 0.0 and r["delta"] == 1e-5
    assert r["v_c"] > 0 and r["u_s"] > 0
  privacy = summary["privacy"]
  assert privacy["mechanism"] == "laplace_local" and privacy["epsilon"] == records[-1]["epsilon"]
  assert privacy["delta"] == 0.0 and privacy["laplace_scale"] == 2 * 2.0 / EPSILON_ROUND
  assert summary["aggregation"]["noise_std_on_update"] == pytest.approx(
      2 ** 0.5 * 0.08 / 2)  # sqrt(2) b / m_t


def test_outputs_state_the_local_guarantee_and_plot_the_update_statistics(straight):
  run_dir, _ = straight
  markdown = (run_dir / "summary.md").read_text()
  assert "Local DP (laplace_local, eqs. 12-13)" in markdown
  assert "pure, δ = 0" in markdown and "no trusted aggregator" in markdown
  assert "approximate DP (δ > 0)" in markdown  # how the central Gaussian guarantee differs
  assert "update_stats.png" in markdown
  assert (run_dir / "update_stats.png").stat().st_size > 1000
  header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
  assert {"v_c", "u_s", "epsilon", "laplace_epsilon", "epsilon_delta"} <= set(header)


def test_the_ledger_verifies_and_recomputes_the_laplace_epsilon(straight):
  run_dir, _ = straight
  report = audit.verify_run(run_dir)
  assert report.ok, report.summary()
  assert "recomputed by the local Laplace accountant" in report.summary()
  assert "update_stats.png" in report.summary()  # covered by the closing block
  last = [b for b in audit.load_chain(run_dir)[1].blocks if b.round >= 0][-1]
  body = last.transactions[-1].body
  assert body["mechanism"] == "laplace_local" and body["epsilon_round"] == EPSILON_ROUND
  assert body["epsilon"] == _metrics(run_dir)[-1]["epsilon"]


def test_resume_equals_straight_and_cannot_switch_mechanism(straight, tmp_path):
  run_dir, _ = straight
  resumed = tmp_path / "resumed"
  training.train_and_evaluate(_config(num_rounds=1), resumed)
  training.train_and_evaluate(_config(num_rounds=2), resumed)
  assert _metrics(resumed) == _metrics(run_dir)
  assert audit.verify_run(resumed).ok
  gaussian = _config(num_rounds=3, mechanism="gaussian_central", noise_multiplier=0.1)
  gaussian.resume_force = True
  with pytest.raises(recorder.IncompatibleRun, match=r"another privacy mechanism \(privacy."
                     r"mechanism: 'laplace_local' -> 'gaussian_central'\), which not even"):
    training.train_and_evaluate(gaussian, resumed)


@pytest.mark.parametrize("change, message", [
    (lambda c: setattr(c.privacy, "mechanism", "laplace"),
     r"config.privacy.mechanism = 'laplace': expected one of gaussian_central, laplace_local"),
    (lambda c: setattr(c.privacy, "noise_multiplier", 0.1),
     r"config.privacy.noise_multiplier = 0.1: expected 0 under privacy.mechanism=laplace_local"),
    (lambda c: setattr(c.privacy, "laplace_epsilon", 0.0),
     r"config.privacy.laplace_epsilon = 0.0: expected a finite per-round epsilon > 0"),
    (lambda c: setattr(c.privacy, "laplace_epsilon", float("inf")),
     r"config.privacy.laplace_epsilon = inf"),
    (lambda c: setattr(c.ledger.consensus, "max_norm_ratio", 3.0),
     r"config.ledger.consensus.max_norm_ratio = 3.0: expected 0 under privacy.mechanism"),
    (lambda c: (setattr(c.aggregation, "rule", "norm_bound"),
                setattr(c.aggregation, "norm_bound", 1.0)),
     r"config.aggregation.rule = 'norm_bound': expected a rule other than norm_bound"),
    (lambda c: (setattr(c.attack, "kind", "alie"), setattr(c.attack, "num_malicious", 1)),
     r"config.attack.kind = 'alie': expected an attack outside alie, ipm"),
])
def test_what_cannot_go_with_laplace_local_is_refused_in_one_line(change, message):
  config = _config()
  change(config)
  with pytest.raises(configuration.ConfigError, match=message) as error:
    configuration.validate(config)
  assert "\n" not in str(error.value)


def test_what_goes_with_laplace_local_validates():
  for rule in ("mean", "median", "trimmed_mean", "krum", "multi_krum"):
    config = _config()
    config.aggregation.rule = rule
    config.ledger.consensus.direction_k = 2.0
    configuration.validate(config)
  config = _config()
  config.ledger.enabled = False
  config.ledger.consensus.max_norm_ratio = 3.0  # no ledger, no vote: nothing published
  configuration.validate(config)
