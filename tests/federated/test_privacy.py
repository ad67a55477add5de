import math
import time

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
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
  # The RDP part still equals the closed form; the reported epsilon is now the tighter PLD one.
  for rounds, sigma in [(1, 2.0), (10, 1.0), (100, 5.0), (40, 0.1)]:
    report = privacy.epsilon_report(9, [9] * rounds, sigma, 1e-5)
    np.testing.assert_allclose(report["rdp"], _closed_form_epsilon(rounds, sigma, 1e-5), rtol=1e-6)
    assert report["epsilon"] == min(report["rdp"], report["pld"])
    assert privacy.epsilon(9, [9] * rounds, sigma, 1e-5) == report["epsilon"]


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


def _analytic_epsilon(rounds, sigma, delta):
  """Exact epsilon of `rounds` Gaussian mechanisms with shift 2S and noise std sigma*S: one
  Gaussian with shift/std 2*sqrt(rounds)/sigma (Balle & Wang 2018's analytic Gaussian)."""
  return dp_accounting.gaussian_mechanism.get_epsilon_gaussian(sigma / 2 / math.sqrt(rounds), delta)


def _continuous_rdp_optimum(rounds, sigma, delta):
  """The closed-form RDP conversion minimised over all orders > 1.01, not a grid."""
  c = rounds * 4.0 / (2.0 * sigma ** 2)
  f = lambda a: c * a + math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1)
  return scipy.optimize.minimize_scalar(f, bounds=(1.0101, 1e4), method="bounded",
                                        options=dict(xatol=1e-10)).fun


def test_small_orders_reach_the_optimum_below_two():
  # fed9: the best order is about 1.04; orders from 2 gave 16,010 (issue 12).
  assert min(privacy.RDP_ORDERS) < 1.02 and sum(o < 2 for o in privacy.RDP_ORDERS) >= 50
  # Optimum in (1, 2): within 1e-4 of the continuous one; above 10 the orders are integers.
  for rounds, sigma, rtol in [(40, 0.1, 1e-4), (40, 1.0, 1e-4), (10, 20.0, 1e-3)]:
    rdp = privacy.epsilon_report(9, [9] * rounds, sigma, 1e-5)["rdp"]
    best = _continuous_rdp_optimum(rounds, sigma, 1e-5)
    assert best <= rdp <= best * (1 + rtol)
  np.testing.assert_allclose(privacy.epsilon_report(9, [9] * 40, 0.1, 1e-5)["rdp"], 8603, rtol=1e-3)


def test_pld_matches_analytic_gaussian_at_small_and_large_sigma():
  for rounds, sigma in [(40, 0.1), (40, 1.0), (100, 5.0), (10, 20.0), (1, 100.0)]:
    report = privacy.epsilon_report(9, [9] * rounds, sigma, 1e-5)
    exact = _analytic_epsilon(rounds, sigma, 1e-5)
    assert report["accountant"] == "pld"
    # The composed Gaussian's PLD in closed form, rounded up: the exact value within 1e-9.
    assert exact * (1 - 1e-12) <= report["pld"] <= exact * (1 + 1e-9)
    assert report["rdp"] >= report["pld"]
  # At large sigma RDP's conversion is close to the exact value (here within 7%).
  report = privacy.epsilon_report(9, [9] * 100, 5.0, 1e-5)
  assert report["rdp"] <= report["pld"] * 1.07


def test_sampled_rounds_use_rdp_only_and_small_orders_do_not_help_them():
  report = privacy.epsilon_report(9, [3] * 100, 1.0, 1e-5)
  assert report["accountant"] == "rdp" and report["pld"] is None
  # dp_accounting's without-replacement RDP at orders in (1, 2) equals RDP(2): never better.
  rdp = privacy.round_rdp(9, 3, 1.0)
  orders = np.asarray(privacy.RDP_ORDERS)
  np.testing.assert_allclose(rdp[orders < 2], rdp[orders == 2][0], rtol=1e-12)
  mixed = privacy.epsilon_report(9, [9] * 5 + [3] * 5, 1.0, 1e-5)
  assert mixed["pld"] is None and mixed["accountant"] == "rdp"


def test_per_round_sigma_charges_each_round_at_its_own_sigma():
  h, delta = 9, 1e-5
  assert privacy.epsilon(h, [3] * 10, [1.0] * 10, delta) == privacy.epsilon(h, [3] * 10, 1.0, delta)
  mixed = privacy.epsilon(h, [3] * 20, [1.0] * 10 + [4.0] * 10, delta)
  assert privacy.epsilon(h, [3] * 20, 4.0, delta) < mixed < privacy.epsilon(h, [3] * 20, 1.0, delta)
  # The RDP of a mixed run is the sum of each round's own RDP.
  total = 10 * privacy.round_rdp(h, 3, 1.0) + 10 * privacy.round_rdp(h, 3, 4.0)
  expected = dp_accounting.rdp.compute_epsilon(privacy.RDP_ORDERS, total, delta)[0]
  np.testing.assert_allclose(mixed, expected, rtol=1e-12)
  # Without sampling rounds at sigma_t compose exactly into one Gaussian: (sum sigma_t^-2)^-1/2.
  sigmas = [0.5] * 10 + [2.0] * 30
  composed = privacy.composed_gaussian_multiplier(sigmas)
  report = privacy.epsilon_report(h, [h] * 40, sigmas, delta)
  exact = dp_accounting.gaussian_mechanism.get_epsilon_gaussian(composed / 2, delta)
  assert exact * (1 - 1e-12) <= report["pld"] <= exact * (1 + 1e-9)
  with pytest.raises(ValueError):
    privacy.epsilon(h, [3] * 3, [1.0, 2.0], delta)


def test_rounds_without_hospitals_cost_nothing_and_bad_counts_fail():
  assert privacy.epsilon(9, [0, 0], 1.0, 1e-5) == 0.0
  assert privacy.epsilon(9, [3, 0, 3], 1.0, 1e-5) == privacy.epsilon(9, [3, 3], 1.0, 1e-5)
  with pytest.raises(ValueError):
    privacy.epsilon(9, [10], 1.0, 1e-5)


def test_accounting_is_fast_enough_to_run_every_round():
  privacy.epsilon(1000, [100], 3.0, 1e-6)  # fills round_rdp's cache
  for args in [(9, [9] * 1000, 0.1, 1e-5), (1000, [100] * 1000, 3.0, 1e-6)]:
    tic = time.perf_counter()
    privacy.epsilon(*args)
    assert time.perf_counter() - tic < 1.0  # measured 7 ms and 1.3 ms on an idle core


def _mp_delta(mu, eps):
  """delta(eps) of a Gaussian with shift/std mu at 50 digits (Balle & Wang 2018, Thm 8)."""
  mpmath = pytest.importorskip("mpmath")
  mpmath.mp.dps = 50
  mu, eps = mpmath.mpf(mu), mpmath.mpf(eps)
  return (mpmath.ncdf(mu / 2 - eps / mu) - mpmath.exp(eps) * mpmath.ncdf(-mu / 2 - eps / mu))


@pytest.mark.parametrize("rounds,sigma,delta", [(292, 1.0, 1e-5), (293, 1.0, 1e-5),
                                                (40, 0.1, 1e-5), (1, 5.0, 1e-5),
                                                (1000, 0.1, 1e-9), (3, 0.5, 0.5)])
def test_m_t_equal_h_epsilon_is_a_tight_upper_bound(rounds, sigma, delta):
  # Checked at 50 digits, independently of the float evaluation: delta(eps) <= delta at the
  # reported eps, and > delta 1e-9 (relative) below it.
  eps = privacy.epsilon(9, [9] * rounds, sigma, delta)
  mu = 2 * math.sqrt(rounds) / sigma
  assert _mp_delta(mu, eps) <= delta < _mp_delta(mu, eps * (1 - 1e-9))


def test_epsilon_never_decreases_with_rounds_without_sampling():
  # dp_accounting's PLD accountant returned inf for 709.78 < eps < ~745 (H = m_t = 9, sigma 1:
  # rounds 284-292), the RDP fallback was 2% looser, and round 293 reported 732.31 < 744.98.
  for sigma in (1.0, 0.1):
    reports = [privacy.epsilon_report(9, [9] * r, sigma, 1e-5) for r in range(1, 401)]
    eps = np.array([report["epsilon"] for report in reports])
    assert np.all(np.isfinite(eps)) and np.all(np.diff(eps) > 0)
    assert all(report["accountant"] == "pld" for report in reports)
  eps = [privacy.epsilon(9, [9] * r, [1.0] * r, 1e-5) for r in (283, 284, 292, 293)]
  assert eps == sorted(eps)
  np.testing.assert_allclose(eps[2:], [_analytic_epsilon(292, 1.0, 1e-5),
                                       _analytic_epsilon(293, 1.0, 1e-5)], rtol=1e-9)
  np.testing.assert_allclose(eps[2:], [728.8148, 731.0641], rtol=1e-6)


def test_epsilon_never_decreases_with_rounds_with_sampling_or_a_switch():
  for h, m, sigma in [(9, 3, 1.0), (9, 8, 0.1), (20, 5, 2.0)]:
    eps = np.array([privacy.epsilon(h, [m] * r, sigma, 1e-5) for r in range(1, 201)])
    assert np.all(np.isfinite(eps)) and np.all(np.diff(eps) > 0)
  # All-H rounds (exact Gaussian), then sampled ones (RDP from there on): no drop at the switch.
  schedule = [9] * 30 + [3] * 30
  eps = np.array([privacy.epsilon(9, schedule[:r], 1.0, 1e-5) for r in range(1, 61)])
  assert np.all(np.diff(eps) > 0)


def test_fed9_epsilon_is_the_exact_gaussian_one():
  # fed9: 9 hospitals, all sampled, sigma 0.1, 40 rounds, delta 1e-5. dp_accounting's PLD
  # accountant gave 8,542.57 (discretisation error 5e-4), RDP gives 8,602.79.
  report = privacy.epsilon_report(9, [9] * 40, 0.1, 1e-5)
  assert report["accountant"] == "pld"
  np.testing.assert_allclose(report["epsilon"], 8538.4873, rtol=1e-8)
  np.testing.assert_allclose(report["epsilon"], _analytic_epsilon(40, 0.1, 1e-5), rtol=1e-9)
  np.testing.assert_allclose(report["rdp"], 8602.7858, rtol=1e-8)
