import numpy as np

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
