"""The federated training loop: data -> hospitals -> rounds -> metrics, checkpoints, summary.

`train_and_evaluate(config, run_dir)` is everything `python -m ccfl_jax.main` does. A rerun
of the same command resumes from the run's latest checkpoint and ends with the same
parameters and metrics as a run never stopped (sampling, batches and noise are pure
functions of (seed, round)).
"""
import json
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from ccfl_jax import checkpointing, configuration, metrics, reporting
from ccfl_jax.data import datasets, hospitals, partition
from ccfl_jax.federated import engine, mesh as mesh_lib, privacy, sampling, server
from ccfl_jax.models import get_model

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


def round_settings(config, model) -> engine.RoundSettings:
  unroll = config.engine.unroll_local_steps
  return engine.RoundSettings(
      model=model, local_optimizer=local_optimizer(config),
      server_optimizer=server_optimizer(config), local_steps=config.local_steps,
      batch_size=config.batch_size, clip_norm=config.privacy.clip_norm,
      noise_multiplier=config.privacy.noise_multiplier,
      unroll_local_steps=(mesh_lib.default_unroll_local_steps() if unroll == "auto"
                          else configuration.as_bool(unroll)))


def build_round(config, model, mesh):
  settings = round_settings(config, model)
  if config.engine.kind == "sequential":
    return engine.sequential_round(settings)
  axis = config.engine.hospital_axis
  return engine.compiled_round(settings, mesh,
                               mesh_lib.default_hospital_axis() if axis == "auto" else axis)


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


def prepare_data(config):
  """Dataset -> patient-level partition -> (hospital arrays, test slices, per-split counts)."""
  slices = datasets.load_dataset(config.dataset, config.seed)
  p = config.partition
  part = partition.partition(slices, config.num_hospitals, p.kind, config.seed,
                             test_fraction=p.test_fraction, alpha=p.alpha,
                             use_official_split=p.use_official_split)
  return (hospitals.stack_hospitals(slices, part.hospitals), slices.take(part.test),
          partition.describe(slices, part))


def _read_metrics(path: pathlib.Path, rounds_done: int) -> list[dict]:
  """Metrics of the rounds a checkpoint covers; later lines (after a crash) are recomputed."""
  if not path.exists():
    return []
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [r for r in records if r["round"] <= rounds_done]


def train_and_evaluate(config, run_dir) -> dict:
  """Trains config.num_rounds federated rounds in `run_dir`; returns the summary."""
  configuration.validate(config)
  run_dir = pathlib.Path(run_dir)
  checkpointing.write_config(run_dir, config)
  started = time.time()
  data, test, data_counts = prepare_data(config)
  LOG.info("data: %s", "; ".join(f"{r['name']}: {r['patients']} patients, {r['slices']} "
                                     f"slices, {r['positive_slices']} positive" for r in data_counts))
  model = build_model(config)
  mesh = mesh_lib.hospital_mesh(config.engine.num_devices)
  run_round = build_round(config, model, mesh)
  device_data = engine.put_hospital_data(data, mesh, config.engine.kind)
  evaluate = make_evaluator(model, test.images, test.labels, config.eval_batch_size)
  manager = checkpointing.checkpoint_manager(run_dir, config.max_checkpoints_to_keep)

  state = initial_server_state(config, model)
  restored = checkpointing.restore(manager, state, config.seed)
  rounds_done, history = 0, []
  if restored is not None:
    state, rounds_done, history = restored
    LOG.info("resuming %s after round %d", run_dir, rounds_done)
  metrics_path = run_dir / "metrics.jsonl"
  records = _read_metrics(metrics_path, rounds_done)
  metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))

  base_key = jax.random.key(config.seed)
  p = config.privacy
  round_times = []
  for round_index in range(rounds_done, config.num_rounds):
    tic = time.time()
    sampled = sampling.sample_hospitals(config.seed, round_index, config.num_hospitals,
                                        config.hospitals_per_round)
    state, out = run_round(state, device_data, sampled, jax.random.fold_in(base_key, round_index))
    jax.block_until_ready(state)
    round_times.append(time.time() - tic)
    history.append(len(sampled))
    test_loss, prob_covid = evaluate(state.params)
    record = dict(
        round=round_index + 1, sampled=sampled.tolist(),
        local_loss=float(np.mean(out.local_loss)),
        clipped_fraction=float(np.mean(np.asarray(out.update_norm) > p.clip_norm)),
        test_loss=test_loss, **metrics.classification_metrics(test.labels, prob_covid),
        epsilon=privacy.epsilon(config.num_hospitals, history, p.noise_multiplier, p.delta),
        delta=p.delta, round_seconds=round_times[-1])
    records.append(record)
    with metrics_path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if (round_index + 1) % config.checkpoint_every == 0 or round_index + 1 == config.num_rounds:
      checkpointing.save(manager, state, round_index + 1, config.seed, history)
    reporting.log_round(record, config.num_rounds, round_times)
  summary = reporting.summarize(config, records, data_counts, time.time() - started,
                                jax.devices())
  reporting.write_outputs(run_dir, summary, records)
  return summary

