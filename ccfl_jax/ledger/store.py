"""Persistence: the run's ledger as append-only, atomically written record files.

Layout: `<run_dir>/ledger/<seq, 8 digits>.json`, one record per file, seq from 0 without
gaps. A record is the canonical JSON (canonical.py) of
  {"seq", "kind": "block" | "truncate", "body", "prev_record_sha256", "record_sha256"}
where record_sha256 is sha256 of the canonical JSON of the other four fields and
prev_record_sha256 that of the record before (64 zeros for record 0): the records form a
hash chain of their own, so a flipped byte in any record, a deleted or reordered record
file is found and named (a flipped byte either breaks the JSON, breaks the canonical
re-encoding, or changes a hashed value).

Each record is written to a hidden temporary file, fsynced, then hard-linked to its final
name (atomic, and refuses to replace an existing record: files are never edited) and the
folder fsynced. A crash therefore leaves either the whole record or only a `.tmp` file,
which readers ignore.

Truncation without editing: a `truncate` record {"keep_blocks": n, "reason", "signer",
"signature"} says that the chain continues after its first n blocks; the dropped blocks stay
on disk for the audit trail (see run_ledger.rollback_to_round). The blocks' own hash chain
then continues from block n-1. The record is signed (`truncation_message`: the kept head's
hash, the dropped head's hash, n and the reason) by the hospital that leads the next round
(validate.truncate checks it): record hashes alone bind nothing, since anyone who can write
the folder can recompute them.
"""
import dataclasses
import json
import os
import pathlib

from ccfl_jax import failpoints
from ccfl_jax.ledger import block as block_lib
from ccfl_jax.ledger.canonical import canonical_json, canonical_object, canonical_text, sha256_hex

GENESIS_RECORD_HASH = "0" * 64


class StoreError(ValueError):
  """A ledger file is damaged, missing or out of place; names it."""


@dataclasses.dataclass(frozen=True)
class Truncation:
  keep_blocks: int
  reason: str
  signer: str = ""     # node id of the signer; "" = unsigned (refused by validate.truncate)
  signature: str = ""  # hex DER over truncation_message


def truncation_message(keep_blocks: int, reason: str, kept_head: str, dropped_head: str) -> bytes:
  """What a truncate record's signer signs: it names the exact blocks it drops."""
  return canonical_json({"kind": "truncate", "keep_blocks": keep_blocks, "reason": reason,
                         "kept_head": kept_head, "dropped_head": dropped_head})


@dataclasses.dataclass(frozen=True)
class Record:
  seq: int
  content: block_lib.Block | Truncation
  record_sha256: str
  path: pathlib.Path


def ledger_dir(run_dir) -> pathlib.Path:
  return pathlib.Path(run_dir) / "ledger"


def record_name(seq: int) -> str:
  return f"{seq:08d}.json"


def _body(content) -> tuple[str, dict]:
  if isinstance(content, block_lib.Block):
    return "block", content.to_json()
  return "truncate", {"keep_blocks": content.keep_blocks, "reason": content.reason,
                      "signer": content.signer, "signature": content.signature}


def _unsealed(seq: int, kind: str, body: dict, prev_sha: str) -> dict:
  return {"seq": seq, "kind": kind, "body": body, "prev_record_sha256": prev_sha}


def _encoded_record(seq: int, prev_record_sha256: str, content) -> tuple[bytes, str]:
  """(the record file's bytes, record_sha256): canonical_json of the record with its hash,
  built around the block's spliced encoding (Block.canonical_text) so that a block of
  m_t = 1,000 transactions is never decoded and re-encoded to be written."""
  if isinstance(content, block_lib.Block):
    kind, body = "block", content.canonical_text()
  else:
    kind, body = _body(content)
    body = canonical_text(body)
  fields = {"seq": canonical_text(seq), "kind": canonical_text(kind), "body": body,
            "prev_record_sha256": canonical_text(prev_record_sha256)}
  record_sha = sha256_hex(canonical_object(fields).encode("utf-8"))
  data = canonical_object({**fields, "record_sha256": canonical_text(record_sha)})
  return data.encode("utf-8"), record_sha


def write_record(directory, seq: int, prev_record_sha256: str, content) -> Record:
  """Atomically add record `seq` (never replaces one); returns it with its hash."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  data, record_sha = _encoded_record(seq, prev_record_sha256, content)
  final = directory / record_name(seq)
  temporary = directory / f".{record_name(seq)}.tmp-{os.getpid()}"
  with open(temporary, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  failpoints.hit("ledger_append", seq)
  try:
    os.link(temporary, final)
  finally:
    temporary.unlink()
  _fsync_dir(directory)
  return Record(seq, content, record_sha, final)


def _fsync_dir(directory: pathlib.Path) -> None:
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def read_records(directory) -> tuple[Record, ...]:
  """Every record, checked: names, gaps, canonical bytes, own hash and the record chain."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return ()
  names = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
  records = []
  prev_sha = GENESIS_RECORD_HASH
  for seq, name in enumerate(names):
    if name != record_name(seq):
      raise StoreError(f"ledger/{name}: expected ledger/{record_name(seq)} "
                       "(a record is missing, renamed or stray)")
    record = _read_one(directory / name, seq, prev_sha)
    records.append(record)
    prev_sha = record.record_sha256
  return tuple(records)


def _read_one(path: pathlib.Path, seq: int, prev_sha: str) -> Record:
  data = path.read_bytes()
  where = f"ledger/{path.name}"
  try:
    record = json.loads(data.decode("utf-8"))
    canonical = canonical_json(record)
  except (UnicodeDecodeError, ValueError) as error:
    raise StoreError(f"{where}: not valid JSON ({error})") from None
  if canonical != data:
    raise StoreError(f"{where}: bytes differ from the canonical encoding (altered)")
  if not isinstance(record, dict) or set(record) != {"seq", "kind", "body",
                                                      "prev_record_sha256", "record_sha256"}:
    raise StoreError(f"{where}: not a ledger record")
  unsealed = _unsealed(record["seq"], record["kind"], record["body"], record["prev_record_sha256"])
  if sha256_hex(canonical_json(unsealed)) != record["record_sha256"]:
    raise StoreError(f"{where}: record hash mismatch (altered)")
  if record["seq"] != seq:
    raise StoreError(f"{where}: holds seq {record['seq']}")
  if record["prev_record_sha256"] != prev_sha:
    raise StoreError(f"{where}: does not follow the record before it (reordered or replaced)")
  try:
    if record["kind"] == "block":
      content = block_lib.from_json(record["body"])
    elif record["kind"] == "truncate":
      body = record["body"]
      content = Truncation(int(body["keep_blocks"]), str(body["reason"]),
                           str(body.get("signer", "")), str(body.get("signature", "")))
    else:
      raise ValueError(f"unknown record kind {record['kind']!r}")
  except (KeyError, TypeError, ValueError) as error:
    raise StoreError(f"{where}: malformed ({error})") from None
  return Record(seq, content, record["record_sha256"], path)


def chain_blocks(records) -> tuple[block_lib.Block, ...]:
  """The blocks in force: each truncate record drops the blocks after its keep_blocks."""
  blocks = ()
  for record in records:
    if isinstance(record.content, Truncation):
      if record.content.keep_blocks > len(blocks):
        raise StoreError(f"ledger/{record.path.name}: truncates to {record.content.keep_blocks} "
                         f"blocks of {len(blocks)}")
      blocks = blocks[:record.content.keep_blocks]
    else:
      blocks = blocks + (record.content,)
  return blocks
