"""The local Laplace mechanism (eqs. 12-13): L1 clipping, noise scale, pure-DP composition."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ccfl_jax.federated import privacy


@settings(max_examples=40, deadline=None)
@given(log_scale=st.floats(-20, 20), bound=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_l1_clipped_update_norm_at_most_bound(log_scale, bound, seed):
  rng = np.random.default_rng(seed)
  delta = {"w": jnp.asarray(rng.normal(size=(7, 5)) * 10.0 ** log_scale, jnp.float32),
           "b": jnp.asarray(rng.normal(size=(5,)) * 10.0 ** log_scale, jnp.float32)}
  clipped, norm = privacy.clip_update_l1(delta, bound)
  exact = sum(float(np.sum(np.abs(np.asarray(v, np.float64)))) for v in delta.values())
  np.testing.assert_allclose(float(norm), exact, rtol=1e-5)
  clipped_norm = float(privacy.l1_norm(clipped))
  assert clipped_norm <= bound * (1 + 1e-5)
  if exact <= bound:
    np.testing.assert_allclose(np.asarray(clipped["w"]), np.asarray(delta["w"]), rtol=1e-6)
  elif exact > 0:
    np.testing.assert_allclose(clipped_norm, bound, rtol=1e-4)


def test_l1_clip_of_zero_update_is_zero_without_nan():
  clipped, norm = privacy.clip_update_l1({"w": jnp.zeros(3)}, 1.0)
  assert float(norm) == 0.0 and np.all(np.asarray(clipped["w"]) == 0.0)


def test_sensitivity_and_scale_follow_from_the_l1_clip():
  assert privacy.laplace_sensitivity(1.5) == 3.0  # replace-one: ||u - u'||_1 <= 2B
  assert privacy.laplace_scale(1.5, 0.5) == 6.0  # b = s / epsilon


def test_laplace_noise_has_stated_scale():
  b = 0.3
  zeros = {"a": jnp.zeros((400, 500)), "b": jnp.zeros(200_000)}
  noise = privacy.laplace_noise_like(jax.random.key(0), zeros, b)
  x = np.concatenate([np.ravel(v) for v in jax.tree.leaves(noise)]).astype(np.float64)
  n = x.size  # 400k
  # |X| ~ Exponential(b): E|X| = b, sd(|X|) = b, so the sample mean has sd b/sqrt(n).
  assert abs(np.mean(np.abs(x)) / b - 1) < 5 / math.sqrt(n)
  # E X^2 = 2b^2, Var X^2 = 24b^4 - 4b^4 = 20b^4: relative sd sqrt(20)/2/sqrt(n).
  assert abs(np.mean(x ** 2) / (2 * b * b) - 1) < 5 * math.sqrt(20) / 2 / math.sqrt(n)
  assert abs(np.mean(x)) < 5 * math.sqrt(2) * b / math.sqrt(n)
  # Laplace, not Gaussian: E|X| / sd = 1/sqrt(2) = 0.707 (Gaussian: 0.798).
  assert abs(np.mean(np.abs(x)) / np.std(x) - 1 / math.sqrt(2)) < 0.01
  # Leaves get independent draws.
  assert not np.allclose(np.ravel(noise["a"])[:1000], noise["b"][:1000])


def test_local_update_is_clipped_plus_noise_of_scale_two_b_over_epsilon():
  key = jax.random.key(3)
  delta = {"w": jnp.full((1000,), 0.01)}  # ||.||_1 = 10, clipped to B = 2
  noised, norm = privacy.laplace_local_update(key, delta, 2.0, 0.5)
  np.testing.assert_allclose(float(norm), 10.0, rtol=1e-5)
  clipped, _ = privacy.clip_update_l1(delta, 2.0)
  expected = privacy.laplace_noise_like(key, clipped, 8.0)  # b = 2 * 2 / 0.5
  np.testing.assert_allclose(np.asarray(noised["w"]),
                             np.asarray(clipped["w"] + expected["w"]), rtol=1e-6)


def test_density_ratio_of_neighbouring_releases_is_at_most_e_to_epsilon():
  # Pure DP by construction: log p(x|u) - log p(x|u') = (|x - u'|_1 - |x - u|_1) / b
  # <= |u - u'|_1 / b <= 2B / b = epsilon, for any clipped u, u' and any output x.
  rng = np.random.default_rng(0)
  bound, eps = 1.0, 0.7
  b = privacy.laplace_scale(bound, eps)
  worst = 0.0
  for _ in range(200):
    u, v = (np.asarray(privacy.clip_update_l1({"w": jnp.asarray(rng.normal(size=20) * 5)},
                                              bound)[0]["w"], np.float64) for _ in range(2))
    x = rng.normal(size=(50, 20)) * 3
    worst = max(worst, float(np.max((np.abs(x - v).sum(1) - np.abs(x - u).sum(1)) / b)))
  assert worst <= eps * (1 + 1e-6)


def test_composition_against_hand_computation():
  # eps0 = 0.5, T = 10: basic 5; advanced sqrt(2*10*ln(1e5))*0.5 + 10*0.5*(e^0.5 - 1)
  # = 0.5*sqrt(230.2585) + 5*0.648721 = 7.58712 + 3.24361 = 10.83074 -> basic, at delta 0.
  r = privacy.laplace_epsilon(0.5, 10, 1e-5)
  assert r["basic"] == 5.0 and r["epsilon"] == 5.0 and r["delta"] == 0.0
  np.testing.assert_allclose(r["advanced"], 10.83074, rtol=1e-6)
  # eps0 = 0.01, T = 10,000: basic 100; advanced 0.01*sqrt(2*1e4*ln(1e5)) + 100*(e^0.01 - 1)
  # = 0.01*479.8526 + 100*0.01005017 = 4.798526 + 1.005017 = 5.803543 -> advanced, at 1e-5.
  r = privacy.laplace_epsilon(0.01, 10_000, 1e-5)
  np.testing.assert_allclose(r["basic"], 100.0, rtol=1e-12)
  np.testing.assert_allclose(r["advanced"], 5.803543, rtol=1e-6)
  assert r["epsilon"] == r["advanced"] and r["delta"] == 1e-5
  # Per-round epsilons (5 rounds at 0.01, 5 at 0.04): sqrt(2 ln(1e5) * 0.0085) + sum eps(e^eps-1)
  # = sqrt(0.195719) + 5*0.01*0.0100502 + 5*0.04*0.0408108 = 0.442402 + 0.000503 + 0.008162.
  r = privacy.laplace_epsilon([0.01] * 5 + [0.04] * 5, 10, 1e-5)
  np.testing.assert_allclose(r["advanced"], 0.451067, rtol=1e-5)
  np.testing.assert_allclose(r["basic"], 0.25, rtol=1e-12)
  assert r["epsilon"] == 0.25 and r["delta"] == 0.0


def test_composition_edge_cases():
  assert privacy.laplace_epsilon(1.0, 0, 1e-5)["epsilon"] == 0.0
  r = privacy.laplace_epsilon(0.01, 10_000, 0.0)  # no delta: only basic composition holds
  assert r["advanced"] == math.inf and r["epsilon"] == r["basic"] and r["delta"] == 0.0
  with pytest.raises(ValueError):
    privacy.laplace_epsilon([0.1, 0.2], 3, 1e-5)
  r = privacy.laplace_epsilon(1e4, 40, 1e-5)  # e^1e4 overflows: advanced unbounded, not a crash
  assert r["advanced"] == math.inf and r["epsilon"] == 4e5 and r["delta"] == 0.0


def test_run_epsilon_composes_each_hospitals_own_rounds_by_hand():
  # Rounds sample {0, 1}, {1, 2}, {1} at eps_t 0.5, 0.5, 1.0. Hospital 1 took part in all
  # three: basic 0.5 + 0.5 + 1 = 2; advanced at 1e-5: sqrt(2 ln(1e5) (0.25 + 0.25 + 1)) +
  # 2 x 0.5 (e^0.5 - 1) + 1 (e - 1) = sqrt(34.538776) + 0.648721 + 1.718282
  # = 5.876970 + 0.648721 + 1.718282 = 8.243973.
  # Hospitals 0 and 2 (one round at 0.5): 0.5. The worst hospital's basic bound, at delta 0.
  r = privacy.laplace_run_epsilon([[0, 1], [1, 2], [1]], [0.5, 0.5, 1.0], 1e-5)
  assert r["epsilon"] == 2.0 and r["delta"] == 0.0 and r["composition"] == "basic"
  assert r["hospital_rounds"] == 3 and r["basic"] == 2.0
  np.testing.assert_allclose(r["advanced"], 8.243973, rtol=1e-6)
  # Hospital 0 in every one of 10,000 rounds at 0.01, hospital 1 in every other one: the
  # worst is hospital 0, advanced 5.803543 (test above) < basic 100, at delta 1e-5.
  rounds = [[0, 1] if t % 2 else [0] for t in range(10_000)]
  r = privacy.laplace_run_epsilon(rounds, [0.01] * 10_000, 1e-5)
  np.testing.assert_allclose(r["epsilon"], 5.803543, rtol=1e-6)
  assert r["delta"] == 1e-5 and r["composition"] == "advanced" and r["hospital_rounds"] == 10_000
  np.testing.assert_allclose(r["basic"], 100.0, rtol=1e-12)
  # No rounds: nothing released. Bad inputs refused.
  assert privacy.laplace_run_epsilon([], [], 1e-5)["epsilon"] == 0.0
  with pytest.raises(ValueError, match="2 per-round epsilons for 1 rounds"):
    privacy.laplace_run_epsilon([[0]], [1.0, 1.0], 1e-5)
  with pytest.raises(ValueError, match="finite and > 0"):
    privacy.laplace_run_epsilon([[0]], [0.0], 1e-5)


def test_run_epsilon_never_exceeds_the_bound_with_every_hospital_in_every_round():
  rng = np.random.default_rng(0)
  for _ in range(20):
    rounds = int(rng.integers(1, 60))
    eps = rng.uniform(0.01, 2.0, rounds)
    sampled = [rng.choice(9, int(rng.integers(1, 10)), replace=False).tolist()
               for _ in range(rounds)]
    worst = privacy.laplace_run_epsilon(sampled, eps, 1e-5)
    every = privacy.laplace_epsilon(eps, rounds, 1e-5)  # T bounds every hospital
    assert worst["epsilon"] <= every["epsilon"] * (1 + 1e-12)
    assert worst["hospital_rounds"] <= rounds
