"""What a run leaves on disk, and how a rerun resumes from it: config, metrics, checkpoints,
ledger blocks. The training loop hands each finished round to `RunRecorder.record` and reads
nothing back but `restore`.

With config.ledger.enabled (the default) every run keeps an audit ledger in
`<run_dir>/ledger` (ccfl_jax/ledger/run_ledger.py): a setup block registers each hospital's
data (patient and slice counts and the sha256 of its manifest, never data), and every round
appends one block with the round's sampled hospitals, the digest of each clipped update,
the eq. 14 MAEs and eq. 15 votes the compiled round computed, the accepted set and the
global model. A round that checkpoints writes its orbax checkpoint first and records its
sha256 in the block; a round without a checkpoint (checkpoint_every > 1) records the sha256
of the global params instead (digests.update_digest). On resume the ledger decides which
checkpoint is trustworthy (plan_resume): checkpoints no block vouches for are deleted and
blocks after the restored round are rolled back, then those rounds are recomputed.
"""
import dataclasses
import json
import logging
import pathlib

import jax
import numpy as np

from ccfl_jax import checkpointing, configuration, files, reporting
from ccfl_jax.ledger import consensus, run_ledger, store as ledger_store
from ccfl_jax.ledger.consensus import ConsensusRule
from ccfl_jax.ledger.digests import update_digest, update_digests

LOG = logging.getLogger("ccfl_jax")

# Fields a rerun may change and still resume the same run: they decide how long it runs,
# how often it saves and where it reads caches from, never what a round computes.
RESUMABLE_CHANGES = ("num_rounds", "checkpoint_every", "max_checkpoints_to_keep",
                     "eval_batch_size", "results_dir", "resume_force", "dataset.cache_dir",
                     "dataset.tfds_data_dir", "ledger.keystore", "metrics_csv", "tensorboard",
                     "distributed.process_id", "distributed.coordinator_address",
                     "distributed.auto_detect")


class IncompatibleRun(ValueError):
  """A rerun whose config would change what the existing run folder's rounds computed."""


def _flat(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def config_differences(stored: dict, config: dict, defaults: dict | None = None) -> list[str]:
  """'field: stored -> new' for every field that differs and would change results.

  A field missing from `stored` (a run made before the schema had it) counts as its value
  in `defaults` (the schema's, default_config): new fields default to the old behaviour.
  """
  old, new = _flat(stored), _flat(config)
  for field, value in _flat(defaults or {}).items():
    old.setdefault(field, value)
  # A learning-rate schedule spans num_rounds: another num_rounds reshapes the rounds done.
  resumable = (RESUMABLE_CHANGES if new.get("local_schedule.name", "constant") == "constant"
               else tuple(f for f in RESUMABLE_CHANGES if f != "num_rounds"))
  return [f"{field}: {old.get(field)!r} -> {new.get(field)!r}"
          for field in sorted(set(old) | set(new))
          if field not in resumable and old.get(field) != new.get(field)]


def check_compatible(run_dir: pathlib.Path, config) -> None:
  """Refuses (before anything is written) to resume a run folder made with another config."""
  if not (run_dir / "config.json").exists():
    return
  try:
    stored = json.loads((run_dir / "config.json").read_text())
  except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
    raise IncompatibleRun(f"{run_dir / 'config.json'}: unreadable ({error}), so a rerun cannot "
                          "be checked against this run; restore it, or start a new run with "
                          "--config.run_name=<new name>") from None
  if not isinstance(stored, dict):
    raise IncompatibleRun(f"{run_dir / 'config.json'}: not a config (a JSON object expected); "
                          "restore it, or start a new run with --config.run_name=<new name>")
  defaults = json.loads(configuration.default_config().to_json())
  differences = config_differences(stored, json.loads(config.to_json()), defaults)
  mechanism = [d for d in differences if d.startswith("privacy.mechanism:")]
  if mechanism:  # no accountant composes Gaussian (eps, delta) rounds with local Laplace ones
    raise IncompatibleRun(f"{run_dir}: this run was made with another privacy mechanism "
                          f"({mechanism[0]}), which not even --config.resume_force=true can "
                          "change mid-run; start a new run with --config.run_name=<new name>")
  if differences and not config.get("resume_force", False):
    raise IncompatibleRun(
        f"{run_dir}: this run was made with another config ({'; '.join(differences)}); "
        f"start a new run with --config.run_name=<new name>, or resume anyway with "
        f"--config.resume_force=true")


def data_registrations(slices, hospital_indices) -> list[run_ledger.DataRegistration]:
  """What the ledger learns of each hospital's data: counts and a manifest digest.

  The manifest is the hospital's sorted (patient id, slice count) pairs; only its sha256 is
  published, so an auditor holding the manifest can check it, and nobody else learns it.
  """
  registrations = []
  for h, index in enumerate(hospital_indices):
    patients, counts = np.unique(slices.patient_ids[index].astype(str), return_counts=True)
    manifest = [[p, int(c)] for p, c in zip(patients.tolist(), counts)]
    registrations.append(run_ledger.DataRegistration(
        h, "ct_slices", len(patients), int(len(index)), run_ledger.manifest_sha256(manifest)))
  return registrations


def _as_list(values):
  return None if values is None else np.asarray(values).tolist()


def finite_updates(out) -> np.ndarray:
  """Boolean [m]: the submitted update holds no NaN/Inf (privacy.global_norm is then finite)."""
  return np.isfinite(np.asarray(out.update_norm))


def verdict_reasons(out, rule: ConsensusRule | None) -> list[str]:
  """Each sampled hospital's verdict (consensus.REASONS), as its ledger votes record it."""
  return consensus.rejection_reasons(out.vote_scores, out.update_norm, out.cosines,
                                     finite_updates(out), rule, out.accepted)


def vote_record(sampled: np.ndarray, out, rule: ConsensusRule | None = None) -> dict:
  """Per-round metrics of the vote and of the attack (malicious = the attack's hospitals);
  `reasons` lists each sampled hospital's verdict, in `sampled` order."""
  accepted = np.asarray(out.accepted, bool)
  malicious = np.asarray(out.malicious, bool)
  return dict(
      accepted=sampled[accepted].tolist(), rejected=sampled[~accepted].tolist(),
      reasons=verdict_reasons(out, rule),
      malicious_accepted=int(np.sum(malicious & accepted)),
      malicious_rejected=int(np.sum(malicious & ~accepted)),
      honest_rejected=int(np.sum(~malicious & ~accepted)),
      vote_scores=_as_list(out.vote_scores), update_norms=_as_list(out.update_norm),
      cosines=_as_list(out.cosines))


def aggregation_record(sampled: np.ndarray, out) -> dict:
  """Which accepted updates the aggregation rule's result is made of (engine.RoundOutput
  .aggregated): all of them but under krum / multi_krum. Empty under the mean (every accepted
  update counts, and the line stays as before the rules existed). Recorded because the ledger
  records the vote's decisions only; like the vote's scores it is outside epsilon
  (federated/aggregation.py)."""
  if out.aggregated is None:
    return {}
  used = np.asarray(out.aggregated, bool)
  malicious = np.asarray(out.malicious, bool)
  return dict(aggregated=sampled[used].tolist(),
              malicious_aggregated=int(np.sum(malicious & used)),
              honest_aggregated=int(np.sum(~malicious & used)))


def round_evidence(sampled: np.ndarray, out, publish_norms: bool) -> run_ledger.RoundEvidence:
  """The ledger's view of a round's output (host arrays). A hospital's pre-clipping norm is
  published only where the magnitude check needs it: like the MAEs, it is not covered by
  the DP guarantee (ledger/consensus.py); whether its update is finite always is."""
  return run_ledger.RoundEvidence(
      tuple(int(h) for h in sampled), update_digests(out.updates),
      np.asarray(out.self_mae), np.asarray(out.mae), np.asarray(out.vote_scores),
      np.asarray(out.accepted), np.asarray(out.update_norm) if publish_norms else None,
      None if out.cosines is None else np.asarray(out.cosines), finite_updates(out))


def _read_metrics(path: pathlib.Path, rounds_done: int) -> list[dict]:
  """Metrics of the rounds a checkpoint covers; later lines (after a crash) are recomputed."""
  if not path.exists():
    return []
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [r for r in records if r["round"] <= rounds_done]


def _open_ledger(config, run_dir: pathlib.Path, manager, registrations):
  """The run's ledger, opened (or reloaded and verified) with the hospitals' data registered,
  and the orbax step to restore (None: initial model), per run_ledger's resume plan. The
  ledger records the sha256 of the config.json about to be written."""
  if not config.ledger.enabled:
    return None, manager.latest_step()
  fresh = not ledger_store.ledger_dir(run_dir).exists()
  if fresh and manager.latest_step() is not None:
    # Deleting checkpoints nobody vouches for would destroy a run made without a ledger.
    raise IncompatibleRun(f"{run_dir} has checkpoints but no ledger: it was made with "
                          "ledger.enabled=False; resume it so, or use another run_name")
  c = config.ledger
  run = run_ledger.open_run_ledger(
      run_dir, config.seed, config.num_hospitals, difficulty=c.difficulty,
      num_verifiers=c.num_verifiers, consensus=ConsensusRule(**c.consensus.to_dict()),
      keys=c.key_source, keystore=c.keystore or None,
      config_sha256=run_ledger.text_sha256(checkpointing.config_text(config)))
  run = run_ledger.register_data(run, registrations)
  plan = run_ledger.plan_resume(run, run_dir / "checkpoints")
  for step in plan.unrecorded_steps:  # written just before a crash, never recorded
    LOG.info("deleting checkpoint %d: no ledger block vouches for it", step)
    manager.delete(step)
  run = run_ledger.rollback_to_round(run, plan.restore_round,
                                     reason=f"resume from checkpoint {plan.restore_step}")
  return run, plan.restore_step


@dataclasses.dataclass
class RunRecorder:
  """A run folder's writer: opened once per process, then one `record` per finished round."""
  config: object
  run_dir: pathlib.Path
  manager: object                    # orbax CheckpointManager
  ledger: run_ledger.RunLedger | None
  restore_step: int | None           # what `restore` loads (None: the initial model)
  records: list = dataclasses.field(default_factory=list)  # metrics lines, one per round

  @classmethod
  def open(cls, config, run_dir, registrations) -> "RunRecorder":
    """Checks a rerun is compatible, opens the checkpoints and the ledger and plans the
    resume, then writes config.json: a rerun the ledger refuses (tampered, another run's,
    keys missing) leaves the folder's config.json as it was."""
    run_dir = pathlib.Path(run_dir)
    check_compatible(run_dir, config)
    manager = checkpointing.checkpoint_manager(run_dir, config.max_checkpoints_to_keep)
    ledger, restore_step = _open_ledger(config, run_dir, manager, registrations)
    checkpointing.write_config(run_dir, config)
    return cls(config, run_dir, manager, ledger, restore_step)

  @property
  def metrics_path(self) -> pathlib.Path:
    return self.run_dir / "metrics.jsonl"

  def restore(self, initial_state):
    """(state, rounds done, PrivacyHistory of the rounds done) to continue from; rewrites
    metrics.jsonl to the lines of those rounds."""
    state, rounds_done, history = initial_state, 0, checkpointing.PrivacyHistory()
    if self.restore_step is not None:
      state, rounds_done, history = checkpointing.restore(self.manager, initial_state,
                                                          self.config.seed, self.restore_step)
      LOG.info("resuming %s after round %d", self.run_dir, rounds_done)
    self.records = _read_metrics(self.metrics_path, rounds_done)
    files.write_atomically(self.metrics_path,
                           "".join(reporting.json_text(r) + "\n" for r in self.records))
    return state, rounds_done, history

  def roles(self, round_index: int) -> run_ledger.RoundRoles | None:
    """The round's leader and verifiers, handed out before the round (None without a ledger)."""
    return None if self.ledger is None else run_ledger.round_roles(self.ledger, round_index)

  def latest_step(self) -> int | None:
    """The newest checkpoint's round (None: none yet)."""
    return self.manager.latest_step()

  def record(self, round_index: int, roles, sampled, out, state, record: dict,
             history) -> None:
    """Metrics line, then the checkpoint if due (before the block: the block carries its
    sha256), then the ledger block."""
    self.records.append(record)
    line = reporting.json_text(record)
    with self.metrics_path.open("a") as f:
      f.write(line + "\n")
    rounds_done = round_index + 1
    checkpoint_dir = None
    if rounds_done % self.config.checkpoint_every == 0 or rounds_done == self.config.num_rounds:
      checkpointing.save(self.manager, state, rounds_done, self.config.seed, history)
      checkpoint_dir = self.run_dir / "checkpoints" / str(rounds_done)
    if self.ledger is None:
      return
    p = self.config.privacy
    evidence = round_evidence(sampled, jax.device_get(out),
                              publish_norms=self.config.ledger.consensus.max_norm_ratio > 0)
    model = run_ledger.GlobalModelRecord(
        record["epsilon"], p.delta, p.noise_multiplier, p.clip_norm, checkpoint_dir,
        None if checkpoint_dir is not None else update_digest(state.params),
        metrics_sha256=run_ledger.text_sha256(line),
        laplace_epsilon=record.get("laplace_epsilon"))
    self.ledger = run_ledger.record_round(self.ledger, round_index, roles, evidence, model)

  def close(self, output_names) -> None:
    """The closing ledger block: sha256 of the run's outputs and its final checkpoint."""
    if self.ledger is None:
      return
    names = [n for n in output_names if (self.run_dir / n).exists()]
    steps = run_ledger.checkpoint_steps(self.run_dir / "checkpoints")
    if steps:
      names.append(f"checkpoints/{steps[-1]}")
    self.ledger = run_ledger.close_run(self.ledger, {n: self.run_dir / n for n in names})


@dataclasses.dataclass
class FollowingRecorder:
  """What a process other than 0 keeps of the run (federated/processes.py): nothing on disk.
  Its restore and roles are placeholders of the primary's shape, which the training loop
  replaces with process 0's values (processes.from_primary); the loop records rounds and
  closes the run on process 0 only."""
  config: object

  def restore(self, initial_state):
    return initial_state, 0, checkpointing.PrivacyHistory()

  def roles(self, round_index: int) -> run_ledger.RoundRoles | None:
    if not self.config.ledger.enabled:
      return None
    count = min(self.config.ledger.num_verifiers, self.config.num_hospitals)
    return run_ledger.RoundRoles(0, (0,) * count)

  def latest_step(self) -> None:
    return None
