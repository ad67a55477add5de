"""Identities: deterministic keys, PEM, signatures, and eq. 10's XOR distance as a metric."""
import hypothesis.strategies as st
from hypothesis import given, settings

from ccfl_jax.ledger import identity

node_ids = st.integers(min_value=0, max_value=2**256 - 1).map(lambda i: f"{i:064x}")


@settings(max_examples=200, deadline=None)
@given(node_ids, node_ids, node_ids)
def test_xor_distance_is_a_metric(a, b, c):
  d = identity.xor_distance
  assert d(a, a) == 0
  assert d(a, b) == d(b, a)
  assert (d(a, b) == 0) == (a == b)
  assert d(a, c) <= d(a, b) + d(b, c)


@settings(max_examples=50, deadline=None)
@given(st.lists(node_ids, min_size=1, max_size=20, unique=True), node_ids,
       st.integers(min_value=1, max_value=25))
def test_k_nearest_is_sorted_by_distance_and_order_free(ids, target, k):
  nearest = identity.k_nearest(target, ids, k)
  assert len(nearest) == min(k, len(ids))
  distances = [identity.xor_distance(target, i) for i in nearest]
  assert distances == sorted(distances)
  assert nearest == identity.k_nearest(target, list(reversed(ids)), k)
  outside = set(ids) - set(nearest)
  assert all(identity.xor_distance(target, o) > distances[-1] for o in outside)


def test_keys_and_ids_are_deterministic_per_seed_and_hospital():
  first = [identity.hospital_identity(7, h).node_id for h in range(5)]
  assert first == [identity.hospital_identity(7, h).node_id for h in range(5)]
  assert len(set(first)) == 5
  assert first[0] != identity.hospital_identity(8, 0).node_id
  assert all(len(i) == 64 for i in first)


def test_leader_and_verifiers_are_the_nearest_seats_whatever_the_keys():
  ids = [identity.hospital_identity(0, h).node_id for h in range(9)]
  leader, panel = identity.round_leader_and_verifiers(5, ids, 3)
  assert leader == panel[0] and len(set(panel)) == 3
  seats = [identity.seat_id(s) for s in range(9)]
  nearest = identity.k_nearest(identity.round_target(5), seats, 3)
  assert panel == tuple(ids[seats.index(s)] for s in nearest)
  other_keys = [identity.generate_identity().node_id for _ in range(9)]
  _, other_panel = identity.round_leader_and_verifiers(5, other_keys, 3)
  assert [other_keys.index(v) for v in other_panel] == [ids.index(v) for v in panel]
  leaders = {identity.round_leader_and_verifiers(r, ids, 3)[0] for r in range(40)}
  assert len(leaders) > 3  # the role rotates with the round


def test_pem_round_trip_and_signatures():
  hospital = identity.hospital_identity(0, 3)
  loaded = identity.identity_from_pem(identity.identity_to_pem(hospital))
  assert loaded.node_id == hospital.node_id
  signature = identity.sign(loaded, b"round 3")
  key = identity.verifying_key(hospital.public_key)
  assert identity.signature_is_valid(key, b"round 3", signature)
  assert not identity.signature_is_valid(key, b"round 4", signature)
  other = identity.verifying_key(identity.hospital_identity(0, 4).public_key)
  assert not identity.signature_is_valid(other, b"round 3", signature)
  assert not identity.signature_is_valid(key, b"round 3", "00" + signature[2:])
