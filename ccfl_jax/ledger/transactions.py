"""Ledger transactions: who did what, signed by the one who did it.

A transaction is (kind, author, body, signature). `author` is the signer's node id
(identity.py); `body` is a JSON object whose fields per kind are listed in `FIELDS`. The
signature is ECDSA secp256k1 (deterministic, RFC 6979, DER, hex) over sha256 of the
canonical encoding (canonical.py: sorted-key compact JSON, UTF-8, bytes as hex) of
{"kind", "author", "body"}. The transaction's hash, the Merkle leaf of its block, is sha256
of the canonical encoding of all four fields, so it also covers the signature.

Kinds, and who signs them:
- register_hospital (the hospital itself): its compressed public key and node id.
- open_run (the genesis block's leader, after every register_hospital): the run's random
  id, the sha256 of its config.json (or null) and how its keys were made ("random",
  "derived" from the seed, or "pem"). It ties the ledger to one run folder and one config.
- register_data (the hospital): data type, patient and slice counts, sha256 of the data
  manifest. Never data: the paper keeps images at the hospital (section "Blockchain based
  fast and effective Federated Learning").
- round_start (the round's leader): the hospitals sampled this round, the verifier panel,
  and the consensus rule in force. Recording the sample is what lets validation refuse a
  local update from a hospital that was not sampled.
- local_update (the sampled hospital): round, sha256 of its clipped update, its own
  validation MAE (eq. 14).
- vote (a verifier): round and, per local update (VOTE_FIELDS), the MAE the verifier
  measured on its own batch (eq. 14), the combined score (eq. 15), the submitted norm and
  the cosine with the median update (null unless the rule's checks read them), whether the
  update is finite (no NaN/Inf), accept/reject and the verdict's reason
  (consensus.REASONS: accepted, non_finite_update, vote_score, direction, norm).
- global_model (the round's leader): round, sha256 of the orbax checkpoint (or null in a
  round without one) and of the global parameters, epsilon and delta spent so far, sigma,
  S, m_t, the accepted hospitals, and the sha256 of the round's metrics.jsonl line and of
  the config.json in force (each null when the loop does not supply it). Under the local
  Laplace mechanism (privacy.mechanism = laplace_local) also `mechanism` ("laplace_local")
  and `epsilon_round`, the round's epsilon per submission (OPTIONAL_FIELDS: absent, the
  round is gaussian_central's; so ledgers written before the Laplace mechanism still verify
  and a gaussian run's blocks are unchanged); S is then the L1 bound B and sigma 0.
- close_run (the leader the next round would have, alone in the closing block): the number
  of rounds, the sha256 of each output file (summary.json, summary.md, curves.png, ...) and
  the digest of each final checkpoint folder. Nothing may follow it but a signed truncation.
"""
import dataclasses
import json

from ccfl_jax.ledger import identity as identity_lib
from ccfl_jax.ledger.canonical import canonical_json, canonical_object, canonical_text, sha256_hex
from ccfl_jax.nulls import finite_or_none

FIELDS = {
    "register_hospital": ("hospital", "public_key"),
    "open_run": ("run_id", "config_sha256", "keys"),
    "register_data": ("hospital", "data_type", "num_patients", "num_slices", "manifest_sha256"),
    "round_start": ("round", "sampled", "verifiers", "consensus"),
    "local_update": ("round", "hospital", "update_sha256", "local_mae"),
    "vote": ("round", "verifier", "votes"),
    "global_model": ("round", "checkpoint", "params_sha256", "epsilon", "delta", "sigma",
                     "clip_norm", "num_sampled", "accepted", "metrics_sha256", "config_sha256"),
    "close_run": ("rounds", "files", "checkpoints"),
}
# Fields a kind may carry beside FIELDS: all of them or none.
OPTIONAL_FIELDS = {"global_model": ("mechanism", "epsilon_round")}
LAPLACE_LOCAL = "laplace_local"  # privacy.MECHANISMS' local mechanism, as a block names it
VOTE_FIELDS = ("hospital", "mae", "score", "norm", "cosine", "finite", "accept", "reason")
KEY_MODES = ("random", "derived", "pem")


@dataclasses.dataclass(frozen=True)
class Transaction:
  kind: str
  author: str       # node id of the signer
  body_json: str    # canonical JSON of the body (canonical.py): a str keeps the value immutable
  signature: str    # hex DER

  @property
  def body(self) -> dict:
    """A fresh copy of the body: mutating it cannot change the transaction."""
    return json.loads(self.body_json)

  def signing_message(self) -> bytes:
    """signing_message(kind, author, body), spliced from body_json (no re-encoding)."""
    return _spliced({"author": self.author, "kind": self.kind}, self.body_json)

  def canonical_text(self) -> str:
    """canonical_text(self.to_json()), spliced from body_json."""
    return _spliced_text({"author": self.author, "kind": self.kind,
                          "signature": self.signature}, self.body_json)

  def to_json(self) -> dict:
    return {"kind": self.kind, "author": self.author, "body": self.body,
            "signature": self.signature}

  def digest(self) -> str:
    """The Merkle leaf: sha256 of the canonical encoding of all four fields (memoized: the
    fields are immutable; sealing and validating a block both need every leaf)."""
    cached = self.__dict__.get("_digest")
    if cached is None:
      cached = sha256_hex(self.canonical_text().encode("utf-8"))
      object.__setattr__(self, "_digest", cached)
    return cached


def signing_message(kind: str, author: str, body: dict) -> bytes:
  return canonical_json({"kind": kind, "author": author, "body": body})


def _spliced_text(fields: dict, body_json: str) -> str:
  """canonical_text({**fields, "body": json.loads(body_json)}) for a canonical body_json,
  without decoding and re-encoding the body (canonical.canonical_object)."""
  return canonical_object({**{name: canonical_text(value) for name, value in fields.items()},
                           "body": body_json})


def _spliced(fields: dict, body_json: str) -> bytes:
  return _spliced_text(fields, body_json).encode("utf-8")


def signed(signer: identity_lib.Identity, kind: str, body: dict) -> Transaction:
  author = signer.node_id
  body_json = canonical_json(body).decode("utf-8")  # encoded once, spliced into the message
  signature = identity_lib.sign(signer, _spliced({"author": author, "kind": kind}, body_json))
  return Transaction(kind, author, body_json, signature)


def from_json(record: dict) -> Transaction:
  if set(record) != {"kind", "author", "body", "signature"}:
    raise ValueError(f"transaction fields {sorted(record)}")
  return Transaction(record["kind"], record["author"],
                     canonical_json(record["body"]).decode("utf-8"), record["signature"])


def register_hospital(hospital: identity_lib.Identity) -> Transaction:
  return signed(hospital, "register_hospital",
                {"hospital": hospital.node_id, "public_key": hospital.public_key.hex()})


def open_run(leader: identity_lib.Identity, run_id: str, config_sha256: str | None,
             keys: str) -> Transaction:
  return signed(leader, "open_run", {"run_id": str(run_id), "config_sha256": config_sha256,
                                     "keys": str(keys)})


def register_data(hospital: identity_lib.Identity, data_type: str, num_patients: int,
                  num_slices: int, manifest_sha256: str) -> Transaction:
  return signed(hospital, "register_data", {
      "hospital": hospital.node_id, "data_type": str(data_type),
      "num_patients": int(num_patients), "num_slices": int(num_slices),
      "manifest_sha256": str(manifest_sha256)})


def round_start(leader: identity_lib.Identity, round_index: int, sampled, verifiers,
                consensus: dict) -> Transaction:
  return signed(leader, "round_start", {
      "round": int(round_index), "sampled": list(sampled), "verifiers": list(verifiers),
      "consensus": dict(consensus)})


def local_update(hospital: identity_lib.Identity, round_index: int, update_sha256: str,
                 local_mae: float) -> Transaction:
  return signed(hospital, "local_update", {
      "round": int(round_index), "hospital": hospital.node_id,
      "update_sha256": str(update_sha256), "local_mae": finite_or_none(local_mae)})


def vote(verifier: identity_lib.Identity, round_index: int, votes) -> Transaction:
  """votes: iterable of (hospital id, measured MAE, eq. 15 score, submitted update norm,
  cosine with the median update, update finite, accept, reason); norm and cosine may be NaN
  (not measured)."""
  return signed(verifier, "vote", {
      "round": int(round_index), "verifier": verifier.node_id,
      "votes": [{"hospital": h, "mae": finite_or_none(mae), "score": finite_or_none(score),
                 "norm": finite_or_none(norm), "cosine": finite_or_none(cosine),
                 "finite": bool(finite), "accept": bool(accept), "reason": str(reason)}
                for h, mae, score, norm, cosine, finite, accept, reason in votes]})


def global_model(leader: identity_lib.Identity, round_index: int, checkpoint: dict | None,
                 params_sha256: str | None, epsilon: float, delta: float, sigma: float,
                 clip_norm: float, num_sampled: int, accepted, metrics_sha256: str | None = None,
                 config_sha256: str | None = None,
                 laplace_epsilon: float | None = None) -> Transaction:
  """checkpoint: {"path": relative to the run dir, "sha256", "files": {path: sha256}} or None;
  laplace_epsilon: the round's epsilon per submission under laplace_local (None: the round
  is gaussian_central's, and the optional fields are left out)."""
  body = {
      "round": int(round_index), "checkpoint": checkpoint, "params_sha256": params_sha256,
      "epsilon": finite_or_none(epsilon), "delta": float(delta), "sigma": float(sigma),
      "clip_norm": float(clip_norm), "num_sampled": int(num_sampled),
      "accepted": list(accepted), "metrics_sha256": metrics_sha256,
      "config_sha256": config_sha256}
  if laplace_epsilon is not None:
    body.update(mechanism=LAPLACE_LOCAL, epsilon_round=float(laplace_epsilon))
  return signed(leader, "global_model", body)


def close_run(leader: identity_lib.Identity, rounds: int, files: dict,
              checkpoints: dict) -> Transaction:
  """files: {name relative to the run dir: sha256}; checkpoints: {name: checkpoint entry}."""
  return signed(leader, "close_run", {"rounds": int(rounds), "files": dict(files),
                                      "checkpoints": dict(checkpoints)})
