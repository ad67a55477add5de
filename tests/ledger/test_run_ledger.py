"""The training loop's API: open, register, record rounds, and resume after a crash."""
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ccfl_jax.ledger import audit
from ccfl_jax.ledger import consensus
from ccfl_jax.ledger import run_ledger
from ccfl_jax.ledger import simulate
from ccfl_jax.ledger import store
from ccfl_jax.ledger import validate

H, PER_ROUND = 4, 3


def open_run(run_dir, seed=0, **options):
  return run_ledger.open_run_ledger(run_dir, seed=seed, num_hospitals=H, **options)


def record(run, round_index, checkpoint_dir=None, **options):
  synthetic = simulate.synthetic_round(run, round_index, PER_ROUND, **options)
  return simulate.record_synthetic_round(run, round_index, synthetic,
                                         checkpoint_dir=checkpoint_dir)


def manager_of(run_dir):
  return ocp.CheckpointManager(run_dir / "checkpoints",
                               options=ocp.CheckpointManagerOptions(max_to_keep=3, create=True))


def save(manager, step):
  manager.save(step, args=ocp.args.StandardSave({"w": np.full(4, step, np.float32)}))
  manager.wait_until_finished()
  return manager.directory / str(step)


def record_count(run_dir):
  return len(store.read_records(store.ledger_dir(run_dir)))


def test_open_registers_once_and_reopens_the_same_run(tmp_path):
  run = open_run(tmp_path, keys="derived")
  assert [t.kind for t in run.ledger.blocks[0].transactions] == ["register_hospital"] * H + [
      "open_run"]
  again = open_run(tmp_path, keys="derived")
  assert again.ledger.blocks == run.ledger.blocks and record_count(tmp_path) == 1
  with pytest.raises(ValueError, match="other hospitals"):
    open_run(tmp_path, seed=1, keys="derived")
  with pytest.raises(ValueError, match="key_source=derived, not random"):
    open_run(tmp_path)


def test_register_data_is_idempotent_and_closed_once_training_starts(tmp_path):
  run = open_run(tmp_path)
  entries = [run_ledger.DataRegistration(h, "ct_slices", 5, 40, "aa" * 32) for h in range(H)]
  run = run_ledger.register_data(run, entries)
  assert run_ledger.register_data(run, entries) is run
  run = record(run, 0)
  assert run_ledger.register_data(open_run(tmp_path), entries).next_seq == run.next_seq
  changed = [run_ledger.DataRegistration(0, "ct_slices", 6, 40, "bb" * 32)]
  with pytest.raises(validate.LedgerRefusal, match="setup block after training"):
    run_ledger.register_data(run, changed)


def test_round_roles_match_the_recorded_block(tmp_path):
  run = open_run(tmp_path, num_verifiers=2)
  roles = run_ledger.round_roles(run, 0)
  run = record(run, 0)
  start = run.ledger.blocks[-1].transactions[0]
  assert start.author == run.ids[roles.leader]
  assert start.body["verifiers"] == [run.ids[v] for v in roles.verifiers]


def test_a_refused_round_is_never_persisted(tmp_path):
  run = record(open_run(tmp_path), 0)
  with pytest.raises(validate.LedgerRefusal, match="round 2 follows round 0"):
    record(run, 2)
  with pytest.raises(FileNotFoundError):
    record(run, 1, checkpoint_dir=tmp_path / "checkpoints" / "1")  # never written
  # The vote ran with another rule than the ledger was opened with.
  strict = open_run(tmp_path, consensus=consensus.ConsensusRule(rule="absolute",
                                                                absolute_threshold=0.01))
  decided_by_default_rule = simulate.synthetic_round(run, 1, PER_ROUND)
  with pytest.raises(validate.LedgerRefusal, match="consensus rule absolute"):
    simulate.record_synthetic_round(strict, 1, decided_by_default_rule)
  assert record_count(tmp_path) == 2 and run_ledger.last_recorded_round(open_run(tmp_path)) == 0


def test_resume_after_a_crash_between_checkpoint_and_block(tmp_path):
  run_dir = tmp_path / "run"
  run, manager = open_run(run_dir), manager_of(run_dir)
  for r in range(4):  # checkpoint every 2 rounds
    run = record(run, r, save(manager, r) if r % 2 == 0 else None)
  save(manager, 4)  # ... and the process dies before round 4's block is written
  manager.close()
  assert audit.verify_run(run_dir).warnings  # checkpoint 4 is vouched for by no block

  resumed = open_run(run_dir)
  assert run_ledger.last_recorded_round(resumed) == 3
  plan = run_ledger.plan_resume(resumed, run_dir / "checkpoints")
  assert plan == run_ledger.ResumePlan(restore_step=2, restore_round=2, unrecorded_steps=(4,))
  manager = manager_of(run_dir)
  for step in plan.unrecorded_steps:
    manager.delete(step)
  resumed = run_ledger.rollback_to_round(resumed, plan.restore_round)
  assert run_ledger.last_recorded_round(resumed) == 2
  assert run_ledger.rollback_to_round(resumed, 2) is resumed  # nothing more to drop
  for r in (3, 4):
    resumed = record(resumed, r, save(manager, r) if r % 2 == 0 else None)
  manager.close()
  report = audit.verify_run(run_dir)
  assert report.ok and report.rounds == 5 and report.rolled_back_blocks == 1, report
  assert report.warnings == ()
  assert run_ledger.last_recorded_round(open_run(run_dir)) == 4


def test_resume_with_no_checkpoint_drops_every_round(tmp_path):
  run = record(record(open_run(tmp_path), 0), 1)
  plan = run_ledger.plan_resume(run, tmp_path / "checkpoints")
  assert plan == run_ledger.ResumePlan(None, -1, ())
  run = run_ledger.rollback_to_round(run, plan.restore_round)
  assert run_ledger.last_recorded_round(run) == -1 and len(run.ledger.blocks) == 1
  assert run_ledger.last_recorded_round(record(run, 0)) == 0


def test_resume_refuses_a_tampered_checkpoint(tmp_path):
  run, manager = open_run(tmp_path), manager_of(tmp_path)
  run = record(run, 0, save(manager, 0))
  manager.close()
  victim = next(p for p in (tmp_path / "checkpoints" / "0").rglob("*") if p.is_file())
  victim.write_bytes(victim.read_bytes() + b"x")
  with pytest.raises(ValueError, match="does not match"):
    run_ledger.plan_resume(run, tmp_path / "checkpoints")


def test_resume_refuses_when_the_newest_recorded_checkpoint_is_gone(tmp_path):
  run, manager = open_run(tmp_path), manager_of(tmp_path)
  for r in range(3):
    run = record(run, r, save(manager, r))
  manager.delete(0)  # an older one, as orbax's rotation deletes it: still resumable
  assert run_ledger.plan_resume(run, tmp_path / "checkpoints").restore_step == 2
  manager.delete(2)  # the newest a block records: deleted by hand, never by a crash
  manager.close()
  with pytest.raises(run_ledger.ResumeRefused, match=r"checkpoints/2: missing, but the "
                     r"ledger's block of round 2 records it"):
    run_ledger.plan_resume(run, tmp_path / "checkpoints")


def test_update_checks_are_recorded_and_enforced(tmp_path):
  rule = consensus.ConsensusRule(max_norm_ratio=3.0, direction_k=2.0)
  run = open_run(tmp_path, consensus=rule)
  synthetic = simulate.synthetic_round(run, 0, PER_ROUND)
  roles = run_ledger.round_roles(run, 0)
  norms = np.array([1.0, 30.0, 1.1], np.float32)  # the second hospital scaled its update
  cosines = np.array([0.6, 0.5, 0.55], np.float32)
  decided = np.asarray(consensus.decide(synthetic.vote_scores, norms, cosines, rule))
  assert decided.tolist() == [True, False, True]
  with pytest.raises(validate.LedgerRefusal, match="rejects .*update norm 30"):
    run_ledger.record_round(run, 0, roles, *simulate.round_records(
        synthetic, 0.1, update_norms=norms, cosines=cosines, accepted=np.ones(PER_ROUND, bool)))
  run = run_ledger.record_round(run, 0, roles, *simulate.round_records(
      synthetic, simulate.round_epsilon(run, synthetic), update_norms=norms, cosines=cosines, accepted=decided))
  votes = run.ledger.blocks[-1].transactions[1 + PER_ROUND].body["votes"]
  assert [v["norm"] for v in votes] == pytest.approx(norms.tolist())
  assert [v["cosine"] for v in votes] == pytest.approx(cosines.tolist())
  assert audit.verify_run(tmp_path).ok


@pytest.mark.parametrize("max_norm_ratio", [0.0, 3.0])
def test_a_non_finite_update_is_recorded_rejected_with_its_reason(tmp_path, max_norm_ratio):
  rule = consensus.ConsensusRule(max_norm_ratio=max_norm_ratio)
  run = open_run(tmp_path, consensus=rule)
  synthetic = simulate.synthetic_round(run, 0, PER_ROUND)
  finite = np.array([True, False, True])
  nan = np.where(finite, 1.0, np.nan).astype(np.float32)  # what the round gives such an update
  evidence = dict(local_maes=synthetic.local_maes * nan,
                  mae_matrix=synthetic.mae_matrix * nan[:, None],
                  vote_scores=synthetic.vote_scores * nan,
                  update_norms=synthetic.update_norms * nan, cosines=synthetic.cosines * nan)
  accepted = np.asarray(consensus.decide(evidence["vote_scores"], evidence["update_norms"],
                                         evidence["cosines"], rule))
  assert accepted.tolist() == [True, False, True]
  roles = run_ledger.round_roles(run, 0)
  epsilon = simulate.round_epsilon(run, synthetic)
  if max_norm_ratio:  # where norms are published, a NaN norm cannot pass for a finite update
    with pytest.raises(validate.LedgerRefusal, match="recorded finite with norm nan"):
      run_ledger.record_round(run, 0, roles, *simulate.round_records(
          synthetic, epsilon, accepted=accepted, **evidence))
  run = run_ledger.record_round(run, 0, roles, *simulate.round_records(
      synthetic, epsilon, accepted=accepted, finite=finite, **evidence))
  for vote in (t for t in run.ledger.blocks[-1].transactions if t.kind == "vote"):
    assert [v["finite"] for v in vote.body["votes"]] == [True, False, True]
    assert [v["reason"] for v in vote.body["votes"]] == ["accepted", "non_finite_update",
                                                         "accepted"]
    assert vote.body["votes"][1]["score"] is None and vote.body["votes"][1]["norm"] is None
  assert audit.verify_run(tmp_path).ok
  assert "(rejected: non_finite_update)" in audit.show(tmp_path)
