r"""A run's orbax checkpoint next to its ledger entry.

  ccfl-inspect runs/<run> [--round=N]          # or python -m ccfl_jax.inspect_checkpoint
  ccfl-inspect --run=runs/<run> [--round=N]

Prints the checkpoint's tree, one line per array: its path (['params']['params']['conv0']
['kernel'] for a model's weights; 'opt_state', 'round', 'seed' and 'hospitals_per_round'
are the rest of the run state), shape, dtype, number of values and bytes, then the totals
of the model's parameters ('params') and of the whole checkpoint. The tree is read from
orbax's metadata: no array is restored, so this is quick for any model. Then the ledger's
global_model entry for that checkpoint: whether the folder's sha256 still matches, epsilon
and delta spent, sigma, S, and the hospitals accepted that round.

The checkpoint in checkpoints/N holds the global model after N rounds (the training loop
saves step = rounds done, recorded in the ledger block of round index N - 1).
Exit status: 0 shown, 1 no such checkpoint (or an unreadable one).
"""
import logging
import pathlib
import sys

from absl import app, flags
import jax
import numpy as np
import orbax.checkpoint as ocp

from ccfl_jax import command_line
from ccfl_jax.ledger import audit
from ccfl_jax.ledger import run_ledger
from ccfl_jax.ledger.digests import checkpoint_sha256

PROGRAM = "ccfl-inspect"


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The tool's flags, on `flag_values` (absl's global FLAGS for the command line)."""
  flags.DEFINE_string(
      "run", None, "Run folder, e.g. runs/fed9 (the folder holding checkpoints/ and "
      "ledger/). May be given instead as the first positional argument.",
      flag_values=flag_values)
  flags.DEFINE_integer(
      "round", None, "Which checkpoint: checkpoints/<round>, the global model after that "
      "many rounds. Default: the latest one present.", lower_bound=0, flag_values=flag_values)


def checkpoint_tree(step_dir: pathlib.Path):
  """The saved tree's metadata (shapes and dtypes, no arrays) of orbax folder `step_dir`.

  orbax 0.12.8 needs an absolute path here: for a relative one its OCDBT read spec raises
  "Checkpoint path should be absolute", which `Checkpointer.metadata` catches and logs as a
  warning, returning a StepMetadata with `item_metadata=None` -- flattened, an empty tree
  ("total 0 0 B" for `results/fed9`). So the path is made absolute first, and a missing tree
  is an error rather than an empty listing.
  """
  item_dir = pathlib.Path(step_dir).absolute() / "default"
  metadata = ocp.StandardCheckpointer().metadata(item_dir)
  tree = getattr(metadata, "item_metadata", metadata)
  tree = getattr(tree, "tree", tree)
  if tree is None:
    raise ValueError(f"{item_dir}: orbax found no tree metadata (_METADATA) in this checkpoint")
  return tree


def _leaf_row(path, leaf) -> tuple[str, tuple, np.dtype, int]:
  shape = tuple(int(n) for n in getattr(leaf, "shape", ()))
  dtype = np.dtype(getattr(leaf, "dtype", "float32"))
  return jax.tree_util.keystr(path), shape, dtype, int(np.prod(shape, dtype=np.int64))


def _line(name: str, shape: str, dtype: str, count: int, size: int) -> str:
  return f"  {name:<60} {shape:<18} {dtype:<8} {count:>12,} {size:>14,} B"


def tree_lines(step_dir: pathlib.Path) -> list[str]:
  """One line per array (path, shape, dtype, count, bytes), then the params and total sums."""
  leaves = jax.tree_util.tree_flatten_with_path(checkpoint_tree(step_dir))[0]
  rows = [_leaf_row(path, leaf) for path, leaf in leaves]
  lines = [f"  {'path':<60} {'shape':<18} {'dtype':<8} {'values':>12} {'bytes':>16}"]
  lines += [_line(name, str(shape), dtype.name, count, count * dtype.itemsize)
            for name, shape, dtype, count in rows]
  params = [(count, count * dtype.itemsize) for name, _, dtype, count in rows
            if name.startswith("['params']")]
  lines.append(_line(f"model parameters ({len(params)} arrays)", "", "",
                     sum(c for c, _ in params), sum(b for _, b in params)))
  lines.append(_line(f"total ({len(rows)} arrays)", "", "",
                     sum(count for *_, count in rows),
                     sum(count * dtype.itemsize for _, _, dtype, count in rows)))
  return lines


def ledger_lines(run_dir: pathlib.Path, step_dir: pathlib.Path) -> list[str]:
  try:
    _, ledger = audit.load_chain(run_dir)
  except Exception as error:  # a damaged ledger is reported, the tree is still shown
    return [f"  ledger unreadable: {error}  (run python -m ccfl_jax.ledger verify {run_dir})"]
  relative = step_dir.resolve().relative_to(run_dir.resolve()).as_posix()
  entry = run_ledger.recorded_checkpoints(ledger).get(relative)
  if entry is None:
    return [f"  no block records {relative} (saved after the last block: a crash?)"]
  round_index, checkpoint = entry
  block = next(b for b in ledger.blocks if b.round == round_index)
  body = block.transactions[-1].body
  names = {t.author: f"H{i}" for i, t in enumerate(ledger.blocks[0].transactions)}
  matches = checkpoint_sha256(step_dir) == checkpoint["sha256"]
  epsilon = "inf" if body["epsilon"] is None else f"{body['epsilon']:.4g}"
  return [f"  block {block.index}, round index {round_index}, leader {names.get(block.leader)}",
          f"  sha256 {checkpoint['sha256']}: {'matches' if matches else 'DOES NOT MATCH'}",
          f"  epsilon {epsilon}, delta {body['delta']:g}, sigma {body['sigma']:g}, "
          f"S {body['clip_norm']:g}, m_t {body['num_sampled']}",
          f"  accepted ({len(body['accepted'])}): "
          + " ".join(names.get(h, h[:8]) for h in body["accepted"])]


def inspect(run_dir, round_: int | None = None) -> int:
  """Prints checkpoint `round_` (default: the latest) of `run_dir` and its ledger entry."""
  run_dir = pathlib.Path(run_dir)
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax warns about optional metadata
  steps = run_ledger.checkpoint_steps(run_dir / "checkpoints")
  step = steps[-1] if steps and round_ is None else round_
  if not run_dir.is_dir():
    print(f"error: {run_dir}: no such run folder", file=sys.stderr)
    return 1
  if not steps:
    print(f"error: {run_dir}/checkpoints: no checkpoint (train the run first: "
          "python -m ccfl_jax.main --config=...)", file=sys.stderr)
    return 1
  if step not in steps:
    print(f"error: {run_dir}/checkpoints/{step}: no such checkpoint (--round); present: "
          f"{', '.join(map(str, steps))}", file=sys.stderr)
    return 1
  step_dir = run_dir / "checkpoints" / str(step)
  print(f"checkpoint {step_dir} (the global model after {step} rounds)")
  try:
    print("\n".join(tree_lines(step_dir)))
  except (ValueError, OSError) as error:
    print(f"  unreadable: {error}")
    return 1
  print("ledger")
  print("\n".join(ledger_lines(run_dir, step_dir)))
  return 0


def _run_dir(flag_values: flags.FlagValues, positional: list[str]) -> str:
  if len(positional) > 1 or (positional and flag_values.run):
    raise app.UsageError(f"one run folder, please; got {' '.join(positional)}"
                         + (f" and --run={flag_values.run}" if flag_values.run else ""))
  if not positional and not flag_values.run:
    raise app.UsageError("give the run folder: ccfl-inspect runs/<run> [--round=N]")
  return positional[0] if positional else flag_values.run


def main(argv: list[str]) -> int:
  """The tool on `argv` (its arguments without the program name, e.g. [run, "--round", "2"]),
  parsed on flags of its own so it can be called repeatedly (tests); returns the exit status."""
  flag_values = flags.FlagValues()
  define_flags(flag_values)
  positional = flag_values([PROGRAM, *argv])[1:]
  return inspect(_run_dir(flag_values, positional), flag_values.round)


def _app_main(argv: list[str]) -> None:
  sys.exit(inspect(_run_dir(flags.FLAGS, argv[1:]), flags.FLAGS.round))


def cli() -> None:
  """Command-line entry (absl: --help lists the flags)."""
  define_flags()
  flags.FLAGS.set_default("verbosity", -1)  # absl WARNING: no JAX/orbax INFO lines
  command_line.describe_as_main(__name__)
  command_line.run(_app_main)


if __name__ == "__main__":
  cli()
