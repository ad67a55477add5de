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

Signatures: ECDSA on secp256k1 over sha256(message), RFC 6979 deterministic nonces, DER, as
hex, the one format the ledger has always had. They are made and checked by libsecp256k1
(through `coincurve`, pinned in pyproject.toml: ~60 us to sign, ~70 us to verify, 20-30x
python-ecdsa, whose pure-Python arithmetic made signatures 90% of the ledger's time and
would have cost ~3.6 s per round at m_t = 1,000). python-ecdsa stays for what is not on the
hot path: key generation from os.urandom, PEM files (keystores written before keep
loading) and parsing public keys handed in by auditors. Same key, same message: the same
nonce, so the same r, and s is the one of {s, n - s} at most n / 2 (libsecp256k1 signs
"low-S"); python-ecdsa left s as it came, so about half the signatures of older ledgers
are high-S. `signature_is_valid` accepts both (it maps s > n / 2 to n - s before
libsecp256k1, which accepts low-S only, checks it), exactly the signatures python-ecdsa
accepted: (r, s) verifies iff (r, n - s) does, so nothing a forger could not already sign
becomes valid. The DER must be strict (minimal lengths and integers, nothing trailing,
0 < r, s < n), as python-ecdsa's encoder always wrote it. That s and n - s both verify (ECDSA
malleability) lets anyone flip a signature's bytes without a key, as before; the flipped
ledger says the same thing signed by the same hospitals, and the transaction's hash, the
Merkle root and every later block hash change, so a pinned head (`verify --head`) still
tells it from the published one.
"""
import dataclasses
import functools
import hashlib
import importlib.metadata

import coincurve
import ecdsa

CURVE = ecdsa.SECP256k1
_ORDER = CURVE.order
BACKEND = f"libsecp256k1 (coincurve {importlib.metadata.version('coincurve')})"


@dataclasses.dataclass(frozen=True)
class Identity:
  """One hospital's key pair. `signing_key` is None for an identity known only publicly."""
  public_key: bytes  # SEC1 compressed, 33 bytes
  signing_key: ecdsa.SigningKey | None = dataclasses.field(default=None, repr=False, compare=False)
  # The same secret for libsecp256k1, which signs (derived from signing_key).
  _signer: coincurve.PrivateKey | None = dataclasses.field(
      default=None, init=False, repr=False, compare=False)

  def __post_init__(self):
    if self.signing_key is not None:
      secret = self.signing_key.privkey.secret_multiplier.to_bytes(32, "big")
      object.__setattr__(self, "_signer", coincurve.PrivateKey(secret))

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
  """Deterministic (RFC 6979) ECDSA over sha256(message), DER, low-S, as hex."""
  return identity._signer.sign(hashlib.sha256(message).digest(), hasher=None).hex()


@functools.lru_cache(maxsize=1 << 16)
def verifying_key(public_key: bytes) -> coincurve.PublicKey:
  """A verifier for `public_key` (SEC1 bytes); ValueError if it is not a point of the curve.

  Memoized (parsing costs ~10 us, and every replay of a ledger needs the same keys); the
  cache holds values of a pure function of `public_key`.
  """
  return coincurve.PublicKey(bytes(public_key))


def clear_key_cache() -> None:
  """Forget the parsed keys (benchmarks time a cold start with it)."""
  verifying_key.cache_clear()


def _der_integer(data: bytes, at: int) -> tuple[int, int]:
  """A strict DER INTEGER at data[at:] in [1, n - 1]: (value, offset after it); ValueError."""
  if at + 2 > len(data) or data[at] != 0x02:
    raise ValueError("not a DER integer")
  size = data[at + 1]
  body = data[at + 2:at + 2 + size]
  if size == 0 or size > 33 or len(body) != size or body[0] & 0x80:
    raise ValueError("bad DER integer length or sign")
  if size > 1 and body[0] == 0 and not body[1] & 0x80:
    raise ValueError("non-minimal DER integer")
  value = int.from_bytes(body, "big")
  if not 0 < value < _ORDER:
    raise ValueError("DER integer outside [1, n - 1]")
  return value, at + 2 + size


def _der_integer_bytes(value: int) -> bytes:
  body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading 0 keeps it positive
  return bytes((0x02, len(body))) + body


def low_s_der(signature: bytes) -> bytes:
  """The strict-DER ECDSA signature (r, s) as (r, min(s, n - s)); ValueError if not strict DER
  with 0 < r, s < n (module docstring)."""
  if len(signature) < 8 or signature[0] != 0x30 or signature[1] != len(signature) - 2:
    raise ValueError("not a DER sequence of the signature's length")
  r, at = _der_integer(signature, 2)
  s, end = _der_integer(signature, at)
  if end != len(signature):
    raise ValueError("bytes after the DER signature")
  if 2 * s <= _ORDER:
    return signature
  pair = _der_integer_bytes(r) + _der_integer_bytes(_ORDER - s)
  return bytes((0x30, len(pair))) + pair


def signature_is_valid(key: coincurve.PublicKey, message: bytes, signature_hex: str) -> bool:
  """Whether signature_hex is `key`'s ECDSA signature of sha256(message), low- or high-S."""
  try:
    signature = low_s_der(bytes.fromhex(signature_hex))
    return key.verify(signature, hashlib.sha256(message).digest(), hasher=None)
  except (ValueError, TypeError):
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
