"""Run state on disk with orbax: global params, server optimizer state, round, RNG seed and the
privacy accountant's history (the m_t of every round, from which ε is recomposed).

Layout of a run directory: `config.json` (the full config), `checkpoints/<round>/` (orbax),
`metrics.jsonl`, `summary.json`, `summary.md`. This module only saves and restores;
`inference.load_run` builds a run's model and restores its params for evaluation.
"""
import json
import pathlib

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ccfl_jax.federated import server


def checkpoint_manager(run_dir, max_to_keep: int = 3) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      pathlib.Path(run_dir).absolute() / "checkpoints",
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def run_state_tree(state: server.ServerState, rounds_done: int, seed: int, hospitals_per_round):
  return dict(params=state.params, opt_state=state.opt_state,
              round=np.asarray(rounds_done, np.int64), seed=np.asarray(seed, np.int64),
              hospitals_per_round=np.asarray(hospitals_per_round, np.int64).reshape(rounds_done))


def save(manager: ocp.CheckpointManager, state, rounds_done, seed, hospitals_per_round):
  tree = run_state_tree(jax.device_get(state), rounds_done, seed, hospitals_per_round)
  manager.save(rounds_done, args=ocp.args.StandardSave(tree))
  manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, template_state, seed: int, step: int | None = None):
  """(state, rounds_done, hospitals_per_round) of checkpoint `step` (default: latest), or None."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          run_state_tree(template_state, step, seed, np.zeros(step)))
  tree = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  if int(tree["seed"]) != seed:
    raise ValueError(f"config.seed: the run in {manager.directory} was made with seed "
                     f"{int(tree['seed'])}, not {seed}; use another run_name to start anew")
  return (server.ServerState(tree["params"], tree["opt_state"]), int(tree["round"]),
          [int(m) for m in tree["hospitals_per_round"]])


def write_config(run_dir, config) -> None:
  pathlib.Path(run_dir).mkdir(parents=True, exist_ok=True)
  (pathlib.Path(run_dir) / "config.json").write_text(config.to_json(indent=2, sort_keys=True))


def read_config(run_dir) -> ml_collections.ConfigDict:
  path = pathlib.Path(run_dir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: no config.json; is {run_dir} a ccfl_jax run directory?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))
