"""The ledger under the local Laplace mechanism: each round's block records mechanism and
epsilon_round, append checks them, verify recomputes epsilon with the Laplace accountant and
refuses a chain that mixes mechanisms."""
import pytest

from ccfl_jax.ledger import audit, run_ledger, simulate, validate
from ccfl_jax.ledger import block as block_lib
from ccfl_jax.ledger import transactions as tx_lib

NUM_HOSPITALS, PER_ROUND, EPSILON_ROUND = 5, 3, 0.5


def _laplace_epsilon(run, r, epsilon_round=EPSILON_ROUND):
  """What the training loop records: the worst hospital's composition, this round included."""
  blocks = [b for b in run.ledger.blocks if b.round >= 0]
  sampled = [b.transactions[0].body["sampled"] for b in blocks]
  sampled.append([run.hospitals[h].node_id for h in r.sampled])
  per_round = [b.transactions[-1].body["epsilon_round"] for b in blocks] + [epsilon_round]
  return audit.laplace_accountant_epsilon(sampled, per_round, simulate.DELTA)


def _record(run, round_index, epsilon=None, epsilon_round=EPSILON_ROUND, **changes):
  r = simulate.synthetic_round(run, round_index, PER_ROUND)
  epsilon = _laplace_epsilon(run, r, epsilon_round) if epsilon is None else epsilon
  return simulate.record_synthetic_round(run, round_index, r, epsilon=epsilon, sigma=0.0,
                                         laplace_epsilon=epsilon_round, **changes)


@pytest.fixture
def run(tmp_path):
  run = run_ledger.open_run_ledger(tmp_path / "run", seed=0, num_hospitals=NUM_HOSPITALS,
                                   keys="derived")
  for r in range(3):
    run = _record(run, r, epsilon_round=EPSILON_ROUND if r < 2 else 0.25)
  return run


def test_laplace_rounds_record_their_epsilon_and_verify(run):
  body = run.ledger.blocks[-1].transactions[-1].body
  assert body["mechanism"] == "laplace_local" and body["epsilon_round"] == 0.25
  assert body["sigma"] == 0.0
  counts = {}
  for b in run.ledger.blocks[1:]:
    for h in b.transactions[0].body["sampled"]:
      counts[h] = counts.get(h, 0) + 1
  assert body["epsilon"] <= 0.5 + 0.5 + 0.25 and max(counts.values()) >= 2  # 3 of 5 sampled
  report = audit.verify_run(run.run_dir, min_difficulty=0)
  assert report.ok, report.summary()
  assert any("local Laplace accountant" in e for e in report.established), report.summary()
  assert "laplace_local eps_round 0.25" in audit.show(run.run_dir)


def test_verify_recomputes_the_laplace_epsilon(run):
  run = _record(run, 3, epsilon=100.0)  # never decreasing, so append accepts it
  report = audit.verify_run(run.run_dir, min_difficulty=0)
  assert not report.ok
  assert "round 3), global_model: epsilon 100 recorded, but the local Laplace accountant" in (
      report.failure)


def test_a_chain_mixing_mechanisms_fails_verify(run):
  r = simulate.synthetic_round(run, 3, PER_ROUND)
  run = simulate.record_synthetic_round(run, 3, r, epsilon=1e6)  # a gaussian_central round
  report = audit.verify_run(run.run_dir, min_difficulty=0)
  assert not report.ok and "no accountant composes the two" in report.failure, report.failure


def _resigned_global_model(run, body_changes, drop=()):
  records = simulate.round_records(simulate.synthetic_round(run, 3, PER_ROUND), epsilon=10.0,
                                   sigma=0.0, laplace_epsilon=EPSILON_ROUND)
  txs = run_ledger.round_transactions(run, 3, run_ledger.round_roles(run, 3), *records)
  body = {k: v for k, v in txs[-1].body.items() if k not in drop}
  body.update(body_changes)
  leader = run.hospitals[run_ledger.round_roles(run, 3).leader]
  txs[-1] = tx_lib.signed(leader, "global_model", body)
  return txs


@pytest.mark.parametrize("changes, drop, reason", [
    ({}, ("epsilon_round",), "optionally all of"),
    ({"mechanism": "laplace_global"}, (), "mechanism 'laplace_global'"),
    ({"epsilon_round": 0.0}, (), "epsilon_round 0.0: expected a finite epsilon > 0"),
    ({"sigma": 0.5}, (), "sigma 0.5 under laplace_local"),
])
def test_append_refuses_a_malformed_laplace_global_model(run, changes, drop, reason):
  txs = _resigned_global_model(run, changes, drop)
  block = block_lib.seal(len(run.ledger.blocks), run.ledger.head_hash, 3, txs[0].author, txs,
                         run.ledger.state.difficulty)
  with pytest.raises(validate.LedgerRefusal, match=reason):
    validate.append(run.ledger, block)


def test_gaussian_blocks_carry_no_mechanism_field(tmp_path):
  run = run_ledger.open_run_ledger(tmp_path / "g", seed=0, num_hospitals=NUM_HOSPITALS,
                                   keys="derived")
  run = simulate.record_synthetic_round(run, 0, simulate.synthetic_round(run, 0, PER_ROUND))
  body = run.ledger.blocks[-1].transactions[-1].body
  assert set(body) == set(tx_lib.FIELDS["global_model"])
  assert simulate.model_record(simulate.synthetic_round(run, 1, PER_ROUND),
                               1.0).laplace_epsilon is None
