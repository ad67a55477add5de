"""Ledger, hashing and checkpoint time per round at m_t in {9, 100, 1000}, and `verify` throughput.

  python tools/bench_ledger.py [--round_seconds=S] [--sizes=9,100,1000] [--out=results/bench_ledger]
  python tools/bench_ledger.py --report_only [--out=results/bench_ledger]   # md from the json

Writes <out>.json (every number) and <out>.md (generated from the json alone, the machine
in its header). For each size m_t (every hospital sampled: H = m_t, 3 verifiers, proof of
work 8 bits, keys derived from the seed, so nothing is written to a keystore), the ledger's
host work of one round is timed piece by piece on the small CNN's shapes (~60k float32
parameters per update): the sampled hospitals' update digests (digests.update_digests of the
stacked updates, as the recorder computes them), sha256 of an orbax checkpoint
of one such tree, and record_round (signing m_t local updates, 3 votes, round_start and
global_model, sealing, validating the block, writing and fsyncing its record), the last also
split into its steps (signing, sealing, validating, writing: timed on the same inputs
outside record_round). The round's evidence is simulate.synthetic_round's; at m_t > 100 one
synthetic round's evidence is reused for every timed round (building one takes ~20 s there,
most of it the median cosines, and is not ledger work).

The ledger's time is compared with one federated round: at H = 9 measured by running the
training loop (configs/fed9.py, phantom data, 9 hospitals x 5 local steps, 64x64) for a few
rounds unless --round_seconds is given; at m_t > 9 the H = 9 round scaled by m_t / 9 (each
sampled hospital trains its own K local steps, so the round's compute grows with m_t; an
assumption, stated in the report). Each row also gives the round time below which the
ledger would exceed 5% of it.

Then a ledger of --rounds[m_t] rounds is built per size (digests stand in for updates, no
checkpoints) and `verify` (audit.verify_run: every record, link, signature and rule) and
resume (open_run_ledger: read, replay and check the whole chain) are timed on it.
"""
import dataclasses
import json
import logging
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags

from ccfl_jax.ledger import audit
from ccfl_jax.ledger import block as block_lib
from ccfl_jax.ledger import identity
from ccfl_jax.ledger import run_ledger
from ccfl_jax.ledger import simulate
from ccfl_jax.ledger import store
from ccfl_jax.ledger import validate
from ccfl_jax.ledger.digests import checkpoint_digest, update_digests

# m_t -> (rounds timed per round, rounds of the long ledger verify is timed on). At m_t = 9 250, not
# 1000: privacy.epsilon (PLD, m_t = H, sigma 1) decreases at round 293 (744.98 -> 732.31), which
# validate refuses ("epsilon decreased"), so no honest ledger of that shape outlives round 292.
DEFAULT_PLAN = {9: (20, 250), 100: (10, 100), 1000: (5, 20)}
REUSE_EVIDENCE_ABOVE = 100
SHARE_TARGET = 0.05


def define_flags():
  flags.DEFINE_float(
      "round_seconds", None,
      "Seconds of one federated round at H = 9 to compare the ledger's work with; unset: "
      "measured by running configs/fed9.py for 4 rounds (the median of rounds 2-4).")
  flags.DEFINE_list("sizes", [str(m) for m in DEFAULT_PLAN], "m_t values (H = m_t) to time.")
  flags.DEFINE_integer("rounds", None, "Rounds of every long ledger (unset: 250 at m_t = 9, "
                       "100 at 100, 20 at 1000).")
  flags.DEFINE_integer("per_round_samples", None,
                       "Rounds whose per-round ledger work is timed (unset: 20, 10, 5 by size; "
                       "medians are reported).")
  flags.DEFINE_string("out", None, "Write <out>.json and <out>.md; unset: only printed.")
  flags.DEFINE_bool("report_only", False, "Regenerate <out>.md from <out>.json and exit.")
  flags.DEFINE_string("before", None, "A json this tool wrote earlier (e.g. before a change): its "
                      "per-round and verify numbers are kept in <out>.json and shown beside.")
  flags.DEFINE_string("before_label", "an earlier run", "What --before measured.")


def timed(fn, *args, **kwargs):
  tic = time.perf_counter()
  result = fn(*args, **kwargs)
  return result, time.perf_counter() - tic


def plan_for(m_t: int, args) -> tuple[int, int]:
  samples, rounds = DEFAULT_PLAN.get(m_t, (5, 20))
  return args.per_round_samples or samples, args.rounds or rounds


class Evidence:
  """Synthetic rounds of m_t hospitals (H = m_t); one reused for every round if `reuse`."""

  def __init__(self, m_t: int, reuse: bool):
    self.m_t, self.reuse, self.cache = m_t, reuse, None

  def round(self, run, r) -> simulate.SyntheticRound:
    if not self.reuse:
      return simulate.synthetic_round(run, r, self.m_t)
    if self.cache is None:
      self.cache = simulate.synthetic_round(run, 0, self.m_t)
    return self.cache


def record_round_steps(run, r, roles, records) -> dict[str, float]:
  """record_round's steps, each timed on the inputs it would get (nothing is persisted)."""
  transactions, sign = timed(run_ledger.round_transactions, run, r, roles, *records)
  sealed, seal = timed(block_lib.seal, len(run.ledger.blocks), run.ledger.head_hash, r,
                       transactions[0].author, transactions, run.ledger.state.difficulty)
  _, check = timed(validate.append, run.ledger, sealed, **run_ledger.COMMIT_APPEND_OPTIONS)
  scratch = run.run_dir.parent / f"scratch-{r}"
  _, write = timed(store.write_record, scratch, 0, store.GENESIS_RECORD_HASH, sealed)
  return {"sign": sign, "seal": seal, "validate": check, "write": write}


def per_round_costs(work: pathlib.Path, m_t: int, samples: int) -> dict:
  """Median seconds of each piece of the ledger's per-round work at H = m_t = m_t."""
  (run, open_seconds) = timed(run_ledger.open_run_ledger, work / "run", seed=0,
                              num_hospitals=m_t, keys="derived")
  manager = ocp.CheckpointManager(work / "run" / "checkpoints",
                                  options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
  evidence = Evidence(m_t, reuse=m_t > REUSE_EVIDENCE_ABOVE)
  pieces = {"update_digests": [], "checkpoint_sha256": [], "record_round": []}
  steps = {}
  for r in range(samples):
    synthetic = evidence.round(run, r)
    stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *synthetic.updates)  # as the engine
    manager.save(r, args=ocp.args.StandardSave(synthetic.updates[0]))
    manager.wait_until_finished()
    step_dir = manager.directory / str(r)
    digests, seconds = timed(update_digests, stacked)  # what the recorder does
    pieces["update_digests"].append(seconds)
    pieces["checkpoint_sha256"].append(timed(checkpoint_digest, step_dir)[1])
    records = simulate.round_records(synthetic, simulate.round_epsilon(run, synthetic), step_dir,
                                     update_digests=tuple(digests))
    roles = run_ledger.round_roles(run, r)
    for name, seconds in record_round_steps(run, r, roles, records).items():
      steps.setdefault(name, []).append(seconds)
    run, seconds = timed(run_ledger.record_round, run, r, roles, *records)
    pieces["record_round"].append(seconds)
  manager.close()
  transactions = len(run.ledger.blocks[-1].transactions)
  return {"pieces_s": {k: statistics.median(v) for k, v in pieces.items()},
          "record_round_steps_s": {k: statistics.median(v) for k, v in steps.items()},
          "transactions_per_block": transactions, "open_fresh_s": open_seconds}


def measured_round_seconds(work: pathlib.Path, rounds: int = 4) -> float:
  """Median wall time of rounds 2.. of the training loop on configs/fed9.py (round 1 compiles)."""
  from ccfl_jax import training
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  from configs import fed9
  config = fed9.get_config()
  config.num_rounds = rounds
  config.checkpoint_every = rounds
  config.ledger.key_source = "derived"
  training.train_and_evaluate(config, work / "fed9")
  lines = (work / "fed9" / "metrics.jsonl").read_text().splitlines()
  return statistics.median(json.loads(line)["round_seconds"] for line in lines[1:])


def long_ledger(work: pathlib.Path, m_t: int, rounds: int) -> tuple[pathlib.Path, float]:
  run = run_ledger.open_run_ledger(work / "long", seed=0, num_hospitals=m_t, keys="derived")
  rng = np.random.default_rng(0)
  evidence = Evidence(m_t, reuse=m_t > 9)  # its digests are random anyway
  tic = time.perf_counter()
  for r in range(rounds):
    synthetic = evidence.round(run, r)
    run = run_ledger.record_round(run, r, run_ledger.round_roles(run, r),
                                  *_cheap_records(run, synthetic, rng))
  return run.run_dir, time.perf_counter() - tic


def _cheap_records(run, synthetic, rng):
  """record_round's records without hashing m_t x 60k parameters (the build is not timed)."""
  return simulate.round_records(
      synthetic, simulate.round_epsilon(run, synthetic), None,
      update_digests=tuple(rng.bytes(32).hex() for _ in synthetic.sampled),
      update_norms=None, cosines=None, params_digest=None)


def verify_costs(work: pathlib.Path, m_t: int, rounds: int) -> dict:
  run_dir, build_seconds = long_ledger(work, m_t, rounds)
  identity.clear_key_cache()  # verify and resume start cold, as a fresh process does
  report, verify_seconds = timed(audit.verify_run, run_dir)
  assert report.ok, report.failure
  identity.clear_key_cache()
  _, open_seconds = timed(run_ledger.open_run_ledger, run_dir, 0, m_t, keys="derived")
  return {"rounds": rounds, "blocks": report.blocks, "transactions": report.transactions,
          "verify_s": verify_seconds, "resume_s": open_seconds, "build_s": build_seconds}


def cpu_model() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "cpu"


def machine() -> dict:
  return {"machine": platform.machine(), "processor": cpu_model(),
          "cpus": os.cpu_count(), "python": platform.python_version(),
          "jax_backend": jax.default_backend(), "signature_backend": identity.BACKEND}


def markdown(result: dict) -> str:
  m = result["machine"]
  lines = [
      "# Ledger benchmark (tools/bench_ledger.py)", "",
      f"Machine: {m['machine']}, {m['processor']}, {m['cpus']} CPUs, Python {m['python']}, JAX "
      f"backend {m['jax_backend']}; signatures: {m['signature_backend']}. The ledger's work is "
      "host (CPU) work on any backend. Shared with other jobs, so +-30%. Generated from "
      "bench_ledger.json by `python tools/bench_ledger.py --report_only`.", "",
      f"## Per-round ledger work (H = m_t, 3 verifiers, PoW 8 bits), median of "
      f"{', '.join(str(row['samples']) for row in result['per_round'])} rounds", "",
      "| m_t | txs per block | update digests | checkpoint sha256 | record_round | "
      "**ledger total** | round (s) | **share** | 5% of a round needs a round >= |",
      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for row in result["per_round"]:
    p = {k: 1e3 * v for k, v in row["pieces_s"].items()}
    total = sum(p.values())
    lines.append(
        f"| {row['m_t']} | {row['transactions_per_block']} | {p['update_digests']:.1f} ms | "
        f"{p['checkpoint_sha256']:.1f} ms | {p['record_round']:.1f} ms | **{total:.1f} ms** | "
        f"{row['round_s']:.3g} | **{100 * total / 1e3 / row['round_s']:.2f}%** | "
        f"{total / 1e3 / SHARE_TARGET:.2f} s |")
  lines += ["", "Round time: " + result["round_source"] + ".", "",
            "record_round by step (ms; timed outside it on the same inputs):", "",
            "| m_t | sign | seal (Merkle + PoW) | validate | write + fsync | "
            "fresh ledger (register H) |", "|---:|---:|---:|---:|---:|---:|"]
  for row in result["per_round"]:
    s = {k: 1e3 * v for k, v in row["record_round_steps_s"].items()}
    lines.append(f"| {row['m_t']} | {s['sign']:.1f} | {s['seal']:.1f} | {s['validate']:.1f} | "
                 f"{s['write']:.1f} | {1e3 * row['open_fresh_s']:.0f} |")
  lines += ["", "## verify and resume, from a cold start (every record, link, signature and "
            "rule checked)", "",
            "| m_t | rounds | blocks | transactions | verify (s) | blocks/s | transactions/s | "
            "resume (s) | build (ms/round) |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for row in result["verify"]:
    lines.append(
        f"| {row['m_t']} | {row['rounds']} | {row['blocks']} | {row['transactions']} | "
        f"{row['verify_s']:.2f} | {row['blocks'] / row['verify_s']:.3g} | "
        f"{row['transactions'] / row['verify_s']:.0f} | {row['resume_s']:.2f} | "
        f"{1e3 * row['build_s'] / row['rounds']:.1f} |")
  before = result.get("before")
  if before:
    lines += ["", f"## Before: {before['label']} ({before['machine']['signature_backend']})", "",
              "| m_t | record_round (ms) | ledger total (ms) | verify (transactions/s) |",
              "|---:|---:|---:|---:|"]
    verify = {row["m_t"]: row for row in before.get("verify", [])}
    for row in before["per_round"]:
      v = verify.get(row["m_t"])
      lines.append(f"| {row['m_t']} | {1e3 * row['pieces_s']['record_round']:.1f} | "
                   f"{1e3 * sum(row['pieces_s'].values()):.1f} | "
                   + (f"{v['transactions'] / v['verify_s']:.0f} |" if v else "- |"))
  return "\n".join(lines) + "\n"


def run_benchmark(args) -> dict:
  sizes = [int(s) for s in args.sizes]
  per_round, verify = [], []
  with tempfile.TemporaryDirectory() as tmp:
    work = pathlib.Path(tmp)
    if args.round_seconds is None:
      round_9, source = measured_round_seconds(work), "measured (configs/fed9.py, 4 rounds)"
    else:
      round_9, source = args.round_seconds, "given with --round_seconds"
    for m_t in sizes:
      samples, rounds = plan_for(m_t, args)
      row = per_round_costs(work / f"per_round_{m_t}", m_t, samples)
      row.update(m_t=m_t, samples=samples, round_s=round_9 * m_t / 9)
      per_round.append(row)
      verify.append({"m_t": m_t, **verify_costs(work / f"verify_{m_t}", m_t, rounds)})
      print(f"m_t = {m_t}: {json.dumps(per_round[-1])}\n{json.dumps(verify[-1])}", flush=True)
  return {"machine": machine(), "round_9_s": round_9,
          "round_source": f"at H = 9 {round_9:.3g} s, {source}; at m_t > 9 assumed "
                          "(H = 9 round) x m_t / 9",
          "per_round": per_round, "verify": verify}


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  args = flags.FLAGS
  logging.root.setLevel(logging.WARNING)  # as before absl's app.run set it to INFO
  logging.getLogger("absl").setLevel(logging.ERROR)
  out = pathlib.Path(args.out) if args.out else None
  if args.report_only:
    if out is None:
      raise app.UsageError("--report_only needs --out")
    result = json.loads(out.with_suffix(".json").read_text())
  else:
    result = run_benchmark(args)
    if out is not None:
      if args.before:
        previous = json.loads(pathlib.Path(args.before).read_text())
        result["before"] = {"label": args.before_label, **{
            k: previous[k] for k in ("machine", "round_source", "per_round", "verify")}}
      out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
  text = markdown(result)
  print(text)
  if out is not None:
    out.with_suffix(".md").write_text(text)
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
