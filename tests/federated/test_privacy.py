import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

from ccfl_jax.federated import privacy


@settings(max_examples=60, deadline=None)
@given(log_scale=st.floats(-30, 30), clip_norm=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_clipped_update_norm_at_most_clip_norm(log_scale, clip_norm, seed):
  rng = np.random.default_rng(seed)
  delta = {"w": jnp.asarray(rng.normal(size=(7, 5)) * 10.0 ** log_scale, jnp.float32),
           "b": jnp.asarray(rng.normal(size=(5,)) * 10.0 ** log_scale, jnp.float32)}
  clipped, norm = privacy.clip_update(delta, clip_norm)
  clipped_norm = float(privacy.global_norm(clipped))
  assert math.isfinite(float(norm)) and math.isfinite(clipped_norm)
  assert clipped_norm <= clip_norm * (1 + 1e-5)
  exact = math.sqrt(sum(float(np.sum(np.square(np.asarray(v, np.float64)))) for v in delta.values()))
  if exact <= clip_norm:  # small updates pass unchanged
    np.testing.assert_allclose(np.asarray(clipped["w"]), np.asarray(delta["w"]), rtol=1e-6)
  elif exact > 0:  # large ones keep their direction, scaled to norm S
    np.testing.assert_allclose(clipped_norm, clip_norm, rtol=1e-4)


def test_clip_of_zero_update_is_zero_without_nan():
  clipped, norm = privacy.clip_update({"w": jnp.zeros(3)}, 1.0)
  assert float(norm) == 0.0 and np.all(np.asarray(clipped["w"]) == 0.0)


def test_noisy_mean_has_stated_standard_deviation():
  sigma, clip_norm, m = 0.7, 2.0, 9
  zeros = {"a": jnp.zeros((400, 500)), "b": jnp.zeros(100_000)}
  mean = privacy.noisy_mean(zeros, m, jax.random.key(0), sigma, clip_norm)
  sample = np.concatenate([np.ravel(v) for v in jax.tree.leaves(mean)])
  expected = sigma * clip_norm / m
  # 300k draws: the sample std is within 0.5% of the truth with overwhelming probability.
  assert abs(sample.std() / expected - 1) < 0.005
  assert abs(sample.mean()) < 5 * expected / math.sqrt(sample.size)


def _closed_form_epsilon(rounds, sigma, delta):
  """Gaussian RDP with sensitivity 2S and noise std sigma*S: alpha*(2S)^2/(2 sigma^2 S^2) per
  round, composed, converted to (eps, delta) with the conversion dp_accounting uses
  (Canonne, Kamath, Steinke 2020, Prop. 12)."""
  orders = np.asarray(privacy.RDP_ORDERS)
  rdp = rounds * orders * 4.0 / (2.0 * sigma ** 2)
  eps = rdp + np.log1p(-1 / orders) - (np.log(delta) + np.log(orders)) / (orders - 1)
  return float(np.min(eps))


def test_epsilon_without_sampling_equals_closed_form_gaussian_rdp():
  for rounds, sigma in [(1, 2.0), (10, 1.0), (100, 5.0)]:
    eps = privacy.epsilon(9, [9] * rounds, sigma, 1e-5)
    np.testing.assert_allclose(eps, _closed_form_epsilon(rounds, sigma, 1e-5), rtol=1e-6)


def test_epsilon_grows_with_rounds_and_shrinks_with_sigma():
  by_rounds = [privacy.epsilon(9, [3] * r, 1.0, 1e-5) for r in (1, 10, 100)]
  assert by_rounds[0] < by_rounds[1] < by_rounds[2]
  by_sigma = [privacy.epsilon(9, [3] * 20, s, 1e-5) for s in (0.5, 1.0, 4.0)]
  assert by_sigma[0] > by_sigma[1] > by_sigma[2]
  assert privacy.epsilon(9, [3] * 20, 1.0, 1e-5) < privacy.epsilon(9, [9] * 20, 1.0, 1e-5)


def test_sensitivity_is_two_clip_norms_under_replace_one():
  # NOTES-jax.md's worked example: 3 of 9, sigma 1, 100 rounds, delta 1e-5 -> about 268.
  np.testing.assert_allclose(privacy.epsilon(9, [3] * 100, 1.0, 1e-5), 268, rtol=0.01)


def test_no_noise_means_no_privacy_and_no_rounds_no_loss():
  assert privacy.epsilon(9, [9], 0.0, 1e-5) == math.inf
  assert privacy.epsilon(9, [], 1.0, 1e-5) == 0.0
