"""Blocks: an ordered batch of transactions, chained by hash and sealed by proof of work.

Header fields: index, prev_hash (the previous block's hash; 64 zeros for the genesis
block), merkle_root of the ordered transactions, round, leader (node id), difficulty (in
leading zero bits) and nonce. The block hash is sha256 of the canonical JSON of the header
(canonical.py); proof of work means that hash has `difficulty` leading zero bits. The paper
uses proof of work to settle blocks between hospitals; in a simulation it only has to be
checkable, so the default of 8 bits costs about 256 hashes.

Timestamps are logical, not wall clock: the header's `round` is the block's time. Setup
blocks (registrations) carry round -1, round blocks carry their round and the closing
block (run_ledger.close_run) round -2, so the same run
replayed gives byte-identical blocks and hashes, which wall-clock time would forbid.

Merkle tree: leaf = sha256(0x00 || tx digest), node = sha256(0x01 || left || right), an
odd node is carried up unchanged; the domain bytes and the carry (rather than duplicating
the last leaf) keep two different transaction lists from sharing a root. An empty block's
root is sha256 of nothing.
"""
import dataclasses
import hashlib

from ccfl_jax.ledger import transactions as tx_lib
from ccfl_jax.ledger.canonical import canonical_json, canonical_object, canonical_text, sha256_hex

GENESIS_PREV_HASH = "0" * 64
SETUP_ROUND = -1
CLOSING_ROUND = -2
DEFAULT_DIFFICULTY = 8


@dataclasses.dataclass(frozen=True)
class Block:
  index: int
  prev_hash: str
  merkle_root: str
  round: int
  leader: str
  difficulty: int
  nonce: int
  hash: str
  transactions: tuple[tx_lib.Transaction, ...]

  def header(self) -> dict:
    return header(self.index, self.prev_hash, self.merkle_root, self.round, self.leader,
                  self.difficulty, self.nonce)

  def to_json(self) -> dict:
    return {**self.header(), "hash": self.hash,
            "transactions": [t.to_json() for t in self.transactions]}

  def canonical_text(self) -> str:
    """canonical_text(self.to_json()), spliced from the transactions' canonical encodings."""
    return canonical_object(
        {**{name: canonical_text(value) for name, value in self.header().items()},
         "hash": canonical_text(self.hash),
         "transactions": "[" + ",".join(t.canonical_text() for t in self.transactions) + "]"})


def header(index, prev_hash, merkle_root, round_index, leader, difficulty, nonce) -> dict:
  return {"index": index, "prev_hash": prev_hash, "merkle_root": merkle_root,
          "round": round_index, "leader": leader, "difficulty": difficulty, "nonce": nonce}


def header_hash(header_fields: dict) -> str:
  return sha256_hex(canonical_json(header_fields))


def meets_difficulty(block_hash: str, difficulty: int) -> bool:
  return int(block_hash, 16) >> (256 - difficulty) == 0 if difficulty > 0 else True


def merkle_root(transactions) -> str:
  level = [hashlib.sha256(b"\x00" + bytes.fromhex(t.digest())).digest() for t in transactions]
  if not level:
    return sha256_hex(b"")
  while len(level) > 1:
    pairs = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
             for i in range(0, len(level) - 1, 2)]
    level = pairs + level[len(pairs) * 2:]
  return level[0].hex()


def seal(index: int, prev_hash: str, round_index: int, leader: str, transactions,
         difficulty: int = DEFAULT_DIFFICULTY) -> Block:
  """Mine the first nonce whose header hash meets `difficulty` (deterministic)."""
  transactions = tuple(transactions)
  root = merkle_root(transactions)
  nonce = 0
  while True:
    block_hash = header_hash(header(index, prev_hash, root, round_index, leader, difficulty,
                                    nonce))
    if meets_difficulty(block_hash, difficulty):
      return Block(index, prev_hash, root, round_index, leader, difficulty, nonce, block_hash,
                   transactions)
    nonce += 1


def from_json(record: dict) -> Block:
  expected = set(header(*[None] * 7)) | {"hash", "transactions"}
  if set(record) != expected:
    raise ValueError(f"block fields {sorted(record)}")
  return Block(record["index"], record["prev_hash"], record["merkle_root"], record["round"],
               record["leader"], record["difficulty"], record["nonce"], record["hash"],
               tuple(tx_lib.from_json(t) for t in record["transactions"]))
