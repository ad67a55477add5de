"""The federated training loop: data -> hospitals -> rounds -> metrics, checkpoints, summary.

`train_and_evaluate(config, run_dir)` is everything `python -m ccfl_jax.main` does. A rerun
of the same command resumes from the run's latest checkpoint and ends with the same
parameters and metrics as a run never stopped (sampling, batches and noise are pure
functions of (seed, round)).

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
import json
import logging
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ccfl_jax import checkpointing, configuration, metrics, reporting
from ccfl_jax.data import datasets, hospitals, partition, real_slices
from ccfl_jax.federated import attacks, engine, mesh as mesh_lib, privacy, sampling, server
from ccfl_jax.ledger import run_ledger, store as ledger_store
from ccfl_jax.ledger.consensus import ConsensusRule
from ccfl_jax.ledger.digests import update_digest
from ccfl_jax.models import get_model, uses_convolutions

LOG = logging.getLogger("ccfl_jax")


def model_kwargs(config) -> dict:
  return {k: tuple(v) if isinstance(v, list) else v
          for k, v in config.model.items() if k != "name"}


def build_model(config):
  return get_model(config.model.name, **model_kwargs(config))


def _optimizer_kwargs(block) -> dict:
  kwargs = {k: v for k, v in block.items() if k not in ("name", "learning_rate")}
  if block.name != "sgd":
    kwargs.pop("momentum", None)
  return kwargs


def local_optimizer(config):
  c = config.local_optimizer
  return server.make_optimizer(c.name, c.learning_rate, **_optimizer_kwargs(c))


def server_optimizer(config):
  c = config.server_optimizer
  return server.make_optimizer(c.name, c.learning_rate, **_optimizer_kwargs(c))


def initial_server_state(config, model) -> server.ServerState:
  size = config.dataset.image_size
  params = model.module.init(jax.random.key(config.seed), jnp.zeros((1, size, size, 1)))
  return server.init_state(params, server_optimizer(config))


def consensus_rule(config) -> ConsensusRule | None:
  """The MAE vote the ledger records (eqs. 14-15); None without a ledger: every update counts."""
  if not config.ledger.enabled:
    return None
  return ConsensusRule(**config.ledger.consensus.to_dict())


def attack(config) -> attacks.Attack:
  return attacks.Attack(config.attack.kind, config.attack.num_malicious, config.attack.scale)


def round_settings(config, model) -> engine.RoundSettings:
  unroll = config.engine.unroll_local_steps
  return engine.RoundSettings(
      model=model, local_optimizer=local_optimizer(config),
      server_optimizer=server_optimizer(config), local_steps=config.local_steps,
      batch_size=config.batch_size, clip_norm=config.privacy.clip_norm,
      noise_multiplier=config.privacy.noise_multiplier,
      unroll_local_steps=(mesh_lib.default_unroll_local_steps() if unroll == "auto"
                          else configuration.as_bool(unroll)),
      consensus=consensus_rule(config), validation_size=config.ledger.validation_size,
      attack=attack(config), return_updates=config.ledger.enabled)


def hospital_axis(config, model) -> str:
  return mesh_lib.default_hospital_axis(uses_convolutions(model, config.dataset.image_size))


def build_round(config, model, mesh):
  settings = round_settings(config, model)
  if config.engine.kind == "sequential":
    return engine.sequential_round(settings)
  axis = config.engine.hospital_axis
  return engine.compiled_round(settings, mesh,
                               hospital_axis(config, model) if axis == "auto" else axis)


def make_evaluator(model, images, labels, batch_size: int):
  """params -> (mean test loss, COVID probability per test slice), in fixed-size batches."""
  n = len(labels)
  padded = -(-n // batch_size) * batch_size
  images = jnp.asarray(np.concatenate([images, np.zeros((padded - n,) + images.shape[1:],
                                                        images.dtype)]))
  labels = jnp.asarray(np.concatenate([labels, np.zeros(padded - n, labels.dtype)]))

  @jax.jit
  def batch_eval(params, batch_images, batch_labels):
    outputs = model.module.apply(params, batch_images)
    return model.loss(outputs, batch_images, batch_labels), model.probabilities(outputs)[:, 1]

  def evaluate(params):
    losses, probs = zip(*[batch_eval(params, images[i:i + batch_size], labels[i:i + batch_size])
                          for i in range(0, padded, batch_size)])
    return float(jnp.mean(jnp.concatenate(losses)[:n])), np.asarray(jnp.concatenate(probs)[:n])

  return evaluate


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


class PreparedData(NamedTuple):
  hospitals: hospitals.HospitalData
  test: Any                      # CTSlices of the held-out patients
  counts: list[dict]             # patients, slices, positives per hospital and test set
  registrations: list            # ledger data registrations, one per hospital
  skipped: tuple                 # files the loader skipped (on_bad_file='skip'), with why


def prepare_data(config) -> PreparedData:
  """Dataset -> patient-level partition -> hospital arrays, test slices and their counts."""
  slices = datasets.load_dataset(config.dataset, config.seed)
  skipped = real_slices.skipped_files(slices)
  for item in skipped:
    LOG.warning("skipped %s: %s", item.path, item.problem)
  p = config.partition
  part = partition.partition(slices, config.num_hospitals, p.kind, config.seed,
                             test_fraction=p.test_fraction, alpha=p.alpha,
                             use_official_split=p.use_official_split)
  return PreparedData(hospitals.stack_hospitals(slices, part.hospitals), slices.take(part.test),
                      partition.describe(slices, part),
                      data_registrations(slices, part.hospitals), skipped)


def _read_metrics(path: pathlib.Path, rounds_done: int) -> list[dict]:
  """Metrics of the rounds a checkpoint covers; later lines (after a crash) are recomputed."""
  if not path.exists():
    return []
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [r for r in records if r["round"] <= rounds_done]


def open_ledger(config, run_dir: pathlib.Path, manager, registrations):
  """The run's ledger, opened (or reloaded and verified) with the hospitals' data registered,
  and the orbax step to restore (None: initial model), per run_ledger's resume plan."""
  if not config.ledger.enabled:
    return None, manager.latest_step()
  fresh = not ledger_store.ledger_dir(run_dir).exists()
  if fresh and manager.latest_step() is not None:
    # Deleting checkpoints nobody vouches for would destroy a run made without a ledger.
    raise ValueError(f"{run_dir} has checkpoints but no ledger: it was made with "
                     f"ledger.enabled=False; resume it so, or use another run_name")
  c = config.ledger
  run = run_ledger.open_run_ledger(run_dir, config.seed, config.num_hospitals,
                                   difficulty=c.difficulty, num_verifiers=c.num_verifiers,
                                   consensus=consensus_rule(config))
  run = run_ledger.register_data(run, registrations)
  plan = run_ledger.plan_resume(run, run_dir / "checkpoints")
  for step in plan.unrecorded_steps:  # written just before a crash, never recorded
    LOG.info("deleting checkpoint %d: no ledger block vouches for it", step)
    manager.delete(step)
  run = run_ledger.rollback_to_round(run, plan.restore_round,
                                     reason=f"resume from checkpoint {plan.restore_step}")
  return run, plan.restore_step


def record_round(run, round_index: int, sampled, out, state, epsilon: float, config,
                 checkpoint_dir):
  """Appends round `round_index`'s block: updates, votes, accepted set, global model."""
  if run is None:
    return None
  updates = jax.device_get(out.updates)
  digests = [update_digest(jax.tree.map(lambda u, i=i: u[i], updates))
             for i in range(len(sampled))]
  p = config.privacy
  # Publish a hospital's pre-clipping norm only where the magnitude check needs it: like the
  # MAEs, it is not covered by the DP guarantee (ledger/consensus.py).
  publish_norms = config.ledger.consensus.max_norm_ratio > 0
  return run_ledger.record_round(
      run, round_index, sampled=sampled.tolist(), update_digests=digests,
      local_maes=np.asarray(out.self_mae), mae_matrix=np.asarray(out.mae),
      vote_scores=np.asarray(out.vote_scores), accepted=np.asarray(out.accepted),
      update_norms=np.asarray(out.update_norm) if publish_norms else None,
      cosines=None if out.cosines is None else np.asarray(out.cosines),
      epsilon=epsilon, delta=p.delta, sigma=p.noise_multiplier, clip_norm=p.clip_norm,
      checkpoint_dir=checkpoint_dir,
      params_digest=None if checkpoint_dir is not None else update_digest(state.params))


def vote_record(sampled, out) -> dict:
  """Per-round metrics of the vote and of the attack (malicious = the attack's hospitals)."""
  accepted = np.asarray(out.accepted, bool)
  malicious = np.asarray(out.malicious, bool)
  return dict(
      accepted=sampled[accepted].tolist(), rejected=sampled[~accepted].tolist(),
      malicious_accepted=int(np.sum(malicious & accepted)),
      malicious_rejected=int(np.sum(malicious & ~accepted)),
      honest_rejected=int(np.sum(~malicious & ~accepted)),
      vote_scores=None if out.vote_scores is None else np.asarray(out.vote_scores).tolist(),
      update_norms=np.asarray(out.update_norm).tolist(),
      cosines=None if out.cosines is None else np.asarray(out.cosines).tolist())


def train_and_evaluate(config, run_dir) -> dict:
  """Trains config.num_rounds federated rounds in `run_dir`; returns the summary."""
  configuration.validate(config)
  run_dir = pathlib.Path(run_dir)
  checkpointing.write_config(run_dir, config)
  started = time.time()
  data, test, data_counts, registrations, skipped = prepare_data(config)
  LOG.info("data: %s", "; ".join(f"{r['name']}: {r['patients']} patients, {r['slices']} "
                                     f"slices, {r['positive_slices']} positive" for r in data_counts))
  model = build_model(config)
  mesh = mesh_lib.hospital_mesh(config.engine.num_devices)
  run_round = build_round(config, model, mesh)
  device_data = engine.put_hospital_data(data, mesh, config.engine.kind)
  evaluate = make_evaluator(model, test.images, test.labels, config.eval_batch_size)
  manager = checkpointing.checkpoint_manager(run_dir, config.max_checkpoints_to_keep)
  ledger, restore_step = open_ledger(config, run_dir, manager, registrations)

  state = initial_server_state(config, model)
  restored = (None if restore_step is None
              else checkpointing.restore(manager, state, config.seed, restore_step))
  rounds_done, history = 0, []
  if restored is not None:
    state, rounds_done, history = restored
    LOG.info("resuming %s after round %d", run_dir, rounds_done)
  metrics_path = run_dir / "metrics.jsonl"
  records = _read_metrics(metrics_path, rounds_done)
  metrics_path.write_text("".join(reporting.json_text(r) + "\n" for r in records))

  base_key = jax.random.key(config.seed)
  p = config.privacy
  round_times = []
  for round_index in range(rounds_done, config.num_rounds):
    tic = time.time()
    sampled = sampling.sample_hospitals(config.seed, round_index, config.num_hospitals,
                                        config.hospitals_per_round)
    verifiers = (None if ledger is None
                 else np.asarray(run_ledger.round_roles(ledger, round_index).verifiers))
    state, out = run_round(state, device_data, sampled, jax.random.fold_in(base_key, round_index),
                           verifiers)
    jax.block_until_ready(state)
    round_times.append(time.time() - tic)
    # The accountant charges the m_t sampled, not the number accepted (privacy.py).
    history.append(len(sampled))
    epsilon = privacy.epsilon(config.num_hospitals, history, p.noise_multiplier, p.delta)
    test_loss, prob_covid = evaluate(state.params)
    record = dict(
        round=round_index + 1, sampled=sampled.tolist(), **vote_record(sampled, out),
        local_loss=float(np.mean(out.local_loss)),
        clipped_fraction=float(np.mean(np.asarray(out.update_norm) > p.clip_norm)),
        test_loss=test_loss, **metrics.classification_metrics(test.labels, prob_covid),
        epsilon=epsilon, delta=p.delta, round_seconds=round_times[-1])
    records.append(record)
    with metrics_path.open("a") as f:
      f.write(reporting.json_text(record) + "\n")
    checkpoint_dir = None
    if (round_index + 1) % config.checkpoint_every == 0 or round_index + 1 == config.num_rounds:
      # Before the block: the block carries the checkpoint's sha256.
      checkpointing.save(manager, state, round_index + 1, config.seed, history)
      checkpoint_dir = run_dir / "checkpoints" / str(round_index + 1)
    ledger = record_round(ledger, round_index, sampled, out, state, epsilon, config,
                          checkpoint_dir)
    reporting.log_round(record, config.num_rounds, round_times)
  summary = reporting.summarize(config, records, data_counts, skipped, time.time() - started,
                                jax.devices())
  reporting.write_outputs(run_dir, summary, records)
  return summary
