"""ccfl-inspect (ccfl_jax.inspect_checkpoint): a real orbax checkpoint's tree, every model."""
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccfl_jax import checkpointing, inspect_checkpoint, models
from ccfl_jax.federated import server

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32


def save_run_state(run_dir, params, rounds_done=2):
  """A checkpoint as the training loop writes it: params, Adam state, round, seed, m_t."""
  state = server.init_state(params, optax.adam(1e-3))
  manager = checkpointing.checkpoint_manager(run_dir)
  checkpointing.save(manager, state, rounds_done, 0,
                     checkpointing.PrivacyHistory((3,) * rounds_done, (1.0,) * rounds_done))
  return state


def tiny_params(name):
  """Zero parameters of model `name`'s tiny version (shapes by abstract init: no FLOPs)."""
  module = models.get_model(name, **models.tiny_kwargs(name)).module
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1)))
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def param_rows(params):
  """(path as the tool prints it, shape, dtype) of every parameter array."""
  leaves = jax.tree_util.tree_flatten_with_path(dict(params=params))[0]
  return [(jax.tree_util.keystr(path), tuple(leaf.shape), np.dtype(leaf.dtype).name)
          for path, leaf in leaves]


def printed_rows(text):
  """path -> (shape, dtype, values, bytes) of the tree lines the tool printed."""
  rows = {}
  for line in text.splitlines():
    if line.startswith("  ['"):
      path, rest = line.split(maxsplit=1)
      shape, rest = rest.split(")", 1)
      dtype, values, size, _ = rest.split()
      rows[path] = (shape + ")", dtype, int(values.replace(",", "")),
                    int(size.replace(",", "")))
  return rows


@pytest.mark.parametrize("name", models.model_names())
def test_prints_every_parameter_of_every_model(name, tmp_path, capsys, monkeypatch):
  params = tiny_params(name)
  save_run_state(tmp_path / "run", params)
  monkeypatch.chdir(tmp_path)  # a relative run folder, as in the README's command
  assert inspect_checkpoint.main(["run", "--round", "2"]) == 0
  shown = capsys.readouterr().out
  rows = printed_rows(shown)
  expected = param_rows(params)
  for path, shape, dtype in expected:
    count = int(np.prod(shape, dtype=np.int64))
    assert rows[path] == (str(shape), dtype, count, count * np.dtype(dtype).itemsize), path
  total = models.parameter_count(params)
  assert total > 0
  summary = next(line for line in shown.splitlines() if "model parameters" in line)
  assert f"model parameters ({len(expected)} arrays)" in summary and f"{total:,}" in summary


def test_lists_the_whole_run_state_and_its_totals(tmp_path, capsys):
  params = tiny_params("small_cnn")
  state = save_run_state(tmp_path / "run", params, rounds_done=3)
  assert inspect_checkpoint.main([str(tmp_path / "run")]) == 0  # default: the latest checkpoint
  shown = capsys.readouterr().out
  rows = printed_rows(shown)
  assert rows["['round']"][:3] == ("()", "int64", 1)
  assert rows["['hospitals_per_round']"][:3] == ("(3,)", "int64", 3)
  assert rows["['noise_multipliers']"][:3] == ("(3,)", "float64", 3)  # σ_t per round
  opt_rows = [path for path in rows if path.startswith("['opt_state']")]
  assert len(opt_rows) == len(jax.tree.leaves(state.opt_state)) > 0
  everything = dict(params=params, opt_state=state.opt_state, round=0, seed=0,
                    hospitals_per_round=np.zeros(3), noise_multipliers=np.zeros(3))
  total = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(everything))
  total_line = next(line for line in shown.splitlines() if line.strip().startswith("total ("))
  assert f"{total:,}" in total_line
  assert sum(r[2] for r in rows.values()) == total
  assert "checkpoint " in shown and "after 3 rounds" in shown


def test_missing_round_and_usage_errors(tmp_path, capsys):
  save_run_state(tmp_path / "run", tiny_params("mlp"))
  assert inspect_checkpoint.main([str(tmp_path / "run"), "--round=5"]) == 1
  shown = capsys.readouterr().err
  assert "checkpoints/5: no such checkpoint (--round); present: 2" in shown
  assert inspect_checkpoint.main([str(tmp_path / "absent")]) == 1
  assert "absent: no such run folder" in capsys.readouterr().err
  (tmp_path / "untrained").mkdir()
  assert inspect_checkpoint.main([str(tmp_path / "untrained")]) == 1
  assert "no checkpoint (train the run first" in capsys.readouterr().err
  assert inspect_checkpoint.main([f"--run={tmp_path / 'run'}", "--round=2"]) == 0  # the flag form
  with pytest.raises(Exception, match="run folder"):
    inspect_checkpoint.main([])


def test_help_explains_each_flag():
  done = subprocess.run([sys.executable, "-m", "ccfl_jax.inspect_checkpoint", "--help"],
                        cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode in (0, 1)  # absl's --help exits 1
  assert "--round: Which checkpoint" in done.stdout and "--run: Run folder" in done.stdout
  assert "runs/<run>" in done.stdout
