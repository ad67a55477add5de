"""The chain and its rules: `append(ledger, block)` returns a new ledger or refuses the block.

A `Ledger` is an immutable value: the blocks so far and the `ChainState` folded from them.
`append` checks, in order:
- links: index = number of blocks, prev_hash = hash of the last block, difficulty = the
  run's, Merkle root and header hash recomputed, proof of work met;
- time: setup blocks (round -1: registrations) only before the first round; round blocks
  one per round, rounds consecutive from 0;
- every transaction: known kind with exactly its fields, author registered (a
  register_hospital must be self-signed and its id must be sha256 of its key), and a valid
  signature;
- a round block is [round_start, local_update..., vote..., global_model]: round_start and
  global_model signed by the round's leader, leader and verifier panel as identity.py
  derives them from (round, registered ids); a local_update only from a hospital sampled
  that round, once, with the block's round (so a transaction replayed from another round is
  refused); votes only from the panel, once each, covering every update; the accepted set
  equal to the majority of the votes and to the consensus rule recomputed from the
  recorded MAEs (eqs. 14-15); epsilon never decreasing.
A refusal raises `LedgerRefusal`, which names the block, the transaction and the reason.
"""
import dataclasses
import math
import types

import numpy as np

from ccfl_jax.ledger import block as block_lib
from ccfl_jax.ledger import consensus
from ccfl_jax.ledger import identity as identity_lib
from ccfl_jax.ledger import transactions as tx_lib

# Scores are float32 computed inside jit: a recomputation may differ by an ulp or two.
SCORE_TOLERANCE = 1e-5


class LedgerRefusal(ValueError):
  """A block or transaction breaks a rule; names where and why."""

  def __init__(self, reason: str, block_index: int | None = None, round_index: int | None = None,
               tx_index: int | None = None, tx_kind: str | None = None):
    self.reason, self.block_index, self.tx_index = reason, block_index, tx_index
    where = []
    if block_index is not None:
      where.append(f"block {block_index}" + (f" (round {round_index})"
                                             if round_index is not None else ""))
    if tx_index is not None:
      where.append(f"transaction {tx_index} ({tx_kind})")
    super().__init__((", ".join(where) + ": " if where else "") + reason)


@dataclasses.dataclass(frozen=True)
class ChainState:
  difficulty: int
  keys: types.MappingProxyType  # node id -> precomputed verifying key
  last_round: int = -1          # -1: no round recorded yet
  epsilon: float = 0.0          # spent so far; inf once a round was not private


@dataclasses.dataclass(frozen=True)
class Ledger:
  """The blocks and, for each, the chain state after it (so truncating is slicing)."""
  blocks: tuple[block_lib.Block, ...]
  states: tuple[ChainState, ...]
  initial: ChainState

  @property
  def state(self) -> ChainState:
    return self.states[-1] if self.states else self.initial

  @property
  def head_hash(self) -> str:
    return self.blocks[-1].hash if self.blocks else block_lib.GENESIS_PREV_HASH


def empty_ledger(difficulty: int = block_lib.DEFAULT_DIFFICULTY) -> Ledger:
  return Ledger((), (), ChainState(difficulty, types.MappingProxyType({})))


def append(ledger: Ledger, block: block_lib.Block) -> Ledger:
  """The ledger with `block` appended, or LedgerRefusal (see module docstring)."""
  _check_links(ledger, block)
  try:
    state = _check_transactions(ledger.state, block)
  except (KeyError, TypeError, AttributeError, IndexError) as error:
    # Only a block crafted with consistent hashes gets here with malformed fields.
    raise LedgerRefusal(f"malformed transaction ({type(error).__name__}: {error})",
                        block.index, block.round) from error
  return Ledger(ledger.blocks + (block,), ledger.states + (state,), ledger.initial)


def truncated(ledger: Ledger, keep_blocks: int) -> Ledger:
  """The ledger of its first keep_blocks blocks (every state is already known)."""
  return Ledger(ledger.blocks[:keep_blocks], ledger.states[:keep_blocks], ledger.initial)


def replay(blocks, difficulty: int) -> Ledger:
  ledger = empty_ledger(difficulty)
  for b in blocks:
    ledger = append(ledger, b)
  return ledger


def _check_links(ledger: Ledger, b: block_lib.Block) -> None:
  def refuse(reason):
    raise LedgerRefusal(reason, b.index, b.round)
  if b.index != len(ledger.blocks):
    refuse(f"index {b.index}, expected {len(ledger.blocks)} (block missing or reordered)")
  if b.prev_hash != ledger.head_hash:
    refuse("previous-hash link broken (block missing, reordered or altered)")
  if b.difficulty != ledger.state.difficulty:
    refuse(f"difficulty {b.difficulty}, the run's is {ledger.state.difficulty}")
  if block_lib.merkle_root(b.transactions) != b.merkle_root:
    refuse("Merkle root does not match the transactions")
  if block_lib.header_hash(b.header()) != b.hash:
    refuse("block hash does not match the header")
  if not block_lib.meets_difficulty(b.hash, b.difficulty):
    refuse(f"proof of work: hash lacks {b.difficulty} leading zero bits")
  if b.round == block_lib.SETUP_ROUND:
    if ledger.state.last_round != -1:
      refuse("setup block after training started")
  elif b.round != ledger.state.last_round + 1:
    refuse(f"round {b.round} follows round {ledger.state.last_round}")


@dataclasses.dataclass(frozen=True)
class _Round:
  """What a round block has declared so far, folded transaction by transaction."""
  sampled: tuple[str, ...] = ()
  verifiers: tuple[str, ...] = ()
  rule: dict | None = None
  updates: tuple[tuple[str, float | None], ...] = ()  # (hospital, self-reported MAE)
  votes: tuple[tuple[str, tuple], ...] = ()           # (verifier, vote entries)
  closed: bool = False


def _check_transactions(state: ChainState, b: block_lib.Block) -> ChainState:
  keys = dict(state.keys)
  epsilon = state.epsilon
  current = _Round()
  is_setup = b.round == block_lib.SETUP_ROUND
  if not b.transactions:
    raise LedgerRefusal("empty block", b.index, b.round)
  for position, t in enumerate(b.transactions):
    def refuse(reason, t=t, position=position):
      raise LedgerRefusal(reason, b.index, b.round, position, t.kind)
    _check_shape(t, refuse)
    key = _check_signature(t, keys, refuse)
    if t.kind == "register_hospital":
      keys[t.author] = key
    if is_setup != (t.kind in ("register_hospital", "register_data")):
      refuse("registrations belong in setup blocks, round records in round blocks")
    if not is_setup:
      current, epsilon = _check_round_step(current, epsilon, t, b, keys, position, refuse)
  if is_setup:
    if b.leader not in keys:
      raise LedgerRefusal("leader is not a registered hospital", b.index, b.round)
    return ChainState(state.difficulty, types.MappingProxyType(keys), state.last_round, epsilon)
  if not current.closed:
    raise LedgerRefusal("round block does not end with global_model", b.index, b.round)
  return ChainState(state.difficulty, types.MappingProxyType(keys), b.round, epsilon)


def _check_shape(t: tx_lib.Transaction, refuse) -> None:
  if t.kind not in tx_lib.FIELDS:
    refuse(f"unknown transaction kind {t.kind!r}")
  body = t.body
  if set(body) != set(tx_lib.FIELDS[t.kind]):
    refuse(f"fields {sorted(body)}, expected {sorted(tx_lib.FIELDS[t.kind])}")
  if "hospital" in body and t.kind != "vote" and body["hospital"] != t.author:
    refuse("signed by another hospital than the one it names")


def _check_signature(t: tx_lib.Transaction, keys: dict, refuse):
  """The author's verifying key, once the signature checks out."""
  if t.kind == "register_hospital":
    try:
      public_key = bytes.fromhex(t.body["public_key"])
      key = identity_lib.verifying_key(public_key)
    except Exception as error:  # a malformed key is a refusal, whatever the parser raises
      refuse(f"malformed public key ({error})")
    if identity_lib.node_id_of(public_key) != t.author:
      refuse("node id is not sha256 of the public key")
    if t.author in keys:
      refuse("hospital already registered")
  else:
    key = keys.get(t.author)
    if key is None:
      refuse(f"author {t.author[:12]}... is not a registered hospital")
  if not identity_lib.signature_is_valid(key, t.signing_message(), t.signature):
    refuse(f"bad signature by {t.author[:12]}...")
  return key


def _check_round_step(current: _Round, epsilon: float, t, b, keys, position, refuse):
  body = t.body
  if body["round"] != b.round:
    refuse(f"transaction for round {body['round']} in the block of round {b.round} (replay?)")
  if current.closed:
    refuse("transaction after the round's global_model")
  if t.kind == "round_start":
    if position != 0:
      refuse("round_start must open the round block")
    return _check_round_start(body, t, b, keys, refuse), epsilon
  if position == 0:
    refuse("a round block must open with round_start")
  if t.kind == "local_update":
    if t.author not in current.sampled:
      refuse("local update from a hospital not sampled this round")
    if any(h == t.author for h, _ in current.updates):
      refuse("second local update from this hospital this round (replay)")
    if current.votes:
      refuse("local update after the votes")
    return dataclasses.replace(
        current, updates=current.updates + ((t.author, body["local_mae"]),)), epsilon
  if t.kind == "vote":
    return _check_vote(current, body, t, refuse), epsilon
  return _check_global_model(current, epsilon, body, t, b, refuse)


def _check_round_start(body, t, b, keys, refuse) -> _Round:
  sampled, verifiers = tuple(body["sampled"]), tuple(body["verifiers"])
  if not sampled or len(set(sampled)) != len(sampled) or not set(sampled) <= set(keys):
    refuse("sampled hospitals must be distinct registered hospitals")
  leader, panel = identity_lib.round_leader_and_verifiers(b.round, list(keys), len(verifiers))
  if verifiers != panel:
    refuse("verifier panel is not the one eq. 10 assigns to this round")
  if t.author != leader or b.leader != leader:
    refuse("round_start and block must come from the round's leader")
  rule = body["consensus"]
  try:
    consensus.ConsensusRule(**rule)
  except TypeError as error:
    refuse(f"consensus rule {rule}: {error}")
  if rule["rule"] not in consensus.RULES:
    refuse(f"unknown consensus rule {rule['rule']!r}")
  return _Round(sampled=sampled, verifiers=verifiers, rule=rule)


def _check_vote(current: _Round, body, t, refuse) -> _Round:
  if body["verifier"] != t.author or t.author not in current.verifiers:
    refuse("vote from a hospital not on this round's panel")
  if any(v == t.author for v, _ in current.votes):
    refuse("second vote from this verifier this round")
  voted = tuple(v["hospital"] for v in body["votes"])
  if voted != tuple(h for h, _ in current.updates):
    refuse("vote does not cover exactly the round's local updates, in order")
  return dataclasses.replace(current, votes=current.votes + ((t.author, tuple(body["votes"])),))


def _check_global_model(current: _Round, epsilon: float, body, t, b, refuse):
  if t.kind != "global_model":
    refuse(f"unexpected {t.kind} in a round block")
  if t.author != b.leader:
    refuse("global_model not signed by the round's leader")
  if set(v for v, _ in current.votes) != set(current.verifiers):
    refuse("not every verifier voted")
  if body["num_sampled"] != len(current.sampled):
    refuse(f"m_t = {body['num_sampled']}, but {len(current.sampled)} were sampled")
  hospitals = [h for h, _ in current.updates]
  accepted = body["accepted"]
  if not accepted or len(set(accepted)) != len(accepted) or not set(accepted) <= set(hospitals):
    refuse("accepted hospitals must be a non-empty subset of the round's local updates")
  by_majority = {h for i, h in enumerate(hospitals)
                 if 2 * sum(entries[i]["accept"] for _, entries in current.votes)
                 > len(current.votes)}
  if set(accepted) != by_majority:
    refuse("accepted hospitals differ from the majority of the votes")
  _check_consensus(current, set(accepted), refuse)
  spent = math.inf if body["epsilon"] is None else body["epsilon"]
  if spent < epsilon:
    refuse(f"epsilon decreased from {epsilon} to {spent}")
  checkpoint = body["checkpoint"]
  if checkpoint is not None and set(checkpoint) != {"path", "sha256", "files"}:
    refuse(f"checkpoint fields {sorted(checkpoint)}")
  return dataclasses.replace(current, closed=True), spent


def _recorded(entries, field: str) -> np.ndarray:
  """One recorded field of a vote's entries as float64, None (or absent) as NaN."""
  return np.array([np.nan if e.get(field) is None else e[field] for e in entries], np.float64)


def _check_consensus(current: _Round, accepted: set, refuse) -> None:
  """Recompute eq. 15 from the recorded MAEs, and the rule from the scores, norms, cosines."""
  rule = current.rule
  hospitals = [h for h, _ in current.updates]
  self_mae = np.array([np.nan if m is None else m for _, m in current.updates], np.float64)
  measured = np.array([_recorded(entries, "mae")
                       for _, entries in current.votes]).T  # [update, verifier]
  first = current.votes[0][1]
  scores, norms, cosines = (_recorded(first, f) for f in ("score", "norm", "cosine"))
  for _, entries in current.votes[1:]:
    for field, what in (("score", "eq. 15 scores"), ("norm", "update norms"),
                        ("cosine", "update cosines")):
      if [e.get(field) for e in entries] != [e.get(field) for e in first]:
        refuse(f"verifiers disagree on the {what}")
  expected = rule["gamma"] * self_mae + measured.mean(axis=1)
  finite = np.isfinite(expected)
  if (not np.array_equal(finite, np.isfinite(scores))
      or np.any(np.abs(expected[finite] - scores[finite]) > SCORE_TOLERANCE)):
    refuse("eq. 15 scores do not follow from the recorded MAEs and gamma")
  parsed = consensus.ConsensusRule(**rule)
  threshold = float(consensus.rejection_threshold(scores, parsed.rule, parsed.k,
                                                  parsed.absolute_threshold, parsed.mad_floor))
  decided = np.asarray(consensus.decide(scores, norms, cosines, parsed))
  max_norm, min_cosine = (float(t) for t in consensus.check_thresholds(norms, cosines, parsed))
  for h, score, norm, cosine, keep in zip(hospitals, scores, norms, cosines, decided):
    borderline = any(abs(value - limit) <= SCORE_TOLERANCE * (1 + abs(limit))
                     for value, limit in ((score, threshold), (norm, max_norm),
                                          (cosine, min_cosine)) if math.isfinite(limit))
    if bool(keep) != (h in accepted) and not borderline:
      refuse(f"consensus rule {rule['rule']} {'accepts' if keep else 'rejects'} "
             f"{h[:12]}... (score {score:.6g}, threshold {threshold:.6g}; update norm "
             f"{norm:.6g}, at most {max_norm:.6g}; cosine {cosine:.6g}, at least "
             f"{min_cosine:.6g})")
