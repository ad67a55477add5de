"""A run's orbax checkpoint next to its ledger entry.

  python tools/inspect_checkpoint.py results/<run> [--round N]

--round N picks the folder checkpoints/N (the global model after N rounds: the training loop
saves step = rounds done, recorded in the ledger block of round index N - 1); default: the
latest folder present. Prints the tree (path, shape, dtype, parameter count, bytes) read
from orbax metadata without restoring arrays, then the ledger's global_model entry for that
folder: whether the folder's sha256 still matches, epsilon and delta spent, sigma, S, and
the hospitals accepted that round.
"""
import argparse
import logging
import pathlib
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from ccfl_jax.ledger import audit
from ccfl_jax.ledger import run_ledger
from ccfl_jax.ledger.digests import checkpoint_sha256


def tree_lines(step_dir: pathlib.Path) -> list[str]:
  metadata = ocp.StandardCheckpointer().metadata(step_dir / "default")
  leaves = jax.tree_util.tree_flatten_with_path(getattr(metadata, "item_metadata", metadata))[0]
  lines, total_count, total_bytes = [], 0, 0
  for path, leaf in leaves:
    shape, dtype = tuple(getattr(leaf, "shape", ())), np.dtype(getattr(leaf, "dtype", "float32"))
    count = int(np.prod(shape, dtype=np.int64))
    total_count, total_bytes = total_count + count, total_bytes + count * dtype.itemsize
    lines.append(f"  {jax.tree_util.keystr(path):<60} {str(shape):<18} {dtype.name:<8} "
                 f"{count:>10,} {count * dtype.itemsize:>12,} B")
  lines.append(f"  {'total':<60} {'':<18} {'':<8} {total_count:>10,} {total_bytes:>12,} B")
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


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("run_dir", type=pathlib.Path)
  parser.add_argument("--round", type=int, default=None, help="checkpoint step (rounds done)")
  args = parser.parse_args(argv)
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax warns about optional metadata
  steps = run_ledger.checkpoint_steps(args.run_dir / "checkpoints")
  step = steps[-1] if steps and args.round is None else args.round
  if step is None or step not in steps:
    print(f"no checkpoint {'' if step is None else step} in {args.run_dir}/checkpoints "
          f"(present: {list(steps)})")
    return 1
  step_dir = args.run_dir / "checkpoints" / str(step)
  print(f"checkpoint {step_dir}")
  print("\n".join(tree_lines(step_dir)))
  print("ledger")
  print("\n".join(ledger_lines(args.run_dir, step_dir)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
