from hypothesis import given, settings, strategies as st
import numpy as np

from ccfl_jax.federated import sampling
from ccfl_jax.federated.sampling import sample_hospitals


def test_sampled_hospitals_are_distinct_deterministic_and_cover_all():
  seen = set()
  for round_index in range(200):
    sampled = sample_hospitals(3, round_index, 36, 5)
    assert len(set(sampled.tolist())) == 5 and sampled.min() >= 0 and sampled.max() < 36
    np.testing.assert_array_equal(sampled, sample_hospitals(3, round_index, 36, 5))
    seen |= set(sampled.tolist())
  assert seen == set(range(36))
  assert not all(np.array_equal(sample_hospitals(3, r, 36, 5), sample_hospitals(4, r, 36, 5))
                 for r in range(5))


def test_all_hospitals_when_m_equals_h():
  np.testing.assert_array_equal(sample_hospitals(0, 7, 9, 9), np.arange(9))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 1000).flatmap(lambda h: st.tuples(st.just(h), st.integers(1, h))),
       st.integers(0, 2**31 - 1), st.integers(0, 10**6))
def test_any_valid_h_m_seed_and_round_gives_m_distinct_hospitals(h_and_m, seed, round_index):
  num_hospitals, per_round = h_and_m
  sampled = sampling.sample_hospitals(seed, round_index, num_hospitals, per_round)
  assert len(sampled) == per_round == len(set(sampled.tolist()))
  assert sampled.min() >= 0 and sampled.max() < num_hospitals
  np.testing.assert_array_equal(sampled, sampling.sample_hospitals(seed, round_index,
                                                                   num_hospitals, per_round))
