"""Issue 13, faults: a hospital whose update is NaN/Inf is rejected for that round (on the ledger,
with the reason) and training goes on; a round in which no update survives stops the run
with a one-line error, its last checkpoint and ledger intact, never NaN weights."""
import json

import jax
import numpy as np
import pytest

from ccfl_jax import inference, training
from ccfl_jax.federated import sampling
from ccfl_jax.ledger import audit
from tests.conftest import REPO_ROOT
from tests.test_training import _main, tiny_config

NON_FINITE = "non_finite_update"


def diverging(num_diverging: int, **overrides):
  """Hospitals 0 .. num_diverging - 1 submit inf x their update (the scale attack with an
  infinite factor): a deterministic stand-in for local training that diverged."""
  config = tiny_config(**overrides)
  config.attack.kind = "scale"
  config.attack.num_malicious = num_diverging
  config.attack.scale = float("inf")
  return config


def _records(run_dir):
  return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _votes(run_dir, round_index):
  """The vote entries of the round's first vote (all verifiers agree: validate checks it)."""
  _, ledger = audit.load_chain(run_dir)
  block = next(b for b in ledger.blocks if b.round == round_index)
  return next(t for t in block.transactions if t.kind == "vote").body["votes"]


def test_a_diverged_hospital_is_rejected_with_its_reason_and_training_goes_on(tmp_path):
  run_dir = tmp_path / "run"
  training.train_and_evaluate(diverging(1, num_rounds=2, hospitals_per_round=3), run_dir)
  records = _records(run_dir)
  assert [r["round"] for r in records] == [1, 2]
  for round_index, record in enumerate(records):
    sampled = record["sampled"]
    assert sorted(sampled) == [0, 1, 2] and 0 in record["rejected"]
    assert record["reasons"] == [NON_FINITE if h == 0 else "accepted" if h in record["accepted"]
                                 else "vote_score" for h in sampled]
    assert record["update_norms"][sampled.index(0)] is None  # NaN, written as null
    assert record["local_loss"] is not None  # the mean over the finite updates
    votes = _votes(run_dir, round_index)
    assert [v["reason"] for v in votes] == record["reasons"]
    assert [v["finite"] for v in votes] == [h != 0 for h in sampled]
  _, params, rounds = inference.load_run(run_dir)
  assert rounds == 2
  assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(params))
  report = audit.verify_run(run_dir)
  assert report.ok and report.closed and report.rounds == 2, report.summary()
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["votes"]["rejected_by_reason"][NON_FINITE] == 2
  assert summary["votes"]["non_finite_updates"] == {"0": [1, 2]}
  assert ("Non-finite (NaN/Inf) updates, never aggregated (local training diverged or the data "
          "hold NaN/Inf): hospital 0 in rounds 1, 2.") in (run_dir / "summary.md").read_text()


def _seed_whose_second_round_samples_only(hospitals, num_hospitals=3, per_round=2):
  """A seed whose round 1 samples a hospital outside `hospitals` and round 2 only those."""
  for seed in range(100):
    first, second = (set(sampling.sample_hospitals(seed, r, num_hospitals, per_round).tolist())
                     for r in (0, 1))
    if not first <= set(hospitals) and second == set(hospitals):
      return seed
  raise AssertionError("no such seed below 100")


def test_a_round_with_only_non_finite_updates_stops_with_the_checkpoint_intact(tmp_path):
  seed = _seed_whose_second_round_samples_only({0, 1})
  run_dir = tmp_path / "run"
  config = diverging(2, num_rounds=3, checkpoint_every=1, seed=seed)
  with pytest.raises(training.NoUpdateAccepted) as error:
    training.train_and_evaluate(config, run_dir)
  message = str(error.value)
  assert message == (
      "round 2: the update of every sampled hospital [0, 1] is non-finite (NaN/Inf): local "
      "training diverged or those hospitals' data hold NaN/Inf; the run stops, its last "
      "checkpoint (checkpoints/1, after round 1) and its ledger are intact; lower "
      "local_optimizer.learning_rate (or fix the data) and rerun with "
      "--config.resume_force=true to continue from there, or under a new --config.run_name")
  assert [r["round"] for r in _records(run_dir)] == [1]  # nothing of round 2 was written
  assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["1"]
  report = audit.verify_run(run_dir)
  assert report.ok and report.rounds == 1 and not report.closed, report.summary()
  _, params, rounds = inference.load_run(run_dir)
  assert rounds == 1
  assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(params))


def test_the_error_names_every_reason_when_not_all_are_non_finite():
  error = training.no_update_accepted(4, np.array([3, 1]), ["vote_score", NON_FINITE], None)
  assert str(error) == ("round 5: no update of hospitals [3, 1] was accepted (3 vote_score, 1 "
                        "non_finite_update); the run stops, no checkpoint was written yet and "
                        "its ledger is intact")


def test_main_turns_it_into_one_line_and_exit_2(tmp_path):
  result = _main(f"--config={REPO_ROOT / 'configs' / 'tiny.py'}", "--config.attack.kind=scale",
                 "--config.attack.num_malicious=4", "--config.attack.scale=inf",
                 f"--config.results_dir={tmp_path}", cwd=tmp_path)
  assert result.returncode == 2, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in result.stderr
  assert errors[0].startswith("error: round 1: the update of every sampled hospital [")
  assert "no checkpoint was written yet and its ledger is intact" in errors[0]
