"""The host API the training loop calls: one run's ledger, opened, extended and resumed.

Fresh run or resume, the same call:

    run = open_run_ledger(run_dir, seed, num_hospitals, difficulty=8, num_verifiers=3,
                          consensus=ConsensusRule(gamma=0.5, rule="median_mad", k=3.0),
                          keys="random", keystore=None,   # config ledger.key_source / .keystore
                          config_sha256=text_sha256(config_json_text))
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
    run = record_round(run, r, roles,
                       RoundEvidence(sampled, update_digests=[update_digest(d) for d in the
                                     clipped per-hospital deltas], local_maes=self_mae,
                                     mae_matrix=mae, vote_scores=scores, accepted=keep,
                                     update_norms=norms, cosines=cosines,
                                     finite=np.isfinite(all submitted norms)),
                       GlobalModelRecord(eps, delta, sigma, S,
                                         checkpoint_dir=run_dir / "checkpoints" / str(r + 1)
                                         or None, params_digest=update_digest(global_params),
                                         metrics_sha256=text_sha256(metrics_line)))

with metrics_line the round's metrics.jsonl line as written, without its newline. At the
end, once summary.json, summary.md and curves.png are written:

    run = close_run(run, {"summary.json": run_dir / "summary.json", ...,
                          "config.json": run_dir / "config.json",
                          "checkpoints/40": run_dir / "checkpoints" / "40"})

One block per round, [round_start, local_update x m_t, vote x verifiers, global_model]
(each vote also gives every hospital's verdict reason, consensus.rejection_reasons), validated (validate.append) before it is written: a record that breaks a rule is never
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

Keys (keystore.py). A fresh run draws random keys for its hospitals (keys="random"), saves
the private keys in the keystore under a random run id and publishes the public keys and
the run id in the genesis block; a resume loads them from there. keys="pem" reads
hospital_<h>.pem from the folder `keystore` (a deployment's own keys); keys="derived"
derives them from the seed (reproducible, proves nothing: verify says so). Simulation note:
this process still holds every hospital's signing key; in a deployment each hospital would
sign its own transactions (audit.py argues what that changes).
"""
import dataclasses
import os
import pathlib
import secrets
from typing import Sequence

import numpy as np

from ccfl_jax.ledger import block as block_lib
from ccfl_jax.ledger import identity as identity_lib
from ccfl_jax.ledger import keystore as keystore_lib
from ccfl_jax.ledger import store
from ccfl_jax.ledger import transactions as tx_lib
from ccfl_jax.ledger import validate
from ccfl_jax.ledger.canonical import canonical_json, sha256_hex
from ccfl_jax.ledger.consensus import ConsensusRule, rejection_reasons
from ccfl_jax.ledger.digests import (UnsafePath, checkpoint_digest, confined_checkpoint,
                                     file_sha256, update_digest)  # noqa: F401  (API)


@dataclasses.dataclass(frozen=True)
class RunLedger:
  run_dir: pathlib.Path
  ledger: validate.Ledger
  hospitals: tuple[identity_lib.Identity, ...]  # index = hospital index of the run
  consensus: ConsensusRule
  num_verifiers: int
  next_seq: int
  last_record_sha256: str
  config_sha256: str | None = None  # the config in force, recorded in every round's block

  @property
  def ids(self) -> tuple[str, ...]:
    return tuple(h.node_id for h in self.hospitals)


class ResumeRefused(ValueError):
  """A run folder whose ledger, keys or checkpoints forbid resuming it (another run's ledger,
  a tampered or missing checkpoint)."""


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


def text_sha256(text: str) -> str:
  """sha256 of text's UTF-8 bytes: a metrics.jsonl line (without its newline), config.json."""
  return sha256_hex(text.encode("utf-8"))


def open_run_ledger(run_dir, seed: int, num_hospitals: int,
                    difficulty: int = block_lib.DEFAULT_DIFFICULTY, num_verifiers: int = 3,
                    consensus: ConsensusRule = ConsensusRule(), keys: str = "random",
                    keystore=None, config_sha256: str | None = None) -> RunLedger:
  """A fresh run's ledger (genesis block: every hospital registered, then the run's id, config
  sha256 and key kind) or the run's existing one.

  keys: "random" (fresh keys, private keys saved under keystore/<run id>; keystore None:
  keystore.default_root()), "pem" (keystore = a folder of hospital_<h>.pem) or "derived"
  (from the seed). An existing ledger is read, every record and block checked (signatures,
  links, proof of work, rules; checkpoints are re-hashed by audit.verify_run, not here); its
  key kind must be `keys`, its hospitals num_hospitals, and their private keys are loaded
  (KeystoreError naming the folder when missing). Its difficulty is the genesis block's,
  whatever `difficulty` says. config_sha256 is the config now in force (recorded in the
  genesis block of a fresh run and in every round's block).
  """
  run_dir = pathlib.Path(run_dir)
  records = store.read_records(store.ledger_dir(run_dir))
  ledger = validate.replay_records(records)
  if not ledger.blocks:
    return _open_fresh(run_dir, seed, num_hospitals, difficulty, num_verifiers, consensus, keys,
                       keystore, config_sha256)
  hospitals = _resumed_keys(ledger, run_dir, seed, num_hospitals, keys, keystore)
  return RunLedger(run_dir, ledger, hospitals, consensus, min(num_verifiers, num_hospitals),
                   len(records), records[-1].record_sha256, config_sha256)


def _open_fresh(run_dir, seed, num_hospitals, difficulty, num_verifiers, consensus, keys,
                keystore, config_sha256) -> RunLedger:
  if keys not in tx_lib.KEY_MODES:
    raise ValueError(f"ledger keys {keys!r}: expected one of {tx_lib.KEY_MODES}")
  if keys == "derived":
    # Reproducible on purpose: same seed, same blocks (tests, benchmarks).
    run_id = sha256_hex(f"ccfl-run-id:{seed}".encode())[:32]
    hospitals = tuple(identity_lib.hospital_identity(seed, h) for h in range(num_hospitals))
  elif keys == "pem":
    run_id = secrets.token_hex(16)
    hospitals = keystore_lib.load_keys(_pem_folder(keystore), num_hospitals)
  else:
    run_id = secrets.token_hex(16)
    hospitals = tuple(identity_lib.generate_identity() for _ in range(num_hospitals))
    keystore_lib.save_run_keys(keystore, run_id, hospitals, run_dir)  # before the ledger names them
  run = RunLedger(run_dir, validate.empty_ledger(difficulty), hospitals, consensus,
                  min(num_verifiers, num_hospitals), 0, store.GENESIS_RECORD_HASH, config_sha256)
  leader_id, _ = identity_lib.round_leader_and_verifiers(block_lib.SETUP_ROUND, run.ids, 1)
  leader = hospitals[run.ids.index(leader_id)]
  return _commit(run, block_lib.SETUP_ROUND, leader_id,
                 [tx_lib.register_hospital(h) for h in hospitals]
                 + [tx_lib.open_run(leader, run_id, config_sha256, keys)])


def _pem_folder(keystore) -> pathlib.Path:
  if keystore in (None, ""):
    raise keystore_lib.KeystoreError("ledger.key_source=pem needs ledger.keystore: the folder of "
                                     "hospital_<h>.pem files")
  return pathlib.Path(keystore).expanduser()


def registered_public_keys(ledger: validate.Ledger) -> tuple[bytes, ...]:
  """The hospitals' public keys in registration order (= hospital index)."""
  return tuple(bytes.fromhex(t.body["public_key"]) for b in ledger.blocks
               for t in b.transactions if t.kind == "register_hospital")


def _resumed_keys(ledger, run_dir, seed, num_hospitals, keys, keystore):
  """The private keys of an existing run, checked against the ones its genesis registers."""
  state, where = ledger.state, store.ledger_dir(run_dir)
  registered = registered_public_keys(ledger)
  if len(registered) != num_hospitals:
    raise ResumeRefused(f"{where} registers {len(registered)} hospitals, not {num_hospitals}: "
                        "a different run?")
  if state.key_mode != keys:
    raise ResumeRefused(f"{where} was made with ledger.key_source={state.key_mode}, not "
                        f"{keys}: a run keeps the keys it started with")
  if keys == "derived":
    hospitals = tuple(identity_lib.hospital_identity(seed, h) for h in range(num_hospitals))
    if tuple(h.public_key for h in hospitals) != registered:
      raise ResumeRefused(f"{where} registers other hospitals than seed {seed} and "
                         f"{num_hospitals} hospitals give: a different run?")
    return hospitals
  folder = (_pem_folder(keystore) if keys == "pem"
            else keystore_lib.run_folder(keystore, state.run_id))
  try:
    hospitals = keystore_lib.load_keys(folder, num_hospitals)
  except keystore_lib.KeystoreError as error:
    raise keystore_lib.KeystoreError(
        f"cannot resume {run_dir}: the private keys of run {state.run_id} are not readable "
        f"({error}); set ledger.keystore (or {keystore_lib.ENV_VAR}) to the keystore that holds "
        f"{state.run_id}/ (the run still verifies without it)") from None
  for h, (hospital, public_key) in enumerate(zip(hospitals, registered)):
    if hospital.public_key != public_key:
      raise keystore_lib.KeystoreError(f"{keystore_lib.key_file(folder, h)} is not the key "
                                       f"{where} registers for hospital {h}")
  return hospitals


# How _commit validates its own block: every rule but its fresh signatures (validate.append).
COMMIT_APPEND_OPTIONS = {"signed_here": True}


def _commit(run: RunLedger, round_index: int, leader: str, transactions) -> RunLedger:
  """Seal, validate (every rule but the signatures just made), then persist one block; the
  returned value includes it."""
  sealed = block_lib.seal(len(run.ledger.blocks), run.ledger.head_hash, round_index, leader,
                          transactions, run.ledger.state.difficulty)
  ledger = validate.append(run.ledger, sealed, **COMMIT_APPEND_OPTIONS)
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


@dataclasses.dataclass(frozen=True)
class RoundEvidence:
  """What the round computed that its block records, one row per sampled hospital.

  sampled: hospital indices, the row order of every other field; update_digests: sha256 of
  each clipped update (digests.update_digest); local_maes: each author's MAE on its own
  validation batch; mae_matrix: [len(sampled), num_verifiers], columns in the round's
  RoundRoles.verifiers order; vote_scores: eq. 15; accepted: consensus.decide; update_norms,
  cosines: what the rule's update checks read, or None where not measured (recorded in every
  vote); finite: False where the submitted update holds a NaN or Inf (None: every update
  finite). Each vote records the reasons consensus.rejection_reasons derives from these.
  """
  sampled: tuple[int, ...]
  update_digests: tuple[str, ...]
  local_maes: np.ndarray
  mae_matrix: np.ndarray
  vote_scores: np.ndarray
  accepted: np.ndarray
  update_norms: np.ndarray | None = None
  cosines: np.ndarray | None = None
  finite: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class GlobalModelRecord:
  """The round's global model as the block records it: privacy spent and where it lies.

  checkpoint_dir: the orbax step folder holding this round's global model, or None in a
  round without a checkpoint, when params_digest (the global params' sha256) stands in.
  metrics_sha256 covers the round's metrics.jsonl line (verify checks it line by line).
  laplace_epsilon: the round's epsilon per submission under privacy.mechanism =
  laplace_local (epsilon is then the local mechanism's, composed per hospital; sigma 0,
  clip_norm the L1 bound); None under gaussian_central.
  """
  epsilon: float
  delta: float
  sigma: float
  clip_norm: float
  checkpoint_dir: pathlib.Path | None = None
  params_digest: str | None = None
  metrics_sha256: str | None = None  # text_sha256 of the round's metrics.jsonl line
  config_sha256: str | None = None   # None: the RunLedger's config_sha256
  laplace_epsilon: float | None = None  # laplace_local's per-round epsilon; None: gaussian


def record_round(run: RunLedger, round_index: int, roles: RoundRoles, evidence: RoundEvidence,
                 model: GlobalModelRecord) -> RunLedger:
  """Append and persist round `round_index`'s block (see module docstring).

  `roles` are those handed out before the round (round_roles); a block naming other roles
  than the ledger's own is refused when it is validated. A closed run (close_run) is
  reopened first by a signed truncation of its closing block.
  """
  if run.ledger.state.closed:
    run = _truncate(run, len(run.ledger.blocks) - 1, "run resumed after its closing block")
  transactions = round_transactions(run, round_index, roles, evidence, model)
  return _commit(run, round_index, transactions[0].author, transactions)


def round_transactions(run: RunLedger, round_index: int, roles: RoundRoles,
                       evidence: RoundEvidence,
                       model: GlobalModelRecord) -> list[tx_lib.Transaction]:
  """The signed transactions of a round block, in block order (pure but for hashing files)."""
  hospitals = run.hospitals
  sampled = [int(h) for h in evidence.sampled]
  sampled_ids = [hospitals[h].node_id for h in sampled]
  mae_matrix, vote_scores = np.asarray(evidence.mae_matrix), np.asarray(evidence.vote_scores)
  accepted = np.asarray(evidence.accepted, bool)
  missing = np.full(len(sampled), np.nan)
  update_norms = missing if evidence.update_norms is None else np.asarray(evidence.update_norms)
  cosines = missing if evidence.cosines is None else np.asarray(evidence.cosines)
  finite = (np.ones(len(sampled), bool) if evidence.finite is None
            else np.asarray(evidence.finite, bool))
  reasons = rejection_reasons(vote_scores, update_norms, cosines, finite, run.consensus, accepted)
  if mae_matrix.shape != (len(sampled), len(roles.verifiers)):
    raise ValueError(f"mae_matrix {mae_matrix.shape}, expected "
                     f"({len(sampled)}, {len(roles.verifiers)}) = (sampled, verifiers)")
  leader = hospitals[roles.leader]
  transactions = [tx_lib.round_start(leader, round_index, sampled_ids,
                                     [hospitals[v].node_id for v in roles.verifiers],
                                     run.consensus.to_json())]
  transactions += [tx_lib.local_update(hospitals[h], round_index, digest, mae)
                   for h, digest, mae in zip(sampled, evidence.update_digests,
                                             np.asarray(evidence.local_maes))]
  transactions += [tx_lib.vote(hospitals[v], round_index,
                               zip(sampled_ids, mae_matrix[:, column], vote_scores,
                                   update_norms, cosines, finite, accepted, reasons))
                   for column, v in enumerate(roles.verifiers)]
  transactions.append(tx_lib.global_model(
      leader, round_index, _checkpoint_entry(run.run_dir, model.checkpoint_dir),
      model.params_digest, model.epsilon, model.delta, model.sigma, model.clip_norm,
      len(sampled), [i for i, keep in zip(sampled_ids, accepted) if keep],
      model.metrics_sha256, model.config_sha256 or run.config_sha256,
      laplace_epsilon=model.laplace_epsilon))
  return transactions


def _relative(run_dir: pathlib.Path, path) -> str:
  """path relative to run_dir, lexically (symlinks are not followed but refused elsewhere)."""
  try:
    return pathlib.Path(os.path.abspath(path)).relative_to(os.path.abspath(run_dir)).as_posix()
  except ValueError:
    raise UnsafePath(f"{path} lies outside the run folder {run_dir}") from None


def _checkpoint_entry(run_dir: pathlib.Path, checkpoint_dir) -> dict | None:
  if checkpoint_dir is None:
    return None
  path = _relative(run_dir, checkpoint_dir)
  whole, files = checkpoint_digest(confined_checkpoint(run_dir, path))
  return {"path": path, "sha256": whole, "files": files}


def _truncate(run: RunLedger, keep: int, reason: str) -> RunLedger:
  """Persist a truncate record, signed by the next round's leader, keeping `keep` blocks."""
  signer_id = validate.truncation_signer(run.ledger, keep)
  signer = run.hospitals[run.ids.index(signer_id)]
  signature = identity_lib.sign(signer, validate.truncation_message(run.ledger, keep, reason))
  truncation = store.Truncation(keep, reason, signer_id, signature)
  ledger = validate.truncate(run.ledger, truncation)  # checked before it is written
  record = store.write_record(store.ledger_dir(run.run_dir), run.next_seq,
                              run.last_record_sha256, truncation)
  return dataclasses.replace(run, ledger=ledger, next_seq=run.next_seq + 1,
                             last_record_sha256=record.record_sha256)


def rollback_to_round(run: RunLedger, round_index: int,
                      reason: str = "resume from an earlier checkpoint") -> RunLedger:
  """Drop the blocks of rounds after `round_index` (-1: every round) by a signed truncate
  record; a closing block goes with them (kept when no round is dropped)."""
  if round_index >= run.ledger.state.last_round:
    return run
  keep = sum(1 for b in run.ledger.blocks
             if block_lib.SETUP_ROUND <= b.round <= round_index)
  return _truncate(run, keep, reason)


def close_run(run: RunLedger, files: dict) -> RunLedger:
  """Append the closing block: sha256 of each output file and digest of each checkpoint folder.

  files: {name: path}, name the path relative to the run folder (e.g. "summary.json",
  "checkpoints/40"), path where it is (must be run_dir / name). Folders must be
  checkpoints/<step>. Closing again with the same digests is a no-op; with others (outputs
  rewritten by a rerun) the old closing block is dropped by a signed truncation first.
  """
  digests, checkpoints = {}, {}
  for name, path in files.items():
    if _relative(run.run_dir, path) != name:
      raise ValueError(f"close_run: {name!r} must name {path} relative to {run.run_dir}")
    if pathlib.Path(path).is_dir():
      checkpoints[name] = _checkpoint_entry(run.run_dir, path)
    else:
      digests[name] = file_sha256(path)
  rounds = run.ledger.state.last_round + 1
  if run.ledger.state.closed:
    last = run.ledger.blocks[-1].transactions[0].body
    if last == {"rounds": rounds, "files": digests, "checkpoints": checkpoints}:
      return run
    run = _truncate(run, len(run.ledger.blocks) - 1, "outputs rewritten after the run closed")
  leader_id, _ = identity_lib.round_leader_and_verifiers(rounds, run.ids, 1)
  leader = run.hospitals[run.ids.index(leader_id)]
  return _commit(run, block_lib.CLOSING_ROUND, leader_id,
                 [tx_lib.close_run(leader, rounds, digests, checkpoints)])


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

  Raises ResumeRefused if a recorded checkpoint's bytes no longer match its block, or the
  newest recorded checkpoint is gone: that is tampering or corruption, not a crash (a
  checkpoint is written before the block that records it, and orbax rotates away only older
  ones); UnsafePath (a ValueError) if checkpoint_root is not
  <run>/checkpoints or a checkpoint folder is, or holds, a symlink.
  """
  root = pathlib.Path(checkpoint_root)
  if _relative(run.run_dir, root) != "checkpoints":
    raise UnsafePath(f"checkpoints must be {run.run_dir / 'checkpoints'}, not {root}")
  recorded = recorded_checkpoints(run.ledger)
  best, unrecorded = (None, -1), []
  for step in checkpoint_steps(root):
    path = f"checkpoints/{step}"
    step_dir = confined_checkpoint(run.run_dir, path)
    if path not in recorded:
      unrecorded.append(step)
      continue
    round_index, entry = recorded[path]
    if checkpoint_digest(step_dir)[0] != entry["sha256"]:
      raise ResumeRefused(f"checkpoint {path} does not match the ledger's block of round "
                        f"{round_index}: run `python -m ccfl_jax.ledger verify {run.run_dir}`")
    if round_index > best[1]:
      best = (step, round_index)
  if recorded:
    newest_path, (newest_round, _) = max(recorded.items(), key=lambda item: item[1][0])
    if newest_round > best[1]:
      raise ResumeRefused(
          f"{run.run_dir / newest_path}: missing, but the ledger's block of round "
          f"{newest_round} records it (checkpoints are never deleted by a crash): restore it, "
          f"or start a new run with --config.run_name=<new name>")
  return ResumePlan(best[0], best[1], tuple(unrecorded))


# What refuses to resume a run folder (see main.train): its ledger does not verify, is
# another run's, its keys are not at hand, or a checkpoint is not the one it records.
RESUME_ERRORS = (ResumeRefused, store.StoreError, validate.LedgerRefusal,
                 keystore_lib.KeystoreError, UnsafePath)
