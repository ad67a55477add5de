"""Hospital identities: secp256k1 key pairs, node ids, and Kademlia XOR distance (eq. 10).

A hospital's node id is sha256 of its SEC1 *compressed* public key (33 bytes), kept as a
64-character hex string and read as a 256-bit integer for distances. Eq. 10 defines the
distance of two hospitals as the XOR of their ids (Kademlia, ref. [41]); XOR is a metric
(d(a, a) = 0, symmetric, and a ^ c = (a ^ b) ^ (b ^ c) <= (a ^ b) + (b ^ c)).

Keys are secrets. A run's keys are `generate_identity()`: drawn from the operating
system's CSPRNG (ecdsa's default entropy, os.urandom), kept outside the run folder
(keystore.py), and only the public keys are published on the ledger. Keys can also be
written to and loaded from PEM, which is how a real deployment would supply them (each
hospital holding its own). `hospital_identity(seed, hospital)` derives a key from the run's
seed: reproducible, and therefore worthless as a proof, since the seed is in config.json
(and can be searched from the published public keys); runs use it only on request
(`ledger.key_source = "derived"`), and verify then says so in its first line.
Each round's leader and verifiers are the hospitals whose *seats* are nearest, by eq. 10's
XOR distance, to sha256("ccfl-round:<round>"). Seat i is sha256("ccfl-seat:<i>") for the
i-th hospital registered on the ledger. Every participant agrees on the roles without a
message (they follow from the round and the registration order), and they do not depend
on the keys: a run's training (whose validation batches judge each update is part of it)
is the same for fresh random keys as for derived ones, and a hospital cannot grind key
pairs until its node id lands next to the round targets and it leads or judges at will.
"""
import dataclasses
import functools
import hashlib

import ecdsa
from ecdsa.ellipticcurve import PointJacobi
from ecdsa.util import sigdecode_der, sigencode_der

CURVE = ecdsa.SECP256k1


@dataclasses.dataclass(frozen=True)
class Identity:
  """One hospital's key pair. `signing_key` is None for an identity known only publicly."""
  public_key: bytes  # SEC1 compressed, 33 bytes
  signing_key: ecdsa.SigningKey | None = dataclasses.field(default=None, repr=False, compare=False)

  @property
  def node_id(self) -> str:
    return node_id_of(self.public_key)


def node_id_of(public_key: bytes) -> str:
  """Eq. 10's H(id): sha256 of the compressed public key, as hex."""
  return hashlib.sha256(public_key).hexdigest()


def generate_identity() -> Identity:
  """A fresh key pair from the OS's CSPRNG (os.urandom, ecdsa's default entropy)."""
  signing_key = ecdsa.SigningKey.generate(curve=CURVE, hashfunc=hashlib.sha256)
  return Identity(signing_key.get_verifying_key().to_string("compressed"), signing_key)


def hospital_identity(seed: int, hospital: int) -> Identity:
  """The derived key pair of `hospital` in the run seeded `seed`: anyone knowing the seed
  has it (simulation and tests only, see the module docstring)."""
  material = hashlib.sha256(f"ccfl-hospital-key:{seed}:{hospital}".encode()).digest()
  # Map into [1, n-1]: a secret exponent of 0 is no key.
  exponent = int.from_bytes(material, "big") % (CURVE.order - 1) + 1
  signing_key = ecdsa.SigningKey.from_secret_exponent(exponent, curve=CURVE,
                                                       hashfunc=hashlib.sha256)
  return Identity(signing_key.get_verifying_key().to_string("compressed"), signing_key)


def identity_to_pem(identity: Identity) -> bytes:
  return identity.signing_key.to_pem()


def identity_from_pem(pem: bytes | str) -> Identity:
  signing_key = ecdsa.SigningKey.from_pem(pem, hashfunc=hashlib.sha256)
  if signing_key.curve != CURVE:
    raise ValueError(f"key is on {signing_key.curve.name}, expected secp256k1")
  return Identity(signing_key.get_verifying_key().to_string("compressed"), signing_key)


def compressed_public_key(data: bytes) -> bytes:
  """A secp256k1 public key (SEC1 compressed or uncompressed, or raw x||y) as compressed bytes;
  ValueError if it is not a point of the curve."""
  try:
    return ecdsa.VerifyingKey.from_string(data, curve=CURVE).to_string("compressed")
  except Exception as error:  # the parser raises several kinds for a malformed key
    raise ValueError(f"not a secp256k1 public key ({error})") from None


def sign(identity: Identity, message: bytes) -> str:
  """Deterministic (RFC 6979) ECDSA over sha256(message), DER, as hex."""
  digest = hashlib.sha256(message).digest()
  return identity.signing_key.sign_digest_deterministic(
      digest, hashfunc=hashlib.sha256, sigencode=sigencode_der).hex()


@functools.lru_cache(maxsize=4096)
def verifying_key(public_key: bytes) -> ecdsa.VerifyingKey:
  """A verifier for `public_key`, precomputed: verifying a long ledger reuses it thousands of times.

  Memoized: precomputing costs about 10 ms, as much as a dozen verifications, and every
  replay of a ledger (open, append, verify) needs the same few keys. The cache holds values
  of a pure function of `public_key`, never anything a caller could observe changing.
  """
  point = ecdsa.VerifyingKey.from_string(public_key, curve=CURVE).pubkey.point
  # from_string leaves the point without its order, which precompute() needs; a point that
  # knows it is a multiple of the generator verifies about 3x faster once precomputed.
  point = PointJacobi(CURVE.curve, point.x(), point.y(), 1, CURVE.order, generator=True)
  key = ecdsa.VerifyingKey.from_public_point(point, curve=CURVE, hashfunc=hashlib.sha256)
  key.precompute()
  return key


def signature_is_valid(key: ecdsa.VerifyingKey, message: bytes, signature_hex: str) -> bool:
  try:
    return key.verify_digest(bytes.fromhex(signature_hex), hashlib.sha256(message).digest(),
                             sigdecode=sigdecode_der)
  except (ecdsa.BadSignatureError, ecdsa.der.UnexpectedDER, ValueError):
    return False


def xor_distance(a: str, b: str) -> int:
  """Eq. 10: d(H_i, H_j) = H_i(id) XOR H_j(id), ids as 256-bit integers."""
  return int(a, 16) ^ int(b, 16)


def k_nearest(target_id: str, ids, k: int) -> tuple[str, ...]:
  """The k ids nearest to target_id by eq. 10, nearest first (distinct ids never tie)."""
  return tuple(sorted(ids, key=lambda i: (xor_distance(target_id, i), i))[:k])


def round_target(round_index: int) -> str:
  return hashlib.sha256(f"ccfl-round:{round_index}".encode()).hexdigest()


def seat_id(seat: int) -> str:
  """The eq. 10 position of the seat-th registered hospital (0-based)."""
  return hashlib.sha256(f"ccfl-seat:{seat}".encode()).hexdigest()


def round_leader_and_verifiers(round_index: int, ids, num_verifiers: int
                               ) -> tuple[str, tuple[str, ...]]:
  """The round's leader and verifier panel: the hospitals of the num_verifiers seats nearest
  sha256(round). `ids` are the node ids in registration order (seat i holds ids[i]).

  The leader is the nearest of them and also sits on the panel.
  """
  ids = list(ids)
  if not ids:
    raise ValueError("no registered hospitals")
  by_seat = {seat_id(seat): node for seat, node in enumerate(ids)}
  seats = k_nearest(round_target(round_index), list(by_seat), max(1, num_verifiers))
  panel = tuple(by_seat[s] for s in seats)
  return panel[0], panel
