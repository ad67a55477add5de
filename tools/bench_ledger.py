"""Ledger overhead per round at H = 9, and `verify` throughput on a 1,000-round ledger.

  python tools/bench_ledger.py [--round_seconds=S] [--rounds=1000] [--out=results/bench_ledger.md]

Per round, the ledger's host work is timed piece by piece on the small CNN's shapes
(~60k float32 parameters): an update digest per sampled hospital, sha256 of an orbax
checkpoint of that tree, and record_round (signing 9 local updates, 3 votes, round_start and
global_model, sealing with 8-bit proof of work, validating the block, writing and fsyncing
its record). It is compared with the time of one federated round: measured by running the
training loop (configs/fed9.py, phantom data, 9 hospitals x 5 local steps, 64x64) for a
few rounds unless --round_seconds is given. Then a ledger of --rounds rounds is built
(digests stand in for updates, no checkpoints) and `verify` and resume (open_run_ledger)
are timed on it.
"""
import logging
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags

from ccfl_jax.ledger import audit
from ccfl_jax.ledger import run_ledger
from ccfl_jax.ledger import simulate
from ccfl_jax.ledger.digests import checkpoint_digest, update_digest

H, PER_ROUND = 9, 9

flags.DEFINE_float(
    "round_seconds", None,
    "Seconds of one federated round to compare the ledger's work with; unset: measured by "
    "running configs/fed9.py for 4 rounds (the median of rounds 2-4).")
flags.DEFINE_integer("rounds", 1000,
                     "Rounds of the long ledger on which verify and resume are timed.")
flags.DEFINE_integer(
    "per_round_samples", 20, "Rounds whose per-round ledger work is timed (medians are reported).")
flags.DEFINE_string("out", None, "Markdown report to write; unset: only printed.")


def timed(fn, *args, **kwargs):
  tic = time.perf_counter()
  result = fn(*args, **kwargs)
  return result, time.perf_counter() - tic


def per_round_costs(work: pathlib.Path, rounds: int) -> dict[str, float]:
  """Median seconds of each piece of the ledger's per-round work."""
  run = run_ledger.open_run_ledger(work / "run", seed=0, num_hospitals=H)
  manager = ocp.CheckpointManager(work / "run" / "checkpoints",
                                  options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
  costs = {"update digests (9)": [], "checkpoint sha256": [], "record_round": []}
  for r in range(rounds):
    synthetic = simulate.synthetic_round(run, r, PER_ROUND)
    manager.save(r, args=ocp.args.StandardSave(synthetic.updates[0]))
    manager.wait_until_finished()
    step_dir = manager.directory / str(r)
    digests, seconds = timed(lambda: [update_digest(u) for u in synthetic.updates])
    costs["update digests (9)"].append(seconds)
    costs["checkpoint sha256"].append(timed(checkpoint_digest, step_dir)[1])
    records = simulate.round_records(synthetic, simulate.round_epsilon(run, synthetic), step_dir,
                                     update_digests=tuple(digests))
    run, seconds = timed(run_ledger.record_round, run, r, run_ledger.round_roles(run, r),
                         *records)
    costs["record_round"].append(seconds)
  manager.close()
  return {name: statistics.median(values) for name, values in costs.items()}


def measured_round_seconds(work: pathlib.Path, rounds: int = 4) -> float:
  """Median wall time of rounds 2.. of the training loop on configs/fed9.py (round 1 compiles)."""
  import json
  from ccfl_jax import training
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  from configs import fed9
  config = fed9.get_config()
  config.num_rounds = rounds
  config.checkpoint_every = rounds
  training.train_and_evaluate(config, work / "fed9")
  lines = (work / "fed9" / "metrics.jsonl").read_text().splitlines()
  return statistics.median(json.loads(line)["round_seconds"] for line in lines[1:])


def long_ledger(work: pathlib.Path, rounds: int) -> tuple[pathlib.Path, float]:
  run = run_ledger.open_run_ledger(work / "long", seed=0, num_hospitals=H)
  rng = np.random.default_rng(0)
  tic = time.perf_counter()
  for r in range(rounds):
    synthetic = simulate.synthetic_round(run, r, PER_ROUND)
    run = run_ledger.record_round(run, r, run_ledger.round_roles(run, r),
                                  *_cheap_records(run, synthetic, rng))
  return run.run_dir, time.perf_counter() - tic


def _cheap_records(run, synthetic, rng):
  """record_round's records without hashing 9 x 60k parameters (the build is not timed)."""
  return simulate.round_records(synthetic, simulate.round_epsilon(run, synthetic), None,
                                update_digests=tuple(rng.bytes(32).hex() for _ in range(9)),
                                update_norms=None, cosines=None, params_digest=None)


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  args = flags.FLAGS
  logging.root.setLevel(logging.WARNING)  # as before absl's app.run set it to INFO
  logging.getLogger("absl").setLevel(logging.ERROR)
  with tempfile.TemporaryDirectory() as tmp:
    work = pathlib.Path(tmp)
    costs = per_round_costs(work, args.per_round_samples)
    if args.round_seconds is None:
      round_seconds, source = measured_round_seconds(work), "measured: configs/fed9.py, 4 rounds"
    else:
      round_seconds, source = args.round_seconds, "given with --round_seconds"
    run_dir, build_seconds = long_ledger(work, args.rounds)
    report, verify_seconds = timed(audit.verify_run, run_dir)
    assert report.ok, report.failure
    _, open_seconds = timed(run_ledger.open_run_ledger, run_dir, 0, H)
  ledger_total = sum(costs.values())
  lines = [
      "# Ledger benchmark (tools/bench_ledger.py)", "",
      f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python "
      f"{platform.python_version()}; shared with other jobs, so +-30%.", "",
      f"## Per-round overhead at H = {H} (m_t = {PER_ROUND}, 3 verifiers, PoW 8 bits), "
      f"median of {args.per_round_samples} rounds", "",
      "| piece | ms per round |", "|---|---:|"]
  lines += [f"| {name} | {1e3 * seconds:.1f} |" for name, seconds in costs.items()]
  lines += [f"| **ledger total** | **{1e3 * ledger_total:.1f}** |",
            f"| federated round ({source}) | {1e3 * round_seconds:.0f} |",
            f"| **ledger share of round time** | **{100 * ledger_total / round_seconds:.2f}%** "
            "(target <= 5%) |", "",
            f"## verify on a {args.rounds}-round ledger", "",
            f"- {report.blocks} blocks, {report.transactions} transactions (each signature "
            f"checked): verify {verify_seconds:.1f} s = **{report.blocks / verify_seconds:.0f} "
            f"blocks/s** ({report.transactions / verify_seconds:.0f} transactions/s)",
            f"- resume (open_run_ledger: read, replay and check the whole chain): "
            f"{open_seconds:.1f} s",
            f"- building it with record_round: {build_seconds:.1f} s "
            f"({1e3 * build_seconds / args.rounds:.1f} ms per round)", ""]
  text = "\n".join(lines)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text)
  return 0


if __name__ == "__main__":
  app.run(main)
