"""Offline audit of a run folder: `verify_run` (every rule, re-hashing checkpoints) and `show`.

verify_run reads every record (store.py: canonical bytes, record hashes, record chain),
replays the chain in force through validate.append (links, proof of work, signatures,
registration, replay, consensus and epsilon rules), then re-hashes every checkpoint a
global_model transaction names that is still on disk. Checkpoints rotated away by orbax
(max_to_keep) are counted, not failed; a changed one fails, naming the file. Checkpoint
folders that no block vouches for are reported as warnings: a crash between saving a
checkpoint and writing its block leaves exactly that, and resume deletes them.
"""
import dataclasses
import pathlib

from ccfl_jax.ledger import store
from ccfl_jax.ledger import validate
from ccfl_jax.ledger.digests import checkpoint_digest


@dataclasses.dataclass(frozen=True)
class VerifyReport:
  ok: bool
  failure: str = ""
  blocks: int = 0
  rounds: int = 0
  transactions: int = 0
  records: int = 0
  rolled_back_blocks: int = 0
  checkpoints_rehashed: int = 0
  checkpoints_rotated: int = 0
  warnings: tuple[str, ...] = ()

  def summary(self) -> str:
    if not self.ok:
      return f"FAILED: {self.failure}"
    lines = [f"OK: {self.blocks} blocks ({self.rounds} rounds), {self.transactions} "
             f"transactions and signatures, {self.records} records "
             f"({self.rolled_back_blocks} blocks rolled back); checkpoints: "
             f"{self.checkpoints_rehashed} re-hashed, {self.checkpoints_rotated} rotated away"]
    return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def load_chain(run_dir) -> tuple[tuple[store.Record, ...], validate.Ledger]:
  """Records and the validated chain; raises StoreError or LedgerRefusal."""
  records = store.read_records(store.ledger_dir(run_dir))
  if not records:
    raise store.StoreError(f"no ledger records in {store.ledger_dir(run_dir)}")
  blocks = store.chain_blocks(records)
  return records, validate.replay(blocks, blocks[0].difficulty)


def verify_run(run_dir) -> VerifyReport:
  run_dir = pathlib.Path(run_dir)
  try:
    records, ledger = load_chain(run_dir)
  except store.StoreError as error:
    return VerifyReport(False, str(error))
  except validate.LedgerRefusal as error:
    return VerifyReport(False, f"{error} [{_record_of_block(run_dir, error.block_index)}]")
  rehashed, rotated, vouched = 0, 0, set()
  for b in ledger.blocks:
    for position, t in enumerate(b.transactions):
      entry = t.body["checkpoint"] if t.kind == "global_model" else None
      if entry is None:
        continue
      vouched.add(entry["path"])
      if not (run_dir / entry["path"]).is_dir():
        rotated += 1
        continue
      problem = _checkpoint_problem(run_dir / entry["path"], entry)
      if problem:
        return VerifyReport(False, f"block {b.index} (round {b.round}), transaction {position} "
                                   f"(global_model): checkpoint {entry['path']}: {problem}")
      rehashed += 1
  blocks_written = sum(isinstance(r.content, store.block_lib.Block) for r in records)
  return VerifyReport(
      True, blocks=len(ledger.blocks), rounds=ledger.state.last_round + 1,
      transactions=sum(len(b.transactions) for b in ledger.blocks), records=len(records),
      rolled_back_blocks=blocks_written - len(ledger.blocks), checkpoints_rehashed=rehashed,
      checkpoints_rotated=rotated, warnings=_unvouched(run_dir, vouched))


def _checkpoint_problem(step_dir: pathlib.Path, entry: dict) -> str:
  whole, files = checkpoint_digest(step_dir)
  if whole == entry["sha256"]:
    return ""
  recorded = entry["files"]
  for path in sorted(set(files) | set(recorded)):
    if path not in files:
      return f"file {path} is missing"
    if path not in recorded:
      return f"file {path} is not in the recorded checkpoint"
    if files[path] != recorded[path]:
      return f"file {path} changed (sha256 {files[path][:12]}..., recorded {recorded[path][:12]}...)"
  return "sha256 differs from the record, with every file's own hash matching"


def _record_of_block(run_dir: pathlib.Path, block_index) -> str:
  """The record file holding the chain's block `block_index` (for a refusal's message)."""
  try:
    records = store.read_records(store.ledger_dir(run_dir))
  except store.StoreError:
    return "record unknown"
  chain = []
  for record in records:
    if isinstance(record.content, store.Truncation):
      chain = chain[:record.content.keep_blocks]
    else:
      chain.append(record.path.name)
  return f"ledger/{chain[block_index]}" if block_index is not None and block_index < len(chain) \
      else "record unknown"


def _unvouched(run_dir: pathlib.Path, vouched: set) -> tuple[str, ...]:
  root = run_dir / "checkpoints"
  if not root.is_dir():
    return ()
  present = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()),
                   key=lambda p: int(p.name))
  return tuple(f"checkpoint {p.relative_to(run_dir).as_posix()} has no block "
               "(crash before its block was written? resume discards it)"
               for p in present if p.relative_to(run_dir).as_posix() not in vouched)


def show(run_dir) -> str:
  """A readable table: one line per block of the chain in force."""
  _, ledger = load_chain(run_dir)
  ids = {}
  for b in ledger.blocks:
    for t in b.transactions:
      if t.kind == "register_hospital":
        ids[t.author] = f"H{len(ids)}"
  name = lambda i: ids.get(i, i[:8])  # noqa: E731
  lines = [f"{'block':>5} {'round':>5} {'leader':>6} {'txs':>4}  {'hash':<16}  contents"]
  for b in ledger.blocks:
    lines.append(f"{b.index:>5} {b.round:>5} {name(b.leader):>6} {len(b.transactions):>4}  "
                 f"{b.hash[:16]}  {_contents(b, name)}")
  return "\n".join(lines)


def _contents(b, name) -> str:
  kinds = [t.kind for t in b.transactions]
  if b.round < 0:
    return ", ".join(f"{k} x{kinds.count(k)}" for k in dict.fromkeys(kinds))
  start, final = b.transactions[0].body, b.transactions[-1].body
  accepted = set(final["accepted"])
  sampled = " ".join(name(h) + ("" if h in accepted else "(rejected)") for h in start["sampled"])
  epsilon = "inf" if final["epsilon"] is None else f"{final['epsilon']:.3g}"
  checkpoint = final["checkpoint"]["path"] if final["checkpoint"] else "-"
  return (f"sampled {sampled}; accepted {len(accepted)}/{final['num_sampled']}; "
          f"eps {epsilon}; sigma {final['sigma']:g}; S {final['clip_norm']:g}; "
          f"checkpoint {checkpoint}")
