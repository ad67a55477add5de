"""The chain and its rules: `append(ledger, block)` returns a new ledger or refuses the block.

A `Ledger` is an immutable value: the blocks so far and the `ChainState` folded from them.
`append` checks, in order:
- links: index = number of blocks, prev_hash = hash of the last block, difficulty = the
  run's, Merkle root and header hash recomputed, proof of work met;
- time: setup blocks (round -1: registrations) only before the first round; round blocks
  one per round, rounds consecutive from 0; at most one closing block (round -2), last;
- the genesis block (block 0) registers the hospitals and ends with the run's `open_run`
  (run id, config sha256, key kind), signed by its leader; no other block holds one;
- every transaction: known kind with exactly its fields, author registered (a
  register_hospital must be self-signed and its id must be sha256 of its key), and a valid
  signature;
- a round block is [round_start, local_update..., vote..., global_model]: round_start and
  global_model signed by the round's leader, leader and verifier panel as identity.py
  derives them from (round, registered ids); a local_update only from a hospital sampled
  that round, once, with the block's round (so a transaction replayed from another round is
  refused); votes only from the panel, once each, covering every update, each entry with
  exactly its fields; the accepted set equal to the majority of the votes and to the
  consensus rule recomputed from the recorded MAEs (eqs. 14-15); each vote's verdict reasons
  re-derived (consensus.rejection_reasons) from the recorded scores, norms, cosines,
  finiteness and its accepts, and a non-finite update never scored (nor, where the rule
  publishes norms, given a finite one); epsilon never decreasing; a checkpoint only at
  `checkpoints/<step>` (no absolute path, no `..`);
- the closing block is one `close_run`, signed by the leader the next round would have,
  counting the rounds recorded; its checkpoints also only at `checkpoints/<step>`.
`truncate` applies a truncate record: signed by the leader of the round after the kept
head, naming the kept and the dropped head. `replay_records` folds a run's records with
both, refusing a genesis difficulty below the verifier's minimum.
A refusal raises `LedgerRefusal`, which names the block (or record), the transaction and the reason.

`append(..., signed_here=True)` skips one check, the signatures, and only for the writer's
own fresh block (run_ledger._commit: every transaction of it was signed a moment ago, in
this process, by a key whose public half is the one the chain registers for its author, as
the writer checked when it opened the ledger). Re-verifying them would only re-check
libsecp256k1's signing: it cost as much as the signing (~70 us each, m_t + 5 per round).
Every other rule still runs before the block is written, and every reader (replay_records:
resume, verify) checks every signature; a bad one written by a broken signer is therefore
refused at the next resume or verify, naming the block.
"""
import dataclasses
import math
import re
import types

import numpy as np

from ccfl_jax.ledger import block as block_lib
from ccfl_jax.ledger import consensus
from ccfl_jax.ledger import identity as identity_lib
from ccfl_jax.ledger import store
from ccfl_jax.ledger import transactions as tx_lib
from ccfl_jax.ledger.digests import CHECKPOINT_PATH
from ccfl_jax.nulls import none_to

# Scores are float32 computed inside jit: a recomputation may differ by an ulp or two.
SCORE_TOLERANCE = 1e-5
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RUN_ID = re.compile(r"[0-9a-f]{32}")


class LedgerRefusal(ValueError):
  """A block or transaction breaks a rule; names where and why."""

  def __init__(self, reason: str, block_index: int | None = None, round_index: int | None = None,
               tx_index: int | None = None, tx_kind: str | None = None):
    self.reason, self.block_index, self.tx_index = reason, block_index, tx_index
    self.record_name: str | None = None  # set by replay_records: the record file at fault
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
  run_id: str = ""              # from the genesis block's open_run
  config_sha256: str | None = None
  key_mode: str = ""            # transactions.KEY_MODES
  closed: bool = False          # a closing block was appended


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


def append(ledger: Ledger, block: block_lib.Block, signed_here: bool = False) -> Ledger:
  """The ledger with `block` appended, or LedgerRefusal (see module docstring; signed_here:
  the writer's own block, signatures not re-checked)."""
  _check_links(ledger, block)
  try:
    state = _check_transactions(ledger.state, block, check_signatures=not signed_here)
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


def truncation_signer(ledger: Ledger, keep_blocks: int) -> str:
  """Who signs a truncation to keep_blocks: the leader of the round after the kept head."""
  kept = ledger.states[keep_blocks - 1]
  return identity_lib.round_leader_and_verifiers(kept.last_round + 1, list(kept.keys), 1)[0]


def truncation_message(ledger: Ledger, keep_blocks: int, reason: str) -> bytes:
  return store.truncation_message(keep_blocks, reason, ledger.blocks[keep_blocks - 1].hash,
                                  ledger.head_hash)


def truncate(ledger: Ledger, t: store.Truncation) -> Ledger:
  """The ledger after a truncate record, or LedgerRefusal (unsigned, misplaced, forged)."""
  if not 1 <= t.keep_blocks <= len(ledger.blocks):
    raise LedgerRefusal(f"truncates to {t.keep_blocks} blocks of {len(ledger.blocks)} "
                        "(the genesis block always stays)")
  if not t.signature:
    raise LedgerRefusal("unsigned truncate record (anyone who can write the folder could "
                        "have dropped these blocks)")
  expected = truncation_signer(ledger, t.keep_blocks)
  if t.signer != expected:
    raise LedgerRefusal(f"truncate record signed by {t.signer[:12]}..., not by the leader of "
                        f"the next round {expected[:12]}...")
  message = truncation_message(ledger, t.keep_blocks, t.reason)
  if not identity_lib.signature_is_valid(ledger.state.keys[expected], message, t.signature):
    raise LedgerRefusal(f"bad signature on the truncate record by {expected[:12]}...")
  return truncated(ledger, t.keep_blocks)


def replay_records(records, min_difficulty: int = 0) -> Ledger:
  """The chain in force after every record (blocks appended, truncations applied).

  The chain's difficulty is its genesis block's, refused below `min_difficulty` (the
  verifier's, never the ledger's own say). A refusal carries the record's file name.
  """
  ledger = None
  for record in records:
    try:
      if ledger is None:
        ledger = _genesis_ledger(record, min_difficulty)
      if isinstance(record.content, store.Truncation):
        ledger = truncate(ledger, record.content)
      else:
        ledger = append(ledger, record.content)
    except LedgerRefusal as refusal:
      refusal.record_name = f"ledger/{record.path.name}"
      raise
  return ledger if ledger is not None else empty_ledger()


def _genesis_ledger(record, min_difficulty: int) -> Ledger:
  if isinstance(record.content, store.Truncation):
    raise LedgerRefusal("the first record is a truncation, not the genesis block")
  difficulty = record.content.difficulty
  if difficulty < min_difficulty:
    raise LedgerRefusal(f"proof of work: difficulty {difficulty} is below the verifier's "
                        f"minimum {min_difficulty} (--min_difficulty)", 0, record.content.round)
  return empty_ledger(difficulty)


def _check_links(ledger: Ledger, b: block_lib.Block) -> None:
  def refuse(reason):
    raise LedgerRefusal(reason, b.index, b.round)
  if ledger.state.closed:
    refuse("block after the run's closing block (only a signed truncation may follow it)")
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
  elif b.round == block_lib.CLOSING_ROUND:
    if not ledger.blocks:
      refuse("a closing block cannot open the chain")
  elif b.round != ledger.state.last_round + 1:
    refuse(f"round {b.round} follows round {ledger.state.last_round}")


@dataclasses.dataclass
class _Round:
  """What a round block has declared so far, folded transaction by transaction (one value
  per block, extended in place: each step's checks stay O(1) in m_t, not O(m_t))."""
  sampled: tuple[str, ...] = ()
  verifiers: tuple[str, ...] = ()
  rule: dict | None = None
  updates: list[tuple[str, float | None]] = dataclasses.field(default_factory=list)
  votes: list[tuple[str, tuple]] = dataclasses.field(default_factory=list)  # (verifier, entries)
  closed: bool = False
  sampled_set: frozenset = frozenset()
  updated: set = dataclasses.field(default_factory=set)  # authors of the updates so far


def _check_transactions(state: ChainState, b: block_lib.Block,
                        check_signatures: bool = True) -> ChainState:
  if b.round == block_lib.CLOSING_ROUND:
    return _check_closing(state, b, check_signatures)
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
    key = _check_signature(t, keys, refuse, check_signatures)
    if t.kind == "register_hospital":
      keys[t.author] = key
    if t.kind == "close_run":
      refuse("close_run belongs alone in the closing block")
    if t.kind == "open_run":
      state = _check_open_run(state, t, b, position, refuse)
      continue
    if is_setup != (t.kind in ("register_hospital", "register_data")):
      refuse("registrations belong in setup blocks, round records in round blocks")
    if not is_setup:
      current, epsilon = _check_round_step(current, epsilon, t, b, keys, position, refuse)
  if b.index == 0 and not state.run_id:
    raise LedgerRefusal("the genesis block does not end with open_run (run id, config hash)",
                        b.index, b.round)
  if is_setup:
    if b.leader not in keys:
      raise LedgerRefusal("leader is not a registered hospital", b.index, b.round)
    return dataclasses.replace(state, keys=types.MappingProxyType(keys), epsilon=epsilon)
  if not current.closed:
    raise LedgerRefusal("round block does not end with global_model", b.index, b.round)
  return dataclasses.replace(state, keys=types.MappingProxyType(keys), last_round=b.round,
                             epsilon=epsilon)


def _check_open_run(state: ChainState, t, b, position, refuse) -> ChainState:
  """The genesis block's last transaction: the run's id, config hash and key kind."""
  body = t.body
  if b.index != 0 or position != len(b.transactions) - 1:
    refuse("open_run belongs only at the end of the genesis block")
  if t.author != b.leader:
    refuse("open_run not signed by the genesis block's leader")
  if not isinstance(body["run_id"], str) or not _RUN_ID.fullmatch(body["run_id"]):
    refuse(f"run id {body['run_id']!r} is not 32 hex digits")
  config = body["config_sha256"]
  if config is not None and not (isinstance(config, str) and _HEX64.fullmatch(config)):
    refuse(f"config sha256 {config!r} is not 64 hex digits")
  if body["keys"] not in tx_lib.KEY_MODES:
    refuse(f"key kind {body['keys']!r}, expected one of {tx_lib.KEY_MODES}")
  return dataclasses.replace(state, run_id=body["run_id"], config_sha256=config,
                             key_mode=body["keys"])


def _check_closing(state: ChainState, b: block_lib.Block, check_signatures: bool = True
                   ) -> ChainState:
  """The closing block: one close_run by the next round's leader, over confined paths."""
  if len(b.transactions) != 1 or b.transactions[0].kind != "close_run":
    raise LedgerRefusal("the closing block holds exactly one close_run", b.index, b.round)
  t = b.transactions[0]

  def refuse(reason):
    raise LedgerRefusal(reason, b.index, b.round, 0, t.kind)
  _check_shape(t, refuse)
  _check_signature(t, dict(state.keys), refuse, check_signatures)
  leader = identity_lib.round_leader_and_verifiers(state.last_round + 1, list(state.keys), 1)[0]
  if t.author != leader or b.leader != leader:
    refuse("close_run must come from the leader of the round after the last")
  body = t.body
  if body["rounds"] != state.last_round + 1:
    refuse(f"closes {body['rounds']} rounds, the chain records {state.last_round + 1}")
  files, checkpoints = body["files"], body["checkpoints"]
  if not isinstance(files, dict) or not isinstance(checkpoints, dict):
    refuse("files and checkpoints must be objects")
  for name, digest in files.items():
    if not _safe_relative(name) or not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
      refuse(f"file entry {name!r}: a relative path inside the run folder and a sha256")
  for name, entry in checkpoints.items():
    _check_checkpoint_entry(entry, refuse, name)
  return dataclasses.replace(state, closed=True)


def _safe_relative(name) -> bool:
  """A POSIX path relative to the run folder that cannot leave it."""
  return (isinstance(name, str) and bool(name) and not name.startswith("/") and "\\" not in name
          and all(part not in ("", ".", "..") for part in name.split("/")))


def _check_checkpoint_entry(entry, refuse, name=None) -> None:
  if not isinstance(entry, dict) or set(entry) != {"path", "sha256", "files"}:
    refuse(f"checkpoint fields {sorted(entry) if isinstance(entry, dict) else entry!r}")
  path = entry["path"]
  if not isinstance(path, str) or not CHECKPOINT_PATH.fullmatch(path):
    refuse(f"checkpoint path {path!r} is not checkpoints/<step> inside the run folder")
  if name is not None and name != path:
    refuse(f"checkpoint {name!r} recorded under another path {path!r}")


def _check_shape(t: tx_lib.Transaction, refuse) -> None:
  if t.kind not in tx_lib.FIELDS:
    refuse(f"unknown transaction kind {t.kind!r}")
  body = t.body
  optional = set(tx_lib.OPTIONAL_FIELDS.get(t.kind, ()))
  if set(body) - optional != set(tx_lib.FIELDS[t.kind]) or set(body) & optional not in (
      set(), optional):
    extra = f" (optionally all of {sorted(optional)})" if optional else ""
    refuse(f"fields {sorted(body)}, expected {sorted(tx_lib.FIELDS[t.kind])}{extra}")
  if "hospital" in body and t.kind != "vote" and body["hospital"] != t.author:
    refuse("signed by another hospital than the one it names")


def _check_signature(t: tx_lib.Transaction, keys: dict, refuse, check: bool = True):
  """The author's verifying key, once the signature checks out (check False: not checked)."""
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
  if check and not identity_lib.signature_is_valid(key, t.signing_message(), t.signature):
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
    if t.author not in current.sampled_set:
      refuse("local update from a hospital not sampled this round")
    if t.author in current.updated:
      refuse("second local update from this hospital this round (replay)")
    if current.votes:
      refuse("local update after the votes")
    current.updates.append((t.author, body["local_mae"]))
    current.updated.add(t.author)
    return current, epsilon
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
  return _Round(sampled=sampled, verifiers=verifiers, rule=rule, sampled_set=frozenset(sampled))


def _check_vote(current: _Round, body, t, refuse) -> _Round:
  if body["verifier"] != t.author or t.author not in current.verifiers:
    refuse("vote from a hospital not on this round's panel")
  if any(v == t.author for v, _ in current.votes):
    refuse("second vote from this verifier this round")
  voted = tuple(v["hospital"] for v in body["votes"])
  if voted != tuple(h for h, _ in current.updates):
    refuse("vote does not cover exactly the round's local updates, in order")
  for entry in body["votes"]:
    if set(entry) != set(tx_lib.VOTE_FIELDS):
      refuse(f"vote entry fields {sorted(entry)}, expected {sorted(tx_lib.VOTE_FIELDS)}")
    if not isinstance(entry["finite"], bool) or not isinstance(entry["accept"], bool):
      refuse("a vote's finite and accept must be true or false")
    if entry["reason"] not in consensus.REASONS:
      refuse(f"verdict reason {entry['reason']!r}, expected one of {consensus.REASONS}")
    if entry["accept"] != (entry["reason"] == consensus.ACCEPTED):
      refuse(f"vote {'accepts' if entry['accept'] else 'rejects'} {entry['hospital'][:12]}... "
             f"with reason {entry['reason']!r}")
  current.votes.append((t.author, tuple(body["votes"])))
  return current


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
  spent = none_to(body["epsilon"], math.inf)
  if spent < epsilon:
    refuse(f"epsilon decreased from {epsilon} to {spent}")
  if "mechanism" in body:
    if body["mechanism"] != tx_lib.LAPLACE_LOCAL:
      refuse(f"mechanism {body['mechanism']!r}: a block names only {tx_lib.LAPLACE_LOCAL!r} "
             "(no field: gaussian_central)")
    round_epsilon = body["epsilon_round"]
    if not (isinstance(round_epsilon, (int, float)) and 0 < round_epsilon < math.inf):
      refuse(f"epsilon_round {round_epsilon!r}: expected a finite epsilon > 0")
    if body["sigma"] != 0:
      refuse(f"sigma {body['sigma']} under {tx_lib.LAPLACE_LOCAL}: the server adds no noise")
  checkpoint = body["checkpoint"]
  if checkpoint is not None:
    _check_checkpoint_entry(checkpoint, refuse)
  for field in ("metrics_sha256", "config_sha256"):
    value = body[field]
    if value is not None and not (isinstance(value, str) and _HEX64.fullmatch(value)):
      refuse(f"{field} {value!r} is not 64 hex digits")
  return dataclasses.replace(current, closed=True), spent


def _recorded(entries, field: str) -> np.ndarray:
  """One recorded field of a vote's entries as float64, None (or absent) as NaN."""
  return np.array([none_to(e.get(field)) for e in entries], np.float64)


def _check_consensus(current: _Round, accepted: set, refuse) -> None:
  """Recompute eq. 15 from the recorded MAEs, and the rule from the scores, norms, cosines."""
  rule = current.rule
  hospitals = [h for h, _ in current.updates]
  self_mae = np.array([none_to(m) for _, m in current.updates], np.float64)
  measured = np.array([_recorded(entries, "mae")
                       for _, entries in current.votes]).T  # [update, verifier]
  first = current.votes[0][1]
  scores, norms, cosines = (_recorded(first, f) for f in ("score", "norm", "cosine"))
  for _, entries in current.votes[1:]:
    for field, what in (("score", "eq. 15 scores"), ("norm", "update norms"),
                        ("cosine", "update cosines"), ("finite", "updates' finiteness")):
      if [e.get(field) for e in entries] != [e.get(field) for e in first]:
        refuse(f"verifiers disagree on the {what}")
  finite_update = np.array([e["finite"] for e in first], bool)
  parsed = consensus.ConsensusRule(**rule)
  for h, ok, score, norm in zip(hospitals, finite_update, scores, norms):
    if not ok and not np.isnan(score):
      refuse(f"non-finite update of {h[:12]}... has an eq. 15 score (the round never scores one)")
    if parsed.max_norm_ratio > 0 and ok != bool(np.isfinite(norm)):
      refuse(f"update of {h[:12]}... recorded {'finite' if ok else 'non-finite'} with norm "
             f"{norm:.6g}")
  # A non-finite update is never scored (engine._vote), whatever its MAEs.
  expected = np.where(finite_update, rule["gamma"] * self_mae + measured.mean(axis=1), np.nan)
  finite = np.isfinite(expected)
  if (not np.array_equal(finite, np.isfinite(scores))
      or np.any(np.abs(expected[finite] - scores[finite]) > SCORE_TOLERANCE)):
    refuse("eq. 15 scores do not follow from the recorded MAEs and gamma")
  for verifier, entries in current.votes:
    derived = consensus.rejection_reasons(scores, norms, cosines, finite_update, parsed,
                                          [e["accept"] for e in entries])
    for e, reason in zip(entries, derived):
      if e["reason"] != reason:
        refuse(f"verifier {verifier[:12]}... gives {e['hospital'][:12]}... the reason "
               f"{e['reason']!r}; the recorded values give {reason!r}")
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
