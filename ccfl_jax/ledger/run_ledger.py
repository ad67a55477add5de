"""The host API the training loop calls: one run's ledger, opened, extended and resumed.

Fresh run or resume, the same call:

    run = open_run_ledger(run_dir, seed, num_hospitals, difficulty=8, num_verifiers=3,
                          consensus=ConsensusRule(gamma=0.5, rule="median_mad", k=3.0))
    run = register_data(run, [DataRegistration(h, "ct_slices", patients, slices, manifest_sha)
                              for h ...])                   # idempotent; before round 0

Each round (round_index r counts from 0, as sampling.sample_hospitals does; the training
loop's orbax step after round r is r + 1):

    roles = round_roles(run, r)   # before the round: verifier j's validation batch is column j
    ... compiled round: mae[i, j] = eq. 14 of sampled hospital i's local model on the batch of
        hospital roles.verifiers[j] (any registered hospital, sampled or not); self_mae[i] on
        its own batch; scores = consensus.vote_scores(mae, self_mae, run.consensus.gamma);
        keep = consensus.decide(scores, norms, cosines, run.consensus) with norms the
        submitted updates' norms and cosines = consensus.median_cosines(updates) (None
        unless the rule's direction check is on)
    ... if this round checkpoints: checkpointing.save(..., r + 1, ...) and wait for it
    run = record_round(run, r, sampled=sampled, update_digests=[update_digest(d) for d in
                       the clipped per-hospital deltas], local_maes=self_mae, mae_matrix=mae,
                       vote_scores=scores, update_norms=norms, cosines=cosines,
                       accepted=keep, epsilon=eps, delta=delta,
                       sigma=sigma, clip_norm=S,
                       checkpoint_dir=run_dir / "checkpoints" / str(r + 1) or None,
                       params_digest=update_digest(global_params))

One block per round, [round_start, local_update x m_t, vote x verifiers, global_model],
validated (validate.append) before it is written: a record that breaks a rule is never
persisted, and a mismatch between the consensus the round ran and `run.consensus` shows up
here as a LedgerRefusal. Setup blocks hold the registrations (round -1).

Resume after a crash. The checkpoint of round r is written before its block, so a crash
leaves either a checkpoint without a block (crash between the two) or blocks for rounds
whose model state was never checkpointed (checkpoints every few rounds). Then:

    run = open_run_ledger(run_dir, seed, num_hospitals)   # reloads and verifies the chain
    plan = plan_resume(run, run_dir / "checkpoints")
    for step in plan.unrecorded_steps: delete that checkpoint (orbax: manager.delete(step))
    run = rollback_to_round(run, plan.restore_round)      # no-op when nothing to drop
    restore checkpoint plan.restore_step (None: start from the initial model) and continue
    at round index plan.restore_round + 1 == last_recorded_round(run) + 1 (with the
    training loop's convention, plan.restore_step == plan.restore_round + 1).

rollback_to_round never edits a file: it appends a `truncate` record (store.py), so the
dropped blocks stay on disk and the audit shows that a rollback happened.

Simulation note: this process holds every hospital's signing key (derived from the seed,
identity.py); in a deployment each hospital would sign its own transactions.
"""
import dataclasses
import pathlib
from typing import Sequence

import numpy as np

from ccfl_jax.ledger import block as block_lib
from ccfl_jax.ledger import identity as identity_lib
from ccfl_jax.ledger import store
from ccfl_jax.ledger import transactions as tx_lib
from ccfl_jax.ledger import validate
from ccfl_jax.ledger.canonical import canonical_json, sha256_hex
from ccfl_jax.ledger.consensus import ConsensusRule
from ccfl_jax.ledger.digests import checkpoint_digest, update_digest  # noqa: F401  (API)


@dataclasses.dataclass(frozen=True)
class RunLedger:
  run_dir: pathlib.Path
  ledger: validate.Ledger
  hospitals: tuple[identity_lib.Identity, ...]  # index = hospital index of the run
  consensus: ConsensusRule
  num_verifiers: int
  next_seq: int
  last_record_sha256: str

  @property
  def ids(self) -> tuple[str, ...]:
    return tuple(h.node_id for h in self.hospitals)


@dataclasses.dataclass(frozen=True)
class RoundRoles:
  leader: int                 # hospital index
  verifiers: tuple[int, ...]  # hospital indices, the column order of mae_matrix


@dataclasses.dataclass(frozen=True)
class DataRegistration:
  hospital: int
  data_type: str
  num_patients: int
  num_slices: int
  manifest_sha256: str


@dataclasses.dataclass(frozen=True)
class ResumePlan:
  restore_step: int | None  # orbax step to restore; None: start from the initial model
  restore_round: int        # last round whose global model that step holds; -1 if none
  unrecorded_steps: tuple[int, ...]  # checkpoints no block vouches for: delete before going on


def manifest_sha256(manifest) -> str:
  """sha256 of a JSON-able data manifest (e.g. file names and sizes), canonically encoded."""
  return sha256_hex(canonical_json(manifest))


def open_run_ledger(run_dir, seed: int, num_hospitals: int,
                    difficulty: int = block_lib.DEFAULT_DIFFICULTY, num_verifiers: int = 3,
                    consensus: ConsensusRule = ConsensusRule()) -> RunLedger:
  """A fresh run's ledger (genesis block registers every hospital) or the run's existing one.

  An existing ledger is read, every record and block checked (signatures, links, proof of
  work, rules; checkpoints are re-hashed by audit.verify_run, not here), and its registered
  hospitals must be the ones (seed, num_hospitals) derive. Its difficulty is the genesis
  block's, whatever `difficulty` says.
  """
  run_dir = pathlib.Path(run_dir)
  hospitals = tuple(identity_lib.hospital_identity(seed, h) for h in range(num_hospitals))
  records = store.read_records(store.ledger_dir(run_dir))
  blocks = store.chain_blocks(records)
  ledger = validate.replay(blocks, blocks[0].difficulty if blocks else difficulty)
  run = RunLedger(run_dir, ledger, hospitals, consensus, min(num_verifiers, num_hospitals),
                  len(records), records[-1].record_sha256 if records else
                  store.GENESIS_RECORD_HASH)
  if not blocks:
    ids = run.ids
    leader, _ = identity_lib.round_leader_and_verifiers(block_lib.SETUP_ROUND, ids, 1)
    return _commit(run, block_lib.SETUP_ROUND, leader,
                   [tx_lib.register_hospital(h) for h in hospitals])
  if set(ledger.state.keys) != set(run.ids):
    raise ValueError(f"{store.ledger_dir(run_dir)} registers other hospitals than seed {seed} "
                     f"and {num_hospitals} hospitals give: a different run?")
  return run


def _commit(run: RunLedger, round_index: int, leader: str, transactions) -> RunLedger:
  """Seal, validate, then persist one block; the returned value includes it."""
  sealed = block_lib.seal(len(run.ledger.blocks), run.ledger.head_hash, round_index, leader,
                          transactions, run.ledger.state.difficulty)
  ledger = validate.append(run.ledger, sealed)
  record = store.write_record(store.ledger_dir(run.run_dir), run.next_seq,
                              run.last_record_sha256, sealed)
  return dataclasses.replace(run, ledger=ledger, next_seq=run.next_seq + 1,
                             last_record_sha256=record.record_sha256)


def register_data(run: RunLedger, registrations: Sequence[DataRegistration]) -> RunLedger:
  """One setup block registering each hospital's data (counts and manifest digest only).

  Registrations already on the ledger with the same fields are skipped, so a resumed run
  may call this again; new ones after round 0 are refused (data must not change mid-run).
  """
  recorded = {(t.author, t.body_json) for b in run.ledger.blocks for t in b.transactions
              if t.kind == "register_data"}
  new = [tx_lib.register_data(run.hospitals[r.hospital], r.data_type, r.num_patients,
                              r.num_slices, r.manifest_sha256) for r in registrations]
  new = [t for t in new if (t.author, t.body_json) not in recorded]
  if not new:
    return run
  leader = new[0].author
  return _commit(run, block_lib.SETUP_ROUND, leader, new)


def round_roles(run: RunLedger, round_index: int) -> RoundRoles:
  """The round's leader and verifier panel (eq. 10 nearest to sha256 of the round)."""
  ids = run.ids
  leader, panel = identity_lib.round_leader_and_verifiers(round_index, ids, run.num_verifiers)
  return RoundRoles(ids.index(leader), tuple(ids.index(v) for v in panel))


def last_recorded_round(run: RunLedger) -> int:
  """The last round with a block; -1 before round 0."""
  return run.ledger.state.last_round


def record_round(run: RunLedger, round_index: int, *, sampled: Sequence[int],
                 update_digests: Sequence[str], local_maes, mae_matrix, vote_scores, accepted,
                 epsilon: float, delta: float, sigma: float, clip_norm: float,
                 checkpoint_dir=None, params_digest: str | None = None, update_norms=None,
                 cosines=None) -> RunLedger:
  """Append and persist round `round_index`'s block (see module docstring).

  sampled: hospital indices, in the row order of the other arguments; mae_matrix:
  [len(sampled), num_verifiers], columns in round_roles(run, round).verifiers order;
  accepted: boolean [len(sampled)] (consensus.decide); update_norms, cosines: [len(sampled)]
  or None, what the rule's update checks read (recorded in every vote); checkpoint_dir: the orbax step
  folder holding this round's global model, or None in a round without a checkpoint.
  """
  transactions = round_transactions(
      run, round_index, sampled=sampled, update_digests=update_digests, local_maes=local_maes,
      mae_matrix=mae_matrix, vote_scores=vote_scores, update_norms=update_norms,
      cosines=cosines, accepted=accepted, epsilon=epsilon,
      delta=delta, sigma=sigma, clip_norm=clip_norm, checkpoint_dir=checkpoint_dir,
      params_digest=params_digest)
  return _commit(run, round_index, transactions[0].author, transactions)


def round_transactions(run: RunLedger, round_index: int, *, sampled, update_digests, local_maes,
                       mae_matrix, vote_scores, accepted, epsilon, delta, sigma, clip_norm,
                       checkpoint_dir=None, params_digest=None, update_norms=None,
                       cosines=None) -> list[tx_lib.Transaction]:
  """The signed transactions of a round block, in block order (pure but for hashing files)."""
  roles = round_roles(run, round_index)
  hospitals = run.hospitals
  sampled = [int(h) for h in sampled]
  sampled_ids = [hospitals[h].node_id for h in sampled]
  mae_matrix, vote_scores = np.asarray(mae_matrix), np.asarray(vote_scores)
  accepted = np.asarray(accepted, bool)
  missing = np.full(len(sampled), np.nan)
  update_norms = missing if update_norms is None else np.asarray(update_norms)
  cosines = missing if cosines is None else np.asarray(cosines)
  if mae_matrix.shape != (len(sampled), len(roles.verifiers)):
    raise ValueError(f"mae_matrix {mae_matrix.shape}, expected "
                     f"({len(sampled)}, {len(roles.verifiers)}) = (sampled, verifiers)")
  leader = hospitals[roles.leader]
  transactions = [tx_lib.round_start(leader, round_index, sampled_ids,
                                     [hospitals[v].node_id for v in roles.verifiers],
                                     run.consensus.to_json())]
  transactions += [tx_lib.local_update(hospitals[h], round_index, digest, mae)
                   for h, digest, mae in zip(sampled, update_digests, np.asarray(local_maes))]
  transactions += [tx_lib.vote(hospitals[v], round_index,
                               zip(sampled_ids, mae_matrix[:, column], vote_scores,
                                   update_norms, cosines, accepted))
                   for column, v in enumerate(roles.verifiers)]
  transactions.append(tx_lib.global_model(
      leader, round_index, _checkpoint_entry(run.run_dir, checkpoint_dir), params_digest,
      epsilon, delta, sigma, clip_norm, len(sampled),
      [i for i, keep in zip(sampled_ids, accepted) if keep]))
  return transactions


def _checkpoint_entry(run_dir: pathlib.Path, checkpoint_dir) -> dict | None:
  if checkpoint_dir is None:
    return None
  checkpoint_dir = pathlib.Path(checkpoint_dir)
  whole, files = checkpoint_digest(checkpoint_dir)
  try:
    path = checkpoint_dir.resolve().relative_to(run_dir.resolve()).as_posix()
  except ValueError:
    raise ValueError(f"checkpoint {checkpoint_dir} lies outside the run folder {run_dir}") from None
  return {"path": path, "sha256": whole, "files": files}


def rollback_to_round(run: RunLedger, round_index: int,
                      reason: str = "resume from an earlier checkpoint") -> RunLedger:
  """Drop the blocks of rounds after `round_index` (-1: every round) by a truncate record."""
  keep = sum(1 for b in run.ledger.blocks if b.round <= round_index)
  if keep == len(run.ledger.blocks):
    return run
  record = store.write_record(store.ledger_dir(run.run_dir), run.next_seq,
                              run.last_record_sha256, store.Truncation(keep, reason))
  return dataclasses.replace(run, ledger=validate.truncated(run.ledger, keep),
                             next_seq=run.next_seq + 1, last_record_sha256=record.record_sha256)


def checkpoint_steps(checkpoint_root) -> tuple[int, ...]:
  """The finished orbax step folders (integer names) under checkpoint_root."""
  root = pathlib.Path(checkpoint_root)
  if not root.is_dir():
    return ()
  return tuple(sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()))


def recorded_checkpoints(ledger: validate.Ledger) -> dict[str, tuple[int, dict]]:
  """{checkpoint path relative to the run dir: (round, checkpoint entry)} over the chain."""
  found = {}
  for b in ledger.blocks:
    for t in b.transactions:
      if t.kind == "global_model" and t.body["checkpoint"] is not None:
        found[t.body["checkpoint"]["path"]] = (b.round, t.body["checkpoint"])
  return found


def plan_resume(run: RunLedger, checkpoint_root) -> ResumePlan:
  """Which checkpoint to restore and what to discard (see module docstring).

  Raises ValueError if a recorded checkpoint's bytes no longer match its block: that is
  tampering or corruption, not a crash.
  """
  root = pathlib.Path(checkpoint_root)
  recorded = recorded_checkpoints(run.ledger)
  best, unrecorded = (None, -1), []
  for step in checkpoint_steps(root):
    path = (root / str(step)).resolve().relative_to(run.run_dir.resolve()).as_posix()
    if path not in recorded:
      unrecorded.append(step)
      continue
    round_index, entry = recorded[path]
    if checkpoint_digest(root / str(step))[0] != entry["sha256"]:
      raise ValueError(f"checkpoint {path} does not match the ledger's block of round "
                       f"{round_index}: run `python -m ccfl_jax.ledger verify {run.run_dir}`")
    if round_index > best[1]:
      best = (step, round_index)
  return ResumePlan(best[0], best[1], tuple(unrecorded))
