"""Offline audit of a run folder: `verify_run`, `verify_checkpoint`, `show`.

verify_run reads every record (store.py: canonical bytes, record hashes, record chain),
replays the chain in force (validate.replay_records: links, proof of work at no less than
the verifier's minimum difficulty, signatures, registration, replay, consensus rules, signed
truncations), then checks what the ledger claims about the folder: the hospitals' keys
against trusted keys, the last block against a pinned head, every round's epsilon recomputed
by the project's accountant from the recorded sigma, m_t, H and delta (under the local Laplace
mechanism, from each round's recorded epsilon_round and sampled hospitals, composed per
hospital: privacy.laplace_run_epsilon), every checkpoint a
block names (confined to `checkpoints/<step>`, no symlinks; rotated-away ones are counted,
changed ones fail naming the file), config.json against the config sha256 of the genesis or
latest block, metrics.jsonl line by line against the rounds' blocks, and the files of the
closing block. It says what it could not establish (no trusted keys, no pinned head, a run
not closed, files no block covers), and in its first line when the keys are derivable from
the seed. Checkpoint folders that no block vouches for are warnings: a crash between saving
a checkpoint and writing its block leaves exactly that, and resume deletes them.

Why proof of work stays, and what it does not do. Every block is already signed by many
hospitals: the round's leader, each sampled hospital (its update) and each verifier of the
panel (its vote). Once each hospital holds its own key, that is a quorum: rewriting a round
needs the keys of everyone who signed in it, and `--trusted_keys` (the public keys obtained
out of band) makes a re-signed ledger fail; a pinned head (`--head`, as Certificate
Transparency publishes signed tree heads) makes a truncated one fail. Those two anchors, not
hashing, are what make the audit unforgeable; a quorum of hospital signatures on each block
header, each hospital signing only what it has checked, is the stronger design for a
deployment and the natural next step (one more signature per hospital per block).

Proof of work is the paper's mechanism and is kept for fidelity and because it is cheap to
check, but it buys only a cost: about 2^d hashes per rewritten block (d = 8 by default: a
few milliseconds), paid once by whoever holds the keys. It never proves who wrote a block;
it only means a verifier who insists on a high `--min_difficulty` (its own, never the
ledger's) makes a rewrite slower. Without trusted keys, a ledger re-signed with fresh keys
at that difficulty verifies, and verify says so.

Scale (issue 12), and why none of it weakens the audit. A round block holds m_t + 5 signed
transactions (round_start, one local_update per sampled hospital, 3 votes, global_model):
at m_t = 1,000 a thousand signatures to make and, on every replay, to check. Three things
keep that small (results/bench_ledger.md), and a forger's task is the same after them:
- Signatures are made and checked by libsecp256k1 instead of pure-Python arithmetic
  (identity.py). Same scheme, same bytes on disk (ECDSA secp256k1 over sha256, RFC 6979,
  strict DER), and the verifier accepts exactly the signatures python-ecdsa accepted. To
  forge one transaction a forger still needs its author's private key (or an ECDSA break);
  to rewrite a round, the key of every hospital that signed in it.
- The writer does not re-check the signatures it has just made (validate.append,
  signed_here): it skips nothing for anyone else. A forger never goes through the writer's
  commit; what he leaves in the folder is read back by open_run_ledger (resume) and by
  verify, which replay every signature of every block. The one thing given up is finding a
  broken signer at the moment it writes rather than at the next resume or verify.
- Transactions are encoded once: the signed message, the Merkle leaf and the block's record
  file are spliced from each transaction's canonical body (byte-identical to encoding the
  whole, tested; what is hashed and signed is unchanged), leaves are memoized, and a round's
  checks are O(1) per transaction instead of O(m_t). The update digests of a round are
  hashed from the stacked updates in place (digests.update_digests, same digests).
What was not done, and why: signing one digest per hospital per round instead of one
signature per transaction would save nothing, since each hospital already signs one
transaction per round (its local_update or its vote; only the leader signs two); ECDSA has
no batch verification (libsecp256k1 offers none), and Schnorr (BIP 340) batches would need a
new signature format, versioned on the ledger, for at most ~2x.
"""
import dataclasses
import functools
import json
import math
import pathlib

from ccfl_jax.federated import privacy
from ccfl_jax.ledger import block as block_lib
from ccfl_jax.ledger import identity as identity_lib
from ccfl_jax.ledger import run_ledger
from ccfl_jax.ledger import store
from ccfl_jax.ledger import transactions as tx_lib
from ccfl_jax.ledger import validate
from ccfl_jax.ledger.canonical import sha256_hex
from ccfl_jax.ledger.digests import (UnsafePath, checkpoint_digest, confined_checkpoint,
                                     file_sha256)
from ccfl_jax.nulls import none_to

EPSILON_RTOL = 1e-6
OUTPUT_FILES = ("summary.json", "summary.md", "curves.png")


class CheckpointRefused(ValueError):
  """A checkpoint that the run's ledger does not vouch for, or that no longer matches it."""


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
  not_established: tuple[str, ...] = ()  # what this verification could not show
  established: tuple[str, ...] = ()      # what the trust anchors and covered files showed
  notice: str = ""                       # the first line (derivable keys)
  closed: bool = False

  def summary(self) -> str:
    lines = [self.notice] if self.notice else []
    if not self.ok:
      lines.append(f"FAILED: {self.failure}")
    else:
      lines.append(f"OK: {self.blocks} blocks ({self.rounds} rounds"
                   f"{', closed' if self.closed else ''}), {self.transactions} transactions "
                   f"and signatures, {self.records} records ({self.rolled_back_blocks} blocks "
                   f"rolled back); checkpoints: {self.checkpoints_rehashed} re-hashed, "
                   f"{self.checkpoints_rotated} rotated away")
      lines += [f"checked: {e}" for e in self.established]
    lines += [f"not established: {n}" for n in self.not_established]
    return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def load_chain(run_dir, min_difficulty: int = 0
               ) -> tuple[tuple[store.Record, ...], validate.Ledger]:
  """Records and the validated chain; raises StoreError or LedgerRefusal."""
  records = store.read_records(store.ledger_dir(run_dir))
  if not records:
    raise store.StoreError(f"no ledger records in {store.ledger_dir(run_dir)}")
  return records, validate.replay_records(records, min_difficulty)


class _Failed(Exception):
  """One check failed; the message is the report's failure."""


def verify_run(run_dir, trusted_keys=None, head: str | None = None,
               min_difficulty: int = block_lib.DEFAULT_DIFFICULTY) -> VerifyReport:
  """Every check of the module docstring; the first failure, or OK with what was not shown.

  trusted_keys: the hospitals' public keys (bytes or hex; read_trusted_keys reads a file),
  obtained out of band; head: the hash of the run's last block, published elsewhere.
  """
  run_dir = pathlib.Path(run_dir)
  try:
    records, ledger = load_chain(run_dir, min_difficulty)
  except store.StoreError as error:
    return VerifyReport(False, str(error))
  except validate.LedgerRefusal as error:
    where = error.record_name or _record_of_block(run_dir, error.block_index)
    return VerifyReport(False, f"{error} [{where}]")
  notice = _derived_notice(run_dir, ledger)
  established, missing, warnings = [], [], []
  try:
    established += _check_trusted_keys(ledger, trusted_keys, missing)
    established += _check_head(records, ledger, head, missing)
    established += _check_epsilons(ledger)
    rehashed, rotated, vouched = _check_checkpoints(run_dir, ledger)
    established += _check_config(run_dir, ledger, missing, warnings)
    established += _check_metrics(run_dir, ledger, missing, warnings)
    established += _check_closing(run_dir, ledger, missing)
  except _Failed as failure:
    return VerifyReport(False, str(failure), notice=notice)
  blocks_written = sum(isinstance(r.content, block_lib.Block) for r in records)
  return VerifyReport(
      True, blocks=len(ledger.blocks), rounds=ledger.state.last_round + 1,
      transactions=sum(len(b.transactions) for b in ledger.blocks), records=len(records),
      rolled_back_blocks=blocks_written - len(ledger.blocks), checkpoints_rehashed=rehashed,
      checkpoints_rotated=rotated,
      warnings=tuple(warnings) + _unvouched(run_dir, vouched),
      not_established=tuple(missing), established=tuple(established), notice=notice,
      closed=ledger.state.closed)


# Keys and head: the trust anchors.

def read_trusted_keys(path) -> tuple[bytes, ...]:
  """Public keys from a file: JSON (a list of hex strings, {"public_keys": [...]}, or
  {name: hex}) or text with one hex key per line (# comments); ValueError naming the entry."""
  path = pathlib.Path(path)
  text = path.read_text()
  try:
    value = json.loads(text)
  except ValueError:
    value = [line.split("#")[0].strip() for line in text.splitlines()]
    value = [line for line in value if line]
  if isinstance(value, dict):
    value = value.get("public_keys", list(value.values()))
  if not isinstance(value, list) or not value:
    raise ValueError(f"{path}: expected a list of hex public keys")
  keys = []
  for position, entry in enumerate(value):
    try:
      keys.append(identity_lib.compressed_public_key(bytes.fromhex(str(entry))))
    except ValueError as error:
      raise ValueError(f"{path}: entry {position + 1} ({str(entry)[:20]}...): {error}") from None
  return tuple(keys)


def _check_trusted_keys(ledger, trusted_keys, missing) -> list[str]:
  if trusted_keys is None:
    missing.append("no trusted keys (--trusted_keys): the signatures prove only that the "
                   "ledger is internally consistent, not who signed it (a ledger rewritten and "
                   "re-signed with fresh keys passes)")
    return []
  trusted = {identity_lib.compressed_public_key(k if isinstance(k, bytes) else bytes.fromhex(k))
             for k in trusted_keys}
  for h, key in enumerate(run_ledger.registered_public_keys(ledger)):
    if key not in trusted:
      raise _Failed(f"block 0: hospital {h}'s public key {key.hex()[:16]}... is not among the "
                    f"{len(trusted)} trusted keys: the ledger was signed by other keys "
                    "(rewritten or re-signed)")
  return [f"every signature is by one of the {len(trusted)} trusted hospital keys"]


def _check_head(records, ledger, head, missing) -> list[str]:
  if not head:
    missing.append("no pinned head (--head): the newest blocks could have been removed "
                   "(with their records) without a trace")
    return []
  head = head.strip().lower()
  chain = [b.hash for b in ledger.blocks]
  if head == chain[-1]:
    return [f"the last block is the pinned head {head[:16]}..."]
  if head in chain:
    after = len(chain) - 1 - chain.index(head)
    missing.append(f"the pinned head is block {chain.index(head)}: the {after} block(s) after "
                   "it are not pinned")
    return [f"the chain contains the pinned head {head[:16]}..."]
  dropped = [r for r in records if isinstance(r.content, block_lib.Block)
             and r.content.hash == head]
  if dropped:
    raise _Failed(f"the pinned head {head[:16]}... (ledger/{dropped[0].path.name}) was dropped "
                  f"by a truncate record; the chain in force ends at block {len(chain) - 1}")
  raise _Failed(f"the pinned head {head[:16]}... is not in the ledger: blocks were removed or "
                f"rewritten (the chain ends at block {len(chain) - 1}, {chain[-1][:16]}...)")


def _derived_notice(run_dir, ledger) -> str:
  """The first line when anyone can recompute the run's keys from its seed."""
  if ledger.state.key_mode == "derived":
    how = "ledger.key_source=derived"
  elif _keys_from_config_seed(run_dir, ledger):
    how = "they are the ones the seed in config.json derives"
  else:
    return ""
  return (f"WARNING: this run's hospital keys are derivable from its seed ({how}): anyone can "
          "recompute them and re-sign a rewritten ledger, so its signatures prove nothing")


def _keys_from_config_seed(run_dir, ledger) -> bool:
  try:
    seed = json.loads((run_dir / "config.json").read_text()).get("seed")
  except (OSError, ValueError, AttributeError):
    return False
  if not isinstance(seed, int):
    return False
  registered = run_ledger.registered_public_keys(ledger)
  return all(identity_lib.hospital_identity(seed, h).public_key == key
             for h, key in enumerate(registered))


# Privacy: every round's epsilon recomputed.

def _round_blocks(ledger):
  return [b for b in ledger.blocks if b.round >= 0]


def accountant_epsilon(num_hospitals: int, rounds: list[tuple[int, float]],
                       delta: float) -> float:
  """epsilon after `rounds` [(m_t, sigma)], each charged at its own sigma: privacy.epsilon
  itself, the accountant the training loop records with (cached per history)."""
  return _cached_epsilon(num_hospitals, tuple((int(m), float(s)) for m, s in rounds),
                         float(delta))


@functools.lru_cache(maxsize=4096)
def _cached_epsilon(num_hospitals: int, rounds: tuple, delta: float) -> float:
  return privacy.epsilon(num_hospitals, [m for m, _ in rounds], [s for _, s in rounds], delta)


def laplace_accountant_epsilon(sampled_per_round, epsilon_per_round, delta: float) -> float:
  """The local Laplace mechanism's epsilon after the rounds: privacy.laplace_run_epsilon,
  the accountant the training loop records with (each hospital composes the rounds it was
  sampled in, at each round's recorded epsilon_round)."""
  return privacy.laplace_run_epsilon(sampled_per_round, epsilon_per_round, delta)["epsilon"]


def _mechanism(body) -> str:
  return body.get("mechanism", "gaussian_central")


def _check_epsilons(ledger) -> list[str]:
  """Each round's recorded epsilon = the accountant's over rounds 0..r (relative 1e-6): the
  Gaussian one from sigma and m_t, or the Laplace one from epsilon_round and the sampled
  hospitals of round_start; one mechanism for the whole run."""
  num_hospitals = len(run_ledger.registered_public_keys(ledger))
  rounds, sampled, round_epsilons, mechanism = [], [], [], None
  for b in _round_blocks(ledger):
    body = b.transactions[-1].body
    if mechanism is not None and _mechanism(body) != mechanism:
      raise _Failed(f"block {b.index} (round {b.round}), global_model: mechanism "
                    f"{_mechanism(body)}, but earlier rounds ran {mechanism}: no accountant "
                    "composes the two")
    mechanism = _mechanism(body)
    rounds.append((int(body["num_sampled"]), float(body["sigma"])))
    sampled.append(tuple(b.transactions[0].body["sampled"]))
    round_epsilons.append(body.get("epsilon_round"))
    recorded = none_to(body["epsilon"], math.inf)
    if mechanism == tx_lib.LAPLACE_LOCAL:
      expected = laplace_accountant_epsilon(sampled, round_epsilons, body["delta"])
      if not math.isclose(recorded, expected, rel_tol=EPSILON_RTOL):
        raise _Failed(f"block {b.index} (round {b.round}), global_model: epsilon "
                      f"{recorded:.6g} recorded, but the local Laplace accountant gives "
                      f"{expected:.6g} for rounds 0-{b.round} (epsilon_round "
                      f"{', '.join(f'{e:g}' for e in sorted(set(round_epsilons)))}, composed "
                      f"per hospital over the rounds it was sampled in, delta {body['delta']:g})")
      continue
    expected = accountant_epsilon(num_hospitals, rounds, body["delta"])
    _compare_epsilon(b, recorded, expected, num_hospitals, rounds, body["delta"])
  if not rounds:
    return []
  if mechanism == tx_lib.LAPLACE_LOCAL:
    return [f"epsilon of all {len(rounds)} rounds recomputed by the local Laplace accountant "
            f"from the recorded epsilon_round and sampled hospitals, composed per hospital "
            f"(basic or advanced at delta; final {recorded:.4g})"]
  return [f"epsilon of all {len(rounds)} rounds recomputed from the recorded sigma, m_t, "
          f"H = {num_hospitals} and delta (final {recorded:.4g})"]


def _compare_epsilon(b, recorded, expected, num_hospitals, rounds, delta) -> None:
  if math.isinf(recorded) and math.isinf(expected):
    return
  if math.isclose(recorded, expected, rel_tol=EPSILON_RTOL):
    return
  sigmas = sorted({s for _, s in rounds})
  raise _Failed(f"block {b.index} (round {b.round}), global_model: epsilon {recorded:.6g} "
                f"recorded, but the accountant gives {expected:.6g} for rounds 0-{b.round} "
                f"(sigma {', '.join(f'{s:g}' for s in sigmas)}, m_t {rounds[-1][0]}, "
                f"H {num_hospitals}, delta {delta:g})")


# Files the ledger covers.

def _check_checkpoints(run_dir, ledger):
  rehashed, rotated, vouched = 0, 0, set()
  for b in ledger.blocks:
    for position, t in enumerate(b.transactions):
      entry = t.body["checkpoint"] if t.kind == "global_model" else None
      if entry is None:
        continue
      where = (f"block {b.index} (round {b.round}), transaction {position} (global_model): "
               f"checkpoint {entry['path']}")
      vouched.add(entry["path"])
      try:
        step_dir = confined_checkpoint(run_dir, entry["path"])
        if not step_dir.is_dir():
          rotated += 1
          continue
        problem = _checkpoint_problem(step_dir, entry)
      except UnsafePath as error:
        raise _Failed(f"{where}: refused: {error}") from None
      if problem:
        raise _Failed(f"{where}: {problem}")
      rehashed += 1
  return rehashed, rotated, vouched


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


def _file_problem(path: pathlib.Path, recorded: str) -> str:
  if not path.exists() and not path.is_symlink():
    return "is missing"
  try:
    actual = file_sha256(path)
  except UnsafePath as error:
    return f"refused: {error}"
  return "" if actual == recorded else f"changed (sha256 {actual[:12]}..., recorded {recorded[:12]}...)"


def _check_config(run_dir, ledger, missing, warnings) -> list[str]:
  """config.json against the newest config sha256 on the ledger (closing > rounds > genesis)."""
  genesis = ledger.states[0].config_sha256
  latest = (0, genesis) if genesis else None
  for b in ledger.blocks[1:]:
    body = b.transactions[-1].body
    value = (body["files"].get("config.json") if b.round == block_lib.CLOSING_ROUND
             else body.get("config_sha256"))
    if value:
      latest = (b.index, value)
  if latest is None:
    missing.append("config.json is not covered (no block records its sha256)")
    return []
  problem = _file_problem(run_dir / "config.json", latest[1])
  if problem:
    raise _Failed(f"config.json {problem}: block {latest[0]} records its sha256 (the file was "
                  "edited, or this is another run's ledger)")
  if genesis and genesis != latest[1]:
    warnings.append(f"config.json changed during the run (resumed with another config; the "
                    f"genesis block records the first, block {latest[0]} the one in force)")
  return ["config.json matches the ledger"]


def _check_metrics(run_dir, ledger, missing, warnings) -> list[str]:
  """metrics.jsonl line r+1 against round r's recorded sha256."""
  recorded = [(b, b.transactions[-1].body["metrics_sha256"]) for b in _round_blocks(ledger)]
  covered = [(b, digest) for b, digest in recorded if digest]
  if not covered:
    if recorded:
      missing.append("metrics.jsonl is not covered (no round records its line's sha256)")
    return []
  path = run_dir / "metrics.jsonl"
  try:
    lines = path.read_bytes().split(b"\n")
  except OSError:
    raise _Failed(f"metrics.jsonl is missing: {len(covered)} blocks record its lines") from None
  if lines and lines[-1] == b"":
    lines.pop()
  for b, digest in covered:
    if b.round >= len(lines):
      raise _Failed(f"metrics.jsonl: line {b.round + 1} is missing; block {b.index} (round "
                    f"{b.round}) records its sha256")
    if sha256_hex(lines[b.round]) != digest:
      raise _Failed(f"metrics.jsonl: line {b.round + 1} changed since block {b.index} (round "
                    f"{b.round}) recorded it")
  extra = len(lines) - len(recorded)
  if extra > 0:
    message = (f"metrics.jsonl has {extra} line(s) after the last recorded round (round "
               f"{len(recorded) - 1})")
    if ledger.state.closed:
      raise _Failed(f"{message}, and the run is closed")
    warnings.append(f"{message}: a crash before its block (resume rewrites it), or blocks removed")
  if len(covered) < len(recorded):
    missing.append(f"metrics.jsonl: {len(recorded) - len(covered)} of {len(recorded)} rounds "
                   "record no sha256 of their line")
  return [f"metrics.jsonl: {len(covered)} lines match their blocks"]


def _check_closing(run_dir, ledger, missing) -> list[str]:
  if not ledger.state.closed:
    missing.append("not closed (still running or truncated): summary.json, summary.md, "
                   "curves.png and the final checkpoint are not covered")
    return []
  b = ledger.blocks[-1]
  body = b.transactions[0].body
  for name, digest in sorted(body["files"].items()):
    problem = _file_problem(run_dir / name, digest)
    if problem:
      raise _Failed(f"{name} {problem}: the closing block (block {b.index}) records it")
  for name, entry in sorted(body["checkpoints"].items()):
    try:
      step_dir = confined_checkpoint(run_dir, name)
      problem = (_checkpoint_problem(step_dir, entry) if step_dir.is_dir()
                 else "is missing")
    except UnsafePath as error:
      problem = f"refused: {error}"
    if problem:
      raise _Failed(f"final checkpoint {name}: {problem} (the closing block, block {b.index}, "
                    "records it)")
  uncovered = [n for n in OUTPUT_FILES if (run_dir / n).exists() and n not in body["files"]]
  if uncovered:
    missing.append(f"{', '.join(uncovered)} not covered by the closing block")
  names = sorted(body["files"]) + sorted(body["checkpoints"])
  return [f"closed after {body['rounds']} rounds; {', '.join(names) or 'no files'} match the "
          "closing block"]


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


def verify_checkpoint(run_dir, step: int,
                      min_difficulty: int = block_lib.DEFAULT_DIFFICULTY) -> None:
  """Raise CheckpointRefused unless `<run_dir>/checkpoints/<step>` is confined (no symlinks)
  and byte for byte what a block of the run's valid ledger records, and config.json (which
  says how to rebuild the model and preprocess its input) is the one the ledger records.
  For evaluate/predict, before loading; the message says what failed."""
  run_dir = pathlib.Path(run_dir)
  relative = f"checkpoints/{int(step)}"
  try:
    _, ledger = load_chain(run_dir, min_difficulty)
  except (store.StoreError, validate.LedgerRefusal) as error:
    raise CheckpointRefused(f"{run_dir}: the ledger does not verify ({error}); run `python -m "
                            f"ccfl_jax.ledger verify {run_dir}`") from None
  entry = run_ledger.recorded_checkpoints(ledger).get(relative)
  if entry is None:
    raise CheckpointRefused(f"{run_dir / relative}: no block of the run's ledger records this "
                            "checkpoint")
  try:
    step_dir = confined_checkpoint(run_dir, relative)
    problem = _checkpoint_problem(step_dir, entry[1]) if step_dir.is_dir() else "is missing"
  except UnsafePath as error:
    problem = f"refused: {error}"
  if problem:
    raise CheckpointRefused(f"{run_dir / relative} does not match the ledger (round "
                            f"{entry[0]}): {problem}")
  try:
    _check_config(run_dir, ledger, missing=[], warnings=[])
  except _Failed as error:
    raise CheckpointRefused(f"{run_dir}: {error}") from None


# show

def head(run_dir) -> str:
  """The hash of the last block in force: publish it, then `verify --head` pins the run."""
  return load_chain(run_dir)[1].head_hash


def public_keys(run_dir) -> tuple[str, ...]:
  """The registered hospitals' public keys (hex, hospital order): a --trusted_keys file."""
  return tuple(k.hex() for k in run_ledger.registered_public_keys(load_chain(run_dir)[1]))


def show(run_dir) -> str:
  """A readable table: one line per block of the chain in force."""
  _, ledger = load_chain(run_dir)
  ids = {}
  for b in ledger.blocks:
    for t in b.transactions:
      if t.kind == "register_hospital":
        ids[t.author] = f"H{len(ids)}"
  name = lambda i: ids.get(i, i[:8])  # noqa: E731
  lines = [f"run {ledger.state.run_id}, keys {ledger.state.key_mode}, difficulty "
           f"{ledger.state.difficulty}, head {ledger.head_hash}",
           f"{'block':>5} {'round':>5} {'leader':>6} {'txs':>4}  {'hash':<16}  contents"]
  for b in ledger.blocks:
    # Rounds counted from 1, as metrics.jsonl, summary.md and checkpoints/<n> count them.
    shown_round = ("close" if b.round == block_lib.CLOSING_ROUND
                   else "setup" if b.round < 0 else b.round + 1)
    lines.append(f"{b.index:>5} {shown_round:>5} {name(b.leader):>6} {len(b.transactions):>4}  "
                 f"{b.hash[:16]}  {_contents(b, name)}")
  return "\n".join(lines)


def _contents(b, name) -> str:
  kinds = [t.kind for t in b.transactions]
  if b.round == block_lib.CLOSING_ROUND:
    body = b.transactions[0].body
    return (f"closed after {body['rounds']} rounds: "
            f"{', '.join(sorted(body['files']) + sorted(body['checkpoints']))}")
  if b.round < 0:
    return ", ".join(f"{k} x{kinds.count(k)}" for k in dict.fromkeys(kinds))
  start, final = b.transactions[0].body, b.transactions[-1].body
  accepted = set(final["accepted"])
  votes = next((t.body["votes"] for t in b.transactions if t.kind == "vote"), [])
  reasons = {v["hospital"]: v.get("reason") for v in votes}
  sampled = " ".join(name(h) + ("" if h in accepted else
                                f"(rejected: {reasons[h]})" if reasons.get(h) else "(rejected)")
                     for h in start["sampled"])
  epsilon = "inf" if final["epsilon"] is None else f"{final['epsilon']:.3g}"
  checkpoint = final["checkpoint"]["path"] if final["checkpoint"] else "-"
  noise = (f"laplace_local eps_round {final['epsilon_round']:g}; B {final['clip_norm']:g}"
           if _mechanism(final) == tx_lib.LAPLACE_LOCAL
           else f"sigma {final['sigma']:g}; S {final['clip_norm']:g}")
  return (f"sampled {sampled}; accepted {len(accepted)}/{final['num_sampled']}; "
          f"eps {epsilon}; {noise}; checkpoint {checkpoint}")
