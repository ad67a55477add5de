"""The one byte encoding that everything on the ledger is hashed and signed over.

Canonical JSON: keys sorted, no whitespace (separators `,` and `:`), UTF-8, no NaN or
infinity (`allow_nan=False`: a non-finite number must be stored as null by the caller,
`ccfl_jax.nulls.finite_or_none`, so that two writers never disagree on its spelling). Bytes travel as lowercase hex strings,
integers as JSON integers, floats as Python's shortest round-tripping repr. The same value
therefore always encodes to the same bytes, and re-encoding a parsed record reproduces the
file byte for byte, which is how a flipped byte that still parses is caught.
"""
import hashlib
import json


def canonical_json(value) -> bytes:
  """The canonical UTF-8 bytes of a JSON-able value (see module docstring)."""
  return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                    allow_nan=False).encode("utf-8")


def canonical_text(value) -> str:
  """canonical_json as a str (a str value by json's own string encoder: what json.dumps
  calls for it with ensure_ascii=False, without building an encoder)."""
  if isinstance(value, str):
    return json.encoder.encode_basestring(value)
  return canonical_json(value).decode("utf-8")


def canonical_object(encoded: dict[str, str]) -> str:
  """canonical_text({key: value}) from each value's canonical_text, without decoding and
  re-encoding them: how a transaction's signed message and hashed encoding and a block's
  record are built from a transaction's body_json (the same bytes, tested)."""
  return "{" + ",".join(f"{canonical_text(key)}:{encoded[key]}" for key in sorted(encoded)) + "}"


def sha256_hex(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()
