"""The federated training loop: data -> hospitals -> rounds -> metrics, checkpoints, summary.

`train_and_evaluate(config, run_dir)` is everything `python -m ccfl_jax.main` does. Each
round reads top to bottom: sample the hospitals (sampling.py), hand out the round's roles
(the ledger's verifiers), run the round (one compiled step, builders.build_round ->
federated/engine.py -> federated/client.py), evaluate the global model on the held-out
patients (inference.py), and record the round (recorder.py: metrics line, checkpoint,
ledger block). A rerun of the same command resumes from the run's latest trustworthy
checkpoint and ends with the same parameters and metrics as a run never stopped
(sampling, batches and noise are pure functions of (seed, round)).
"""
import logging
import math
import pathlib
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from ccfl_jax import (builders, configuration, environment, failpoints, files, inference, metrics,
                      models, recorder, reporting)
from ccfl_jax.data import datasets, hospitals, partition, quality, real_slices
from ccfl_jax.federated import (aggregation, attacks, engine, mesh as mesh_lib, privacy,
                                processes, sampling, server)
from ccfl_jax.ledger import run_ledger

LOG = logging.getLogger("ccfl_jax")


class NoUpdateAccepted(RuntimeError):
  """A round in which every sampled hospital's update was rejected (or non-finite): the run
  stops before recording it, its last checkpoint and ledger intact (main: one line, exit 2)."""


def no_update_accepted(round_index: int, sampled, reasons, last_step: int | None
                       ) -> NoUpdateAccepted:
  """The error for a round with no accepted update: names the round, the hospitals and why.

  The vote always keeps the best finite score (ledger/consensus.py), so this happens when
  no update could be scored: every one non-finite (NaN/Inf) or every local model's
  predictions undefined. The engine leaves the global model as it was; nothing of the round
  is written.
  """
  hospitals = [int(h) for h in sampled]
  kept = (f"its last checkpoint (checkpoints/{last_step}, after round {last_step}) and its "
          "ledger are intact" if last_step is not None
          else "no checkpoint was written yet and its ledger is intact")
  if all(r == "non_finite_update" for r in reasons):
    return NoUpdateAccepted(
        f"round {round_index + 1}: the update of every sampled hospital {hospitals} is "
        f"non-finite (NaN/Inf): local training diverged or those hospitals' data hold NaN/Inf; "
        f"the run stops, {kept}; lower local_optimizer.learning_rate (or fix the data) and "
        f"rerun with --config.resume_force=true to continue from there, or under a new "
        f"--config.run_name")
  verdicts = ", ".join(f"{h} {r}" for h, r in zip(hospitals, reasons))
  return NoUpdateAccepted(
      f"round {round_index + 1}: no update of hospitals {hospitals} was accepted ({verdicts}); "
      f"the run stops, {kept}")


class PreparedData(NamedTuple):
  hospitals: hospitals.HospitalData
  test: Any                      # CTSlices of the held-out patients
  counts: list[dict]             # patients, slices, positives per hospital and test set
  registrations: list            # ledger data registrations, one per hospital
  skipped: tuple                 # files the loader skipped (on_bad_file='skip'), with why
  warnings: list                 # the loader's and data.quality's warnings (what they refuse raises)


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
  counts = partition.describe(slices, part)
  warnings = list(real_slices.loader_warnings(slices)) + quality.check(
      counts, config.batch_size, config.dataset.path or config.dataset.name)
  return PreparedData(hospitals.stack_hospitals(slices, part.hospitals), slices.take(part.test),
                      counts, recorder.data_registrations(slices, part.hospitals), skipped,
                      warnings)


def data_line(counts: list[dict]) -> str:
  """The data in one short line: hospitals in total (min-max per hospital), then the test set."""
  hospitals_, test = counts[:-1], counts[-1]
  slices = [r["slices"] for r in hospitals_]
  return (f"{len(hospitals_)} hospitals, {sum(r['patients'] for r in hospitals_)} patients, "
          f"{sum(slices):,} slices ({min(slices)}-{max(slices)} per hospital, "
          f"{sum(r['positive_slices'] for r in hospitals_):,} positive); test "
          f"{test['patients']} patients, {test['slices']:,} slices "
          f"({test['positive_slices']:,} positive)")


def round_metrics(round_index: int, sampled: np.ndarray, out, evaluation, labels, epsilon: float,
                  config, seconds: float, backdoor_success: float | None = None,
                  laplace: dict | None = None) -> dict:
  """One metrics.jsonl line: the vote (with each hospital's verdict reason), which accepted
  updates the aggregation rule used (krum / multi_krum), local loss (the mean over the
  hospitals whose update is finite), clipping, V_c and U_s (eqs. 7-8 of the accepted
  updates, before the server's noise: engine.py step 4), test metrics, the backdoor's
  success rate (attack.kind backdoor only), privacy (under laplace_local also the fields of
  `laplace`, laplace_record), time."""
  test_loss, prob_covid = evaluation
  p = config.privacy
  finite = recorder.finite_updates(out)
  backdoor = {} if backdoor_success is None else dict(backdoor_success=backdoor_success)
  return dict(
      round=round_index + 1, sampled=sampled.tolist(),
      **recorder.vote_record(sampled, out, builders.consensus_rule(config)),
      **recorder.aggregation_record(sampled, out),
      local_loss=(float(np.mean(np.asarray(out.local_loss)[finite])) if finite.any()
                  else float("nan")),
      clipped_fraction=float(np.mean(np.asarray(out.update_norm) > p.clip_norm)),
      v_c=float(out.v_c), u_s=float(out.u_s),
      test_loss=test_loss, **metrics.classification_metrics(labels, prob_covid), **backdoor,
      epsilon=epsilon, delta=p.delta, noise_multiplier=p.noise_multiplier, **(laplace or {}),
      round_seconds=seconds)


def laplace_record(config, records: list[dict], sampled: np.ndarray, round_index: int) -> dict:
  """Under laplace_local, the metrics line's privacy fields after this round: ε composed
  per hospital over the rounds it submitted in (privacy.laplace_run_epsilon over the
  recorded rounds' `sampled` and `laplace_epsilon`, then this one), as `epsilon`, and
  mechanism, laplace_epsilon (this round's ε per submission), epsilon_delta (the δ the
  reported ε holds at: 0 by basic composition, else privacy.delta), epsilon_composition,
  epsilon_basic, epsilon_advanced and hospital_rounds (the most rounds one hospital took
  part in). `records` are the rounds before round_index, one per round (IncompatibleRun if
  not: their metrics.jsonl lines are this accountant's history)."""
  rounds = [r["sampled"] for r in records] + [sampled.tolist()]
  if (any("laplace_epsilon" not in r for r in records)
      or [r["round"] for r in records] != list(range(1, round_index + 1))):
    raise recorder.IncompatibleRun(
        "the laplace_local accountant composes the rounds recorded in metrics.jsonl, and its "
        f"lines do not cover rounds 1-{round_index} with their laplace_epsilon; restore the "
        "run's metrics.jsonl, or start a new run with --config.run_name=<new name>")
  per_round = [r["laplace_epsilon"] for r in records] + [config.privacy.laplace_epsilon]
  report = privacy.laplace_run_epsilon(rounds, per_round, config.privacy.delta)
  return dict(epsilon=report["epsilon"], mechanism="laplace_local",
              laplace_epsilon=float(config.privacy.laplace_epsilon), epsilon_delta=report["delta"],
              epsilon_composition=report["composition"], epsilon_basic=report["basic"],
              epsilon_advanced=report["advanced"], hospital_rounds=report["hospital_rounds"])


def backdoor_evaluator(config, model, test):
  """params -> the backdoor's success rate on the held-out slices with the trigger stamped
  (attacks.backdoor_success_rate: among those whose label is not the target, the fraction
  the model calls target); None unless attack.kind is backdoor."""
  a = config.attack
  if a.kind != "backdoor":
    return None
  triggered = np.asarray(attacks.stamp_trigger(test.images, a.trigger_size))
  evaluate = inference.make_evaluator(model, triggered, test.labels, config.eval_batch_size)
  return lambda params: float(attacks.backdoor_success_rate(evaluate(params)[1], test.labels,
                                                            a.target_label))


LAST_ROUNDS = 5  # a round's accuracy at threshold 0.5 swings: summaries also average the last 5


def robustness_summary(config, records: list[dict]) -> dict:
  """summary.json's `aggregation` (the rule, why its noise keeps eq. 5's accounting, the noise
  std on the update with all m_t accepted, and under krum / multi_krum how many malicious
  and honest updates it used) and, under a backdoor, `backdoor_success` (final and the mean
  of the last LAST_ROUNDS rounds)."""
  rule, p = builders.aggregation_rule(config), config.privacy
  if p.mechanism == "laplace_local":
    why = ("laplace_local: every submission already carries its hospital's Laplace noise, so "
           "any rule is post-processing of epsilon_round-DP releases")
    # Per coordinate, the mean of m_t independent Laplace(b) noises: std sqrt(2) b / m_t.
    std = (math.sqrt(2) * privacy.laplace_scale(p.clip_norm, p.laplace_epsilon)
           / config.hospitals_per_round if rule.name == "mean" else None)
  else:
    why = aggregation.check_privacy_compatible(rule, p.noise_multiplier)
    std = aggregation.noise_on_update(rule, config.hospitals_per_round, p.noise_multiplier,
                                      p.clip_norm)
  summary = dict(aggregation=dict(config.aggregation.to_dict(), privacy=why,
                                  noise_std_on_update=std))
  if records and "aggregated" in records[-1]:
    totals = {k: sum(r[k] for r in records) for k in ("malicious_aggregated", "honest_aggregated")}
    summary["aggregation"].update(totals, aggregated=sum(len(r["aggregated"]) for r in records))
  if records and "backdoor_success" in records[-1]:
    last = [r["backdoor_success"] for r in records[-LAST_ROUNDS:]]
    summary["backdoor_success"] = dict(final=records[-1]["backdoor_success"],
                                       last_rounds_mean=float(np.mean(last)),
                                       last_rounds=len(last))
  return summary


class RoundInputs(NamedTuple):
  sampled: np.ndarray              # hospital indices
  roles: Any                       # the ledger's run_ledger.RoundRoles (None without a ledger)
  prepared: engine.PreparedRound   # the round's slices, on their way to the devices


def round_inputs(config, run, run_round: engine.RoundRunner, data, base_key,
                 round_index: int) -> RoundInputs:
  """Round t's hospitals, roles and prepared slices: functions of the seed and t alone
  (sampling, the roles' eq. 10 and the batch draws), so the loop makes round t + 1's while
  round t computes."""
  sampled = sampling.sample_hospitals(config.seed, round_index, config.num_hospitals,
                                      config.hospitals_per_round)
  roles = processes.shared_roles(run.roles(round_index), run_ledger.RoundRoles)
  prepared = run_round.prepare(data, sampled, jax.random.fold_in(base_key, round_index),
                               None if roles is None else np.asarray(roles.verifiers))
  return RoundInputs(sampled, roles, prepared)


def train_and_evaluate(config, run_dir) -> dict:
  """Trains config.num_rounds federated rounds in `run_dir`; returns the summary (an empty
  dict on a process other than 0, which writes nothing: federated/processes.py)."""
  configuration.validate(config)
  processes.initialize(config.distributed)  # before JAX computes anything
  primary = processes.is_primary()  # writes the run folder and logs (processes.py)
  if primary:
    files.check_writable_folder(run_dir)  # before the data and the compile, not after
  started = time.time()
  data = prepare_data(config)
  if primary:
    LOG.info("data: %s", data_line(data.counts))
    for warning in data.warnings:
      LOG.warning("warning: %s", warning)
  model = models.from_config(config)
  mesh = mesh_lib.hospital_mesh(config.engine.num_devices)
  run_round = builders.build_round(config, model, mesh)
  device_data = engine.put_hospital_data(data.hospitals, mesh, config.engine.data_placement)
  evaluate = inference.make_evaluator(model, data.test.images, data.test.labels,
                                      config.eval_batch_size)
  backdoor_success = backdoor_evaluator(config, model, data.test)
  run = (recorder.RunRecorder.open(config, run_dir, data.registrations) if primary
         else recorder.FollowingRecorder(config))
  state, rounds_done, history = run.restore(server.initial_state(config, model))
  state, rounds_done = processes.from_primary((state, np.int32(rounds_done)))
  rounds_done = int(rounds_done)

  base_key = jax.random.key(config.seed)
  p = config.privacy
  round_times = []
  if rounds_done < config.num_rounds and primary:
    LOG.info("compiling the round (first round only) ...")
  inputs = lambda t: round_inputs(config, run, run_round, device_data, base_key, t)
  upcoming = None
  for round_index in range(rounds_done, config.num_rounds):
    tic = time.time()
    sampled, roles, prepared = upcoming or inputs(round_index)
    failpoints.hit("round", round_index + 1)
    state, pending = run_round.dispatch(state, device_data, prepared, round_index)
    # The next round's slices are gathered and sent while this one computes.
    upcoming = inputs(round_index + 1) if round_index + 1 < config.num_rounds else None
    out = run_round.finish(pending, prepared)
    jax.block_until_ready(state)
    round_times.append(time.time() - tic)
    finite = recorder.finite_updates(out)
    if not np.any(out.accepted):
      raise no_update_accepted(
          round_index, sampled,
          recorder.verdict_reasons(jax.device_get(out), builders.consensus_rule(config)),
          run.latest_step())
    if not primary:  # the round's outputs are recorded by process 0
      continue
    if not finite.all():
      LOG.warning("round %d: the update of hospital(s) %s is non-finite (NaN/Inf), rejected; "
                  "training continues without it", round_index + 1, sampled[~finite].tolist())
    # The accountant charges the m_t sampled, not the number accepted (privacy.py).
    history = history.after(len(sampled), p.noise_multiplier)  # each round at its own σ_t
    laplace = None
    if p.mechanism == "laplace_local":  # every sampled hospital released one noised update
      laplace = laplace_record(config, run.records, sampled, round_index)
      epsilon = laplace.pop("epsilon")  # the line's `epsilon`, beside the other privacy fields
    else:
      epsilon = privacy.epsilon(config.num_hospitals, history.sampled,
                                history.noise_multipliers, p.delta)
    params = processes.local_copy(state.params)
    record = round_metrics(round_index, sampled, out, evaluate(params), data.test.labels,
                           epsilon, config, round_times[-1],
                           None if backdoor_success is None else backdoor_success(params),
                           laplace)
    run.record(round_index, roles, sampled, out, state._replace(params=params), record,
               history)
    reporting.log_round(record, config.num_rounds, round_times)
  if not primary:
    return {}
  accountant = ("laplace" if p.mechanism == "laplace_local" else
                privacy.epsilon_report(config.num_hospitals, history.sampled,
                                       history.noise_multipliers, p.delta)["accountant"])
  summary = reporting.summarize(config, run.records, data.counts, data.skipped,
                                time.time() - started,
                                environment.describe(jax.devices(), jax.process_count()),
                                accountant, data.warnings,
                                models.parameter_counts(state.params,
                                                        model.trainable_mask(state.params)))
  summary.update(robustness_summary(config, run.records))
  reporting.write_outputs(pathlib.Path(run_dir), summary, run.records,
                          metrics_csv=config.metrics_csv, tensorboard=config.tensorboard)
  run.close(("summary.json", "summary.md", "curves.png", "votes.png",
             reporting.UPDATE_STATS_PLOT))
  return summary
