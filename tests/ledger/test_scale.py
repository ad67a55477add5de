"""The ledger at scale (issue 12): libsecp256k1 signatures in the ledger's one format, a
100-hospital round trip, and every tampering of a signature, a digest or a transaction
still found by verify, including a bad signature that the writer (which does not re-check
its own fresh signatures) persisted."""
import dataclasses
import hashlib
import shutil

import numpy as np
import pytest
from ecdsa.util import sigdecode_der, sigencode_der
from hypothesis import given, settings
from hypothesis import strategies as st

from ccfl_jax.ledger import audit
from ccfl_jax.ledger import block as block_lib
from ccfl_jax.ledger import consensus
from ccfl_jax.ledger import digests
from ccfl_jax.ledger import identity
from ccfl_jax.ledger import run_ledger
from ccfl_jax.ledger import store
from ccfl_jax.ledger import transactions as tx_lib
from ccfl_jax.ledger import validate
from ccfl_jax.ledger.canonical import canonical_json, sha256_hex

N = identity.CURVE.order
H, DELTA, SIGMA = 100, 1e-5, 1.0


def python_ecdsa_signature(hospital, message: bytes) -> bytes:
  """What identity.sign wrote before libsecp256k1 (python-ecdsa, RFC 6979, s as it came)."""
  return hospital.signing_key.sign_digest_deterministic(
      hashlib.sha256(message).digest(), hashfunc=hashlib.sha256, sigencode=sigencode_der)


def test_signatures_are_python_ecdsas_with_low_s_and_old_ones_still_verify():
  high = 0
  for h in range(40):
    hospital = identity.hospital_identity(3, h)
    message = f"round {h}".encode()
    old = python_ecdsa_signature(hospital, message)
    r, s = sigdecode_der(old, N)
    new = identity.sign(hospital, message)
    assert bytes.fromhex(new) == sigencode_der(r, min(s, N - s), N)  # same nonce, same r
    key = identity.verifying_key(hospital.public_key)
    assert identity.signature_is_valid(key, message, new)
    assert identity.signature_is_valid(key, message, old.hex())  # older ledgers' high-S ones
    assert not identity.signature_is_valid(key, message + b"!", old.hex())
    other = identity.verifying_key(identity.hospital_identity(3, h + 1).public_key)
    assert not identity.signature_is_valid(other, message, new)
    high += s > N // 2
  assert 5 < high < 35  # both halves were exercised


def test_only_strict_der_signatures_with_r_and_s_in_range_verify():
  hospital = identity.hospital_identity(0, 0)
  key = identity.verifying_key(hospital.public_key)
  message = b"m"
  good = bytes.fromhex(identity.sign(hospital, message))
  r, s = sigdecode_der(good, N)

  def der(*integers, extra=b""):
    body = b"".join(b"\x02" + bytes([len(i)]) + i for i in integers) + extra
    return (b"\x30" + bytes([len(body)]) + body).hex()

  def minimal(value):
    return value.to_bytes(value.bit_length() // 8 + 1, "big")

  assert identity.signature_is_valid(key, message, der(minimal(r), minimal(s)))
  assert identity.signature_is_valid(key, message, der(minimal(r), minimal(N - s)))  # high-S twin
  refused = {
      "trailing byte": good.hex() + "00",
      "non-minimal integer": der(b"\x00" + minimal(r), minimal(s)),
      "negative integer": der(b"\x80" + minimal(r)[-31:], minimal(s)),
      "r = 0": der(b"\x00", minimal(s)),
      "s = n": der(minimal(r), minimal(N)),
      "s = n + s": der(minimal(r), minimal(N + s)),
      "wrong sequence length": "30ff" + good.hex()[4:],
      "not hex": "zz" + good.hex()[2:],
      "empty": "",
  }
  for what, signature in refused.items():
    assert not identity.signature_is_valid(key, message, signature), what


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(sorted(tx_lib.FIELDS)), st.text(max_size=20),
       st.dictionaries(st.text(max_size=8), st.one_of(
           st.none(), st.booleans(), st.integers(), st.text(max_size=10),
           st.floats(allow_nan=False, allow_infinity=False),
           st.lists(st.integers(), max_size=3)), max_size=5),
       st.text(alphabet="0123456789abcdef", max_size=20))
def test_spliced_signing_message_and_digest_are_the_canonical_encodings(kind, author, body,
                                                                        signature):
  t = tx_lib.Transaction(kind, author, canonical_json(body).decode("utf-8"), signature)
  assert t.signing_message() == tx_lib.signing_message(kind, author, body)
  assert t.digest() == sha256_hex(canonical_json(t.to_json()))
  assert t.digest() == t.digest()
  assert dataclasses.replace(t, signature=signature + "0").digest() != t.digest()


# A 100-hospital run: two rounds, every hospital sampled.

def evidence_of(run, r, rng):
  """A round's evidence without training or 60k-parameter updates (what record_round reads)."""
  mae = rng.uniform(0.15, 0.25, (H, run.num_verifiers)).astype(np.float32)
  self_mae = rng.uniform(0.1, 0.2, H).astype(np.float32)
  scores = np.asarray(consensus.vote_scores(mae, self_mae, run.consensus.gamma))
  accepted = np.asarray(consensus.decide(scores, None, None, run.consensus))
  evidence = run_ledger.RoundEvidence(tuple(range(H)), tuple(rng.bytes(32).hex() for _ in range(H)),
                                      self_mae, mae, scores, accepted)
  epsilon = audit.accountant_epsilon(H, [(H, SIGMA)] * (r + 1), DELTA)
  return evidence, run_ledger.GlobalModelRecord(epsilon, DELTA, SIGMA, 1.0,
                                                params_digest=rng.bytes(32).hex())


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("scale") / "run"
  run = run_ledger.open_run_ledger(run_dir, seed=0, num_hospitals=H, keys="derived")
  rng = np.random.default_rng(0)
  for r in range(2):
    run = run_ledger.record_round(run, r, run_ledger.round_roles(run, r), *evidence_of(run, r, rng))
  return run


def test_a_100_hospital_run_verifies_with_every_signature_checked(big_run):
  keys = [h.public_key for h in big_run.hospitals]
  report = audit.verify_run(big_run.run_dir, trusted_keys=keys, head=big_run.ledger.head_hash)
  assert report.ok, report.failure
  assert (report.blocks, report.rounds) == (3, 2)
  assert report.transactions == H + 1 + 2 * (1 + H + 3 + 1)  # genesis + 2 round blocks
  assert [len(b.transactions) for b in big_run.ledger.blocks] == [H + 1, H + 5, H + 5]
  again = run_ledger.open_run_ledger(big_run.run_dir, 0, H, keys="derived")  # resume replays it
  assert again.ledger.head_hash == big_run.ledger.head_hash


def rewritten(run, tmp_path, change):
  """A copy of `run` whose last block's transactions went through change(transactions),
  re-sealed and re-recorded with consistent hashes: only a signature can tell."""
  copy = tmp_path / "forged"
  shutil.copytree(run.run_dir, copy)
  last = run.ledger.blocks[-1]
  transactions = change(list(last.transactions))
  forged = block_lib.seal(last.index, last.prev_hash, last.round, last.leader, transactions,
                          last.difficulty)
  records = store.read_records(store.ledger_dir(copy))
  records[-1].path.unlink()
  store.write_record(store.ledger_dir(copy), records[-1].seq,
                     records[-2].record_sha256, forged)
  return copy, forged


def update_at(transactions, k=50):
  positions = [i for i, t in enumerate(transactions) if t.kind == "local_update"]
  return positions[k]


def with_body(t, **fields):
  return dataclasses.replace(t, body_json=canonical_json({**t.body, **fields}).decode("utf-8"))


def test_tampered_digest_signature_or_vote_fails_verify_naming_the_transaction(big_run,
                                                                               tmp_path):
  def digest(transactions):  # another update's digest under the author's signature
    i = update_at(transactions)
    transactions[i] = with_body(transactions[i], update_sha256="ab" * 32)
    return transactions

  def signature(transactions):  # one bit of s flipped: still strict DER, no longer valid
    i = update_at(transactions)
    raw = bytearray(bytes.fromhex(transactions[i].signature))
    raw[-1] ^= 1
    transactions[i] = dataclasses.replace(transactions[i], signature=raw.hex())
    return transactions

  def impostor(transactions):  # signed by a registered hospital other than its author
    i = update_at(transactions)
    other = next(h for h in big_run.hospitals if h.node_id != transactions[i].author)
    transactions[i] = dataclasses.replace(
        transactions[i], signature=identity.sign(other, transactions[i].signing_message()))
    return transactions

  def vote(transactions):  # a verifier's vote on one update turned around
    i = next(i for i, t in enumerate(transactions) if t.kind == "vote")
    votes = transactions[i].body["votes"]
    votes[7] = {**votes[7], "mae": 0.9}
    transactions[i] = with_body(transactions[i], votes=votes)
    return transactions

  block = len(big_run.ledger.blocks) - 1
  for name, change, position in (("digest", digest, None), ("signature", signature, None),
                                 ("impostor", impostor, None), ("vote", vote, H + 1)):
    position = position or update_at(list(big_run.ledger.blocks[-1].transactions))
    folder, _ = rewritten(big_run, tmp_path / name, change)
    report = audit.verify_run(folder)
    assert not report.ok, name
    assert report.failure.startswith(f"block {block} (round 1), transaction {position} "), name
    assert "bad signature by" in report.failure, (name, report.failure)


def test_tampered_transaction_under_the_old_merkle_root_fails_verify(big_run, tmp_path):
  folder = tmp_path / "edited"
  shutil.copytree(big_run.run_dir, folder)
  records = store.read_records(store.ledger_dir(folder))
  body = records[-1].content.to_json()
  local = next(t for t in body["transactions"] if t["kind"] == "local_update")
  local["body"]["local_mae"] = 0.0
  records[-1].path.unlink()
  store.write_record(store.ledger_dir(folder), records[-1].seq, records[-2].record_sha256,
                     block_lib.from_json(body))
  report = audit.verify_run(folder)
  assert not report.ok and "Merkle root does not match the transactions" in report.failure


def test_high_s_twin_verifies_but_is_not_the_pinned_head(big_run, tmp_path):
  """ECDSA malleability (identity.py): (r, n - s) is as valid as (r, s); it changes no claim,
  but it changes the block hash, so a pinned head tells the copy from the published run."""
  def twin(transactions):
    i = update_at(transactions)
    r, s = sigdecode_der(bytes.fromhex(transactions[i].signature), N)
    transactions[i] = dataclasses.replace(transactions[i],
                                          signature=sigencode_der(r, N - s, N).hex())
    return transactions
  folder, forged = rewritten(big_run, tmp_path, twin)
  assert audit.verify_run(folder).ok
  report = audit.verify_run(folder, head=big_run.ledger.head_hash)
  assert not report.ok and "is not in the ledger" in report.failure
  assert forged.hash != big_run.ledger.head_hash


def test_a_bad_signature_the_writer_persisted_is_refused_on_resume_and_by_verify(tmp_path,
                                                                                 monkeypatch):
  """The writer does not re-check the signatures it just made (validate.append(signed_here=
  True)); everything that reads the ledger back does."""
  run = run_ledger.open_run_ledger(tmp_path / "run", seed=0, num_hospitals=5, keys="derived")
  rng = np.random.default_rng(0)
  honest_sign = identity.sign
  impostor = identity.hospital_identity(99, 0)
  monkeypatch.setattr(identity, "sign", lambda who, message: honest_sign(impostor, message))
  mae = rng.uniform(0.15, 0.25, (5, 3))
  scores = np.asarray(consensus.vote_scores(mae, np.full(5, 0.1), 0.5))
  evidence = run_ledger.RoundEvidence(tuple(range(5)), tuple("cd" * 32 for _ in range(5)),
                                      np.full(5, 0.1), mae, scores,
                                      np.asarray(consensus.decide(scores, None, None,
                                                                  run.consensus)))
  model = run_ledger.GlobalModelRecord(audit.accountant_epsilon(5, [(5, 1.0)], DELTA), DELTA,
                                       1.0, 1.0, params_digest="ef" * 32)
  run = run_ledger.record_round(run, 0, run_ledger.round_roles(run, 0), evidence, model)
  monkeypatch.undo()
  with pytest.raises(validate.LedgerRefusal, match="block 1 .round 0., transaction 0 "
                     ".round_start.: bad signature"):
    validate.append(validate.replay(run.ledger.blocks[:1], run.ledger.state.difficulty),
                    run.ledger.blocks[1])
  with pytest.raises(validate.LedgerRefusal, match="bad signature"):
    run_ledger.open_run_ledger(run.run_dir, 0, 5, keys="derived")
  report = audit.verify_run(run.run_dir)
  assert not report.ok and report.failure.startswith("block 1 (round 0), transaction 0")
  assert "bad signature" in report.failure and "ledger/00000001.json" in report.failure


def old_update_digest(tree) -> str:
  """digests.update_digest as it was (bytes copied out with tobytes): digests on older
  ledgers must not change."""
  import jax
  digest = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, leaf in sorted(((jax.tree_util.keystr(p), l) for p, l in leaves),
                           key=lambda item: item[0]):
    array = np.asarray(leaf)
    array = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
    header = canonical_json({"path": path, "dtype": array.dtype.str, "shape": list(array.shape)})
    digest.update(len(header).to_bytes(8, "big") + header)
    digest.update(array.tobytes())
  return digest.hexdigest()


def test_stacked_update_digests_equal_each_entrys_digest_as_before():
  import ml_dtypes
  from ccfl_jax import tree_util
  rng = np.random.default_rng(0)
  n = 7
  stacked = {"conv": {"kernel": rng.normal(size=(n, 3, 3, 2)).astype(np.float32),
                      "bias": rng.normal(size=(n, 2)).astype(">f4")},  # big-endian on the host
             "head": [rng.normal(size=(n, 5)).astype(ml_dtypes.bfloat16),
                      rng.integers(-9, 9, (n, 4)).astype(np.int8)],
             "scale": rng.normal(size=n),              # a scalar per entry
             "mask": rng.random((n, 3)) < 0.5,
             "strided": rng.normal(size=(n, 6)).astype(np.float32)[:, ::2]}  # not contiguous
  entries = tree_util.unstack(stacked)
  expected = tuple(old_update_digest(e) for e in entries)
  assert len(set(expected)) == n
  assert digests.update_digests(stacked) == expected
  assert tuple(digests.update_digest(e) for e in entries) == expected
  assert digests.update_digests({}) == ()


def test_records_are_written_as_the_canonical_json_of_the_whole_record(big_run):
  """store writes a block's record spliced from its transactions' encodings: the bytes are
  canonical_json of the record as a JSON value, byte for byte (what read_records demands)."""
  records = store.read_records(store.ledger_dir(big_run.run_dir))
  for record in records:
    value = {"seq": record.seq, "kind": "block", "body": record.content.to_json(),
             "prev_record_sha256": records[record.seq - 1].record_sha256 if record.seq
             else store.GENESIS_RECORD_HASH}
    assert record.record_sha256 == sha256_hex(canonical_json(value))
    assert record.path.read_bytes() == canonical_json({**value,
                                                       "record_sha256": record.record_sha256})
  truncation = store.Truncation(1, "résumé \u2028 \"quoted\"", "ab" * 32, "3044")
  data, sha = store._encoded_record(5, "cd" * 32, truncation)
  value = {"seq": 5, "kind": "truncate", "prev_record_sha256": "cd" * 32,
           "body": {"keep_blocks": 1, "reason": truncation.reason, "signer": "ab" * 32,
                    "signature": "3044"}}
  assert (data, sha) == (canonical_json({**value, "record_sha256": sha256_hex(
      canonical_json(value))}), sha256_hex(canonical_json(value)))
