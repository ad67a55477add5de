"""Run state on disk with orbax: global params, server optimizer state, round, RNG seed and the
privacy accountant's history (the m_t and σ_t of every round, from which ε is recomposed:
a run resumed with `resume_force` and another σ charges each round at its own σ_t).

Layout of a run directory: `config.json` (the full config), `checkpoints/<round>/` (orbax),
`metrics.jsonl`, `summary.json`, `summary.md`. This module only saves and restores;
`inference.load_run` builds a run's model and restores its params for evaluation.
"""
import json
import pathlib
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ccfl_jax import failpoints
from ccfl_jax.federated import server
from ccfl_jax.files import write_atomically


def checkpoint_manager(run_dir, max_to_keep: int = 3) -> ocp.CheckpointManager:
  """The run's checkpoints. With several processes only process 0 opens it (it writes the
  run folder: federated/processes.py) and saves the host copy of the replicated state, so
  orbax is told process 0 is its only participant (no barrier waits for the others)."""
  directory = pathlib.Path(run_dir).absolute() / "checkpoints"
  if jax.process_count() == 1:
    return ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))
  directory.mkdir(parents=True, exist_ok=True)  # orbax refuses create=True here
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=False,
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          primary_host=0, active_processes={0})))


class PrivacyHistory(NamedTuple):
  """What the accountant composes: per round done, the m_t sampled and the σ_t applied."""
  sampled: tuple[int, ...] = ()
  noise_multipliers: tuple[float, ...] = ()

  def after(self, sampled: int, noise_multiplier: float) -> "PrivacyHistory":
    return PrivacyHistory(self.sampled + (int(sampled),),
                          self.noise_multipliers + (float(noise_multiplier),))


def run_state_tree(state: server.ServerState, rounds_done: int, seed: int,
                   history: PrivacyHistory):
  return dict(params=state.params, opt_state=state.opt_state,
              round=np.asarray(rounds_done, np.int64), seed=np.asarray(seed, np.int64),
              hospitals_per_round=np.asarray(history.sampled, np.int64).reshape(rounds_done),
              noise_multipliers=np.asarray(history.noise_multipliers,
                                           np.float64).reshape(rounds_done))


def save(manager: ocp.CheckpointManager, state, rounds_done, seed, history: PrivacyHistory):
  tree = run_state_tree(jax.device_get(state), rounds_done, seed, history)
  manager.save(rounds_done, args=ocp.args.StandardSave(tree))
  failpoints.hit("checkpoint_write", rounds_done)  # orbax may still be writing (async)
  manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, template_state, seed: int, step: int | None = None):
  """(state, rounds_done, PrivacyHistory) of checkpoint `step` (default: latest), or None."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  blank = PrivacyHistory((0,) * step, (0.0,) * step)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          run_state_tree(template_state, step, seed, blank))
  tree = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  if int(tree["seed"]) != seed:
    raise ValueError(f"config.seed: the run in {manager.directory} was made with seed "
                     f"{int(tree['seed'])}, not {seed}; use another run_name to start anew")
  history = PrivacyHistory(tuple(int(m) for m in tree["hospitals_per_round"]),
                           tuple(float(s) for s in tree["noise_multipliers"]))
  return server.ServerState(tree["params"], tree["opt_state"]), int(tree["round"]), history


def config_text(config) -> str:
  """What config.json holds (and the ledger records the sha256 of)."""
  return config.to_json(indent=2, sort_keys=True)


def write_config(run_dir, config) -> None:
  write_atomically(pathlib.Path(run_dir) / "config.json", config_text(config))


def read_config(run_dir) -> ml_collections.ConfigDict:
  path = pathlib.Path(run_dir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: no config.json; is {run_dir} a ccfl_jax run directory?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))
