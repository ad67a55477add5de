"""append refuses, and verify catches, every forged or misplaced block and transaction."""
import dataclasses

import numpy as np
import pytest

from ccfl_jax.ledger import audit
from ccfl_jax.ledger import block as block_lib
from ccfl_jax.ledger import identity
from ccfl_jax.ledger import run_ledger
from ccfl_jax.ledger import simulate
from ccfl_jax.ledger import store
from ccfl_jax.ledger import transactions as tx_lib
from ccfl_jax.ledger import validate

NUM_HOSPITALS, PER_ROUND = 5, 3


@pytest.fixture
def run(tmp_path):
  """A run folder with registrations and rounds 0 and 1 recorded (epsilon 1.0 after round 1)."""
  run = run_ledger.open_run_ledger(tmp_path / "run", seed=0, num_hospitals=NUM_HOSPITALS)
  for r in range(2):
    run = simulate.record_synthetic_round(run, r, simulate.synthetic_round(run, r, PER_ROUND),
                                          epsilon=0.5 * (r + 1))
  return run


def round_two(run, **changes):
  """The honest transactions of round 2, with record_round arguments replaced by `changes`."""
  records = simulate.round_records(simulate.synthetic_round(run, 2, PER_ROUND, poisoned=()),
                                   **{"epsilon": 1.5, **changes})
  return run_ledger.round_transactions(run, 2, run_ledger.round_roles(run, 2), *records)


def seal(run, transactions, round_index=2, **header):
  fields = dict(index=len(run.ledger.blocks), prev_hash=run.ledger.head_hash,
                round_index=round_index, leader=transactions[0].author,
                difficulty=run.ledger.state.difficulty)
  fields.update(header)
  return block_lib.seal(transactions=transactions, **fields)


def local_update_position(transactions):
  return next(i for i, t in enumerate(transactions) if t.kind == "local_update")


def sampled_ids(transactions):
  return transactions[0].body["sampled"]


def with_wrong_key(run):
  txs = round_two(run)
  i = local_update_position(txs)
  author = txs[i].author
  impostor = next(h for h in run.hospitals if h.node_id != author)
  txs[i] = dataclasses.replace(txs[i], signature=identity.sign(impostor, txs[i].signing_message()))
  return txs, "bad signature"


def from_unregistered(run):
  txs = round_two(run)
  outsider = identity.hospital_identity(999, 0)
  i = local_update_position(txs)
  txs[i] = tx_lib.local_update(outsider, 2, "ab" * 32, 0.1)
  return txs, "not a registered hospital"


def replayed_from_round_one(run):
  txs = round_two(run)
  old = next(t for t in run.ledger.blocks[-1].transactions if t.kind == "local_update")
  txs[local_update_position(txs)] = old
  return txs, "round 1 in the block of round 2"


def round_rewritten_under_old_signature(run):
  txs = round_two(run)
  old = next(t for t in run.ledger.blocks[-1].transactions if t.kind == "local_update")
  body = {**old.body, "round": 2}
  forged = tx_lib.Transaction(old.kind, old.author, tx_lib.canonical_json(body).decode(),
                              old.signature)
  txs[local_update_position(txs)] = forged
  return txs, "bad signature"


def from_hospital_not_sampled(run):
  txs = round_two(run)
  outsider = next(h for h in run.hospitals if h.node_id not in sampled_ids(txs))
  txs[local_update_position(txs)] = tx_lib.local_update(outsider, 2, "cd" * 32, 0.1)
  return txs, "not sampled"


def duplicated_update(run):
  txs = round_two(run)
  i = local_update_position(txs)
  return txs[:i + 1] + [txs[i]] + txs[i + 1:], "second local update"


def epsilon_decreasing(run):
  return round_two(run, epsilon=0.2), "epsilon decreased"


def consensus_overruled(run):
  synthetic = simulate.synthetic_round(run, 2, PER_ROUND)
  scores = np.array(synthetic.vote_scores)
  scores[0] += 5.0  # an update far outside median + k * MAD ...
  mae = np.array(synthetic.mae_matrix)
  mae[0] += 5.0
  txs = round_two(run, vote_scores=scores, mae_matrix=mae, accepted=np.ones(PER_ROUND, bool))
  return txs, "rejects"  # ... that the leader and verifiers nevertheless accept


def scores_not_from_maes(run):
  synthetic = simulate.synthetic_round(run, 2, PER_ROUND)
  return round_two(run, vote_scores=np.array(synthetic.vote_scores) * 0.5), "eq. 15"


def global_model_by_non_leader(run):
  txs = round_two(run)
  body = txs[-1].body
  other = next(h for h in run.hospitals if h.node_id != txs[-1].author)
  txs[-1] = tx_lib.signed(other, "global_model", body)
  return txs, "leader"


def verifier_reports_other_norms(run):
  txs = round_two(run)
  i = next(i for i, t in enumerate(txs) if t.kind == "vote")
  body = dict(txs[i].body, votes=[dict(v) for v in txs[i].body["votes"]])
  body["votes"][0]["norm"] = 0.5 * (body["votes"][0]["norm"] or 1.0)  # signed by its author
  verifier = next(h for h in run.hospitals if h.node_id == txs[i].author)
  txs[i] = tx_lib.signed(verifier, "vote", body)
  return txs, "verifiers disagree on the update norms"


def with_one_rejected(run):
  """Round 2's honest transactions with its first sampled hospital poisoned (so rejected by
  eq. 15), and that hospital's position."""
  sampled = simulate.synthetic_round(run, 2, PER_ROUND).sampled
  records = simulate.round_records(
      simulate.synthetic_round(run, 2, PER_ROUND, poisoned=(sampled[0],)), epsilon=1.5)
  txs = run_ledger.round_transactions(run, 2, run_ledger.round_roles(run, 2), *records)
  votes = [t for t in txs if t.kind == "vote"]
  assert [v["reason"] for v in votes[0].body["votes"]] == ["vote_score", "accepted", "accepted"]
  return txs


def with_vote_entries(run, txs, change, verifiers=None):
  """txs with `change(entry)` applied to entry 0 of each vote (or of the first `verifiers`),
  every vote re-signed by its own verifier."""
  votes = [i for i, t in enumerate(txs) if t.kind == "vote"][:verifiers]
  for i in votes:
    body = dict(txs[i].body, votes=[dict(v) for v in txs[i].body["votes"]])
    change(body["votes"][0])
    verifier = next(h for h in run.hospitals if h.node_id == txs[i].author)
    txs[i] = tx_lib.signed(verifier, "vote", body)
  return txs


def rejection_reason_forged(run):
  txs = with_vote_entries(run, with_one_rejected(run), lambda v: v.update(reason="direction"))
  return txs, "the reason 'direction'; the recorded values give 'vote_score'"


def rejected_as_non_finite_but_scored(run):
  def claim_non_finite(v):
    v.update(finite=False, reason="non_finite_update")
  txs = with_vote_entries(run, with_one_rejected(run), claim_non_finite)
  return txs, "has an eq. 15 score"


def accepted_with_a_rejection_reason(run):
  txs = with_vote_entries(run, round_two(run), lambda v: v.update(reason="vote_score"), 1)
  return txs, "with reason 'vote_score'"


def vote_entry_without_its_reason(run):
  txs = with_vote_entries(run, round_two(run), lambda v: v.pop("reason"), 1)
  return txs, "vote entry fields"


FORGERIES = [with_wrong_key, from_unregistered, replayed_from_round_one,
             round_rewritten_under_old_signature, from_hospital_not_sampled, duplicated_update,
             epsilon_decreasing, consensus_overruled, scores_not_from_maes,
             global_model_by_non_leader, verifier_reports_other_norms, rejection_reason_forged,
             rejected_as_non_finite_but_scored, accepted_with_a_rejection_reason,
             vote_entry_without_its_reason]


def test_the_honest_next_round_is_accepted(run):
  ledger = validate.append(run.ledger, seal(run, round_two(run)))
  assert ledger.state.last_round == 2 and ledger.state.epsilon == 1.5
  assert run.ledger.state.last_round == 1  # append returned a new value


@pytest.mark.parametrize("forge", FORGERIES, ids=lambda f: f.__name__)
def test_append_refuses_and_verify_names_the_forgery(run, forge):
  transactions, reason = forge(run)
  block = seal(run, transactions)
  with pytest.raises(validate.LedgerRefusal, match=reason) as refusal:
    validate.append(run.ledger, block)
  assert refusal.value.block_index == len(run.ledger.blocks)
  # A writer with access to the folder persists it anyway: verify must name it.
  store.write_record(store.ledger_dir(run.run_dir), run.next_seq, run.last_record_sha256, block)
  report = audit.verify_run(run.run_dir)
  assert not report.ok
  assert f"block {block.index} (round 2)" in report.failure and reason in report.failure
  assert f"ledger/{store.record_name(run.next_seq)}" in report.failure


def test_reordered_or_deleted_blocks_are_refused(run):
  blocks = run.ledger.blocks
  difficulty = run.ledger.state.difficulty
  assert [b.round for b in blocks] == [-1, 0, 1]
  with pytest.raises(validate.LedgerRefusal, match="block 2"):
    validate.replay((blocks[0], blocks[2], blocks[1]), difficulty)
  with pytest.raises(validate.LedgerRefusal, match="missing or reordered"):
    validate.replay((blocks[0], blocks[2]), difficulty)


def test_proof_of_work_and_header_are_checked(run):
  transactions = round_two(run)
  cheap = seal(run, transactions, difficulty=0)
  with pytest.raises(validate.LedgerRefusal, match="difficulty 0"):
    validate.append(run.ledger, cheap)
  honest = seal(run, transactions)
  with pytest.raises(validate.LedgerRefusal, match="hash does not match"):
    validate.append(run.ledger, dataclasses.replace(honest, nonce=honest.nonce + 1))
  # The first nonce after the mined one whose (correctly computed) hash misses the difficulty:
  # a block whose hash matches its header but whose work was not done.
  nonce = next(n for n in range(honest.nonce + 1, honest.nonce + 10_000) if not
               block_lib.meets_difficulty(
                   block_lib.header_hash({**honest.header(), "nonce": n}), honest.difficulty))
  unmined_hash = block_lib.header_hash({**honest.header(), "nonce": nonce})
  with pytest.raises(validate.LedgerRefusal, match="proof of work"):
    validate.append(run.ledger, dataclasses.replace(honest, nonce=nonce, hash=unmined_hash))
  assert block_lib.meets_difficulty(honest.hash, 8) and honest.hash.startswith("00")


def test_no_registration_after_training_started(run):
  late = [tx_lib.register_hospital(identity.hospital_identity(999, 0))]
  with pytest.raises(validate.LedgerRefusal, match="setup block after training"):
    validate.append(run.ledger, seal(run, late, round_index=block_lib.SETUP_ROUND))


def test_same_seed_and_inputs_give_identical_blocks(tmp_path):
  """Only with keys derived from the seed (keys="derived"): random keys differ per run."""
  def derived_run(run_dir):
    run = run_ledger.open_run_ledger(run_dir, seed=0, num_hospitals=NUM_HOSPITALS,
                                     keys="derived")
    for r in range(2):
      run = simulate.record_synthetic_round(
          run, r, simulate.synthetic_round(run, r, PER_ROUND), epsilon=0.5 * (r + 1))
    return run
  run, again = derived_run(tmp_path / "run"), derived_run(tmp_path / "again")
  assert [b.hash for b in again.ledger.blocks] == [b.hash for b in run.ledger.blocks]
  fresh = run_ledger.open_run_ledger(tmp_path / "fresh", seed=0, num_hospitals=NUM_HOSPITALS)
  assert fresh.ids != run.ids  # the default: random keys, whatever the seed


def test_merkle_root_depends_on_order_and_every_transaction(run):
  txs = list(run.ledger.blocks[-1].transactions)
  root = block_lib.merkle_root(txs)
  assert block_lib.merkle_root(txs[::-1]) != root
  assert block_lib.merkle_root(txs[:-1]) != root
  assert block_lib.merkle_root(txs + txs[-1:]) != root
