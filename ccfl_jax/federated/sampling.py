"""Which hospitals take part in a round: m_t of H without replacement, a pure function."""
import numpy as np


def sample_hospitals(seed: int, round_index: int, num_hospitals: int, per_round: int) -> np.ndarray:
  """Sorted ids of the `per_round` hospitals of round `round_index` (same on resume)."""
  rng = np.random.default_rng([seed, round_index, 7919])
  return np.sort(rng.choice(num_hospitals, size=per_round, replace=False)).astype(np.int32)
