"""Inference with a trained global model: load a run, COVID-19 probabilities, the patient rule.

One path for every caller: the training loop's per-round evaluation, `evaluate`, `predict`
and the tools. Images go through the model in fixed-size, zero-padded batches, so one
compiled function serves any number of images; that function is built once per model
(`functools.cache`, as big_vision's evaluators) rather than re-jitted on every call.

Per-patient score (`patient_score`): the mean of the top-k slice probabilities, with
k = ceil(top_fraction x slices), top_fraction = 0.1 by default. COVID-19 lesions occupy only
some slices of a chest CT, so the mean over all slices dilutes a clear finding, while the
single highest slice is at the mercy of one noisy prediction; the top 10% lies between the
two. A single image is its own patient (k = 1).

Importing this module loads JAX and the models, never the training loop or the ledger.
"""
import functools
import math
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ccfl_jax import checkpointing, models, tree_util
from ccfl_jax.federated import server

DEFAULT_TOP_FRACTION = 0.1


class LoadedRun(NamedTuple):
  config: object  # the run's ml_collections config (config.json)
  params: object  # the global model's parameters
  round: int      # rounds the checkpoint holds


def checkpoint_round(run_dir, round_=None) -> int:
  """`round_` if `<run_dir>/checkpoints/<round_>` exists, else FileNotFoundError naming those
  present; with round_=None the latest."""
  if not (pathlib.Path(run_dir) / "checkpoints").is_dir():  # orbax's manager would create it
    saved = []
  else:
    saved = sorted(checkpointing.checkpoint_manager(run_dir).all_steps())
  if not saved:
    raise FileNotFoundError(f"{run_dir}/checkpoints: no checkpoint to load (train the run "
                            "first: python -m ccfl_jax.main --config=...)")
  if round_ is None:
    return saved[-1]
  if round_ not in saved:
    raise FileNotFoundError(f"{run_dir}/checkpoints/{round_}: no such checkpoint (--round); "
                            f"present: {', '.join(map(str, saved))}")
  return round_


def load_run(run_dir, round_=None) -> LoadedRun:
  """The config and global params of a run's checkpoint `round_` (default: the latest)."""
  config = checkpointing.read_config(run_dir)
  step = checkpoint_round(run_dir, round_)
  template = server.initial_state(config, models.from_config(config))
  manager = checkpointing.checkpoint_manager(run_dir, config.max_checkpoints_to_keep)
  state, rounds_done, _ = checkpointing.restore(manager, template, config.seed, step)
  return LoadedRun(config, state.params, rounds_done)


@functools.cache
def batch_function(model: models.ModelSpec):
  """jit(params, images, labels) -> (per-example loss, P(COVID-19)) for one batch."""

  @jax.jit
  def batch(params, images, labels):
    outputs = model.module.apply(params, images)
    return model.loss(outputs, images, labels), model.probabilities(outputs)[:, 1]

  return batch


def _padded(array: np.ndarray, batch_size: int) -> np.ndarray:
  return tree_util.pad_leading(array, tree_util.round_up(len(array), batch_size))


def make_evaluator(model: models.ModelSpec, images, labels, batch_size: int):
  """params -> (mean loss, P(COVID-19) per image) on fixed data kept on the device."""
  n = len(labels)
  images = jnp.asarray(_padded(np.asarray(images), batch_size))
  labels = jnp.asarray(_padded(np.asarray(labels), batch_size))
  batch = batch_function(model)

  def evaluate(params):
    losses, probs = zip(*[batch(params, images[i:i + batch_size], labels[i:i + batch_size])
                          for i in range(0, len(labels), batch_size)])
    return float(jnp.mean(jnp.concatenate(losses)[:n])), np.asarray(jnp.concatenate(probs)[:n])

  return evaluate


@functools.cache
def probability_function(model: models.ModelSpec):
  """jit(params, images) -> P(COVID-19) for one batch (unlabelled images: no loss)."""

  @jax.jit
  def probabilities(params, images):
    return model.probabilities(model.module.apply(params, images))[:, 1]

  return probabilities


def covid_probabilities(model: models.ModelSpec, params, images: np.ndarray,
                        batch_size: int = 64) -> np.ndarray:
  """P(COVID-19) per image, in zero-padded batches of `batch_size` (one compiled shape)."""
  n = len(images)
  padded = jnp.asarray(_padded(np.asarray(images, np.float32), batch_size))
  probabilities = probability_function(model)
  return np.concatenate([np.asarray(probabilities(params, padded[i:i + batch_size]))
                         for i in range(0, len(padded), batch_size)])[:n]


def check_decision_rule(threshold: float, top_fraction: float = DEFAULT_TOP_FRACTION) -> None:
  """ValueError naming the flag unless the verdict threshold and the patient rule's top
  fraction are usable (evaluate and predict check them before loading anything)."""
  if not 0 <= threshold <= 1:
    raise ValueError(f"--threshold={threshold}: expected a probability in [0, 1]")
  if not 0 < top_fraction <= 1:
    raise ValueError(f"--top_fraction={top_fraction}: expected a fraction in (0, 1]")


def patient_score(probabilities, top_fraction: float = DEFAULT_TOP_FRACTION) -> float:
  """Mean of the top ceil(top_fraction * n) slice probabilities (see the module docstring)."""
  probabilities = np.sort(np.asarray(probabilities, np.float64))[::-1]
  return float(probabilities[:top_k(len(probabilities), top_fraction)].mean())


def top_k(num_slices: int, top_fraction: float) -> int:
  """How many of a patient's slices its score averages."""
  return max(1, math.ceil(top_fraction * num_slices))


def patient_level(patient_ids, labels, probabilities, top_fraction: float = DEFAULT_TOP_FRACTION):
  """(patient ids, patient labels, patient scores): positive if any slice is; score per
  `patient_score`."""
  patients = np.unique(patient_ids)
  patient_labels = np.asarray([labels[patient_ids == p].max() for p in patients])
  scores = np.asarray([patient_score(probabilities[patient_ids == p], top_fraction)
                       for p in patients])
  return patients, patient_labels, scores


NOTICE = "research use only: not a diagnostic device; verdicts are not medical advice."


def trained_on(config) -> str:
  """What a run's model saw, in one line (phantom or real CT, which dataset, image size)."""
  d = config.dataset
  kind = ("the synthetic CT phantom (no real scans: a pipeline check, not a detector)"
          if d.name == "phantom" else f"real CT: {d.name} at {d.path}")
  return (f"model {config.model.name} trained on {kind}, {d.image_size}x{d.image_size} px, "
          f"{config.num_hospitals} hospitals")


def patient_rule(top_fraction: float) -> str:
  return f"mean of the top ceil({top_fraction} x slices) slice probabilities"
