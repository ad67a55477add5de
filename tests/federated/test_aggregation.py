"""Aggregation rules over stacked updates: the papers' definitions, padding, DP sensitivity."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from ccfl_jax.federated import aggregation, privacy

RULES = [aggregation.AggregationRule("mean"), aggregation.AggregationRule("median"),
         aggregation.AggregationRule("trimmed_mean", beta=0.2),
         aggregation.AggregationRule("krum", f=1), aggregation.AggregationRule("multi_krum", f=1),
         aggregation.AggregationRule("norm_bound", norm_bound=0.5)]


def _run(rule, deltas, weights):
  return jax.tree.map(np.asarray, jax.jit(aggregation.aggregate_mean, static_argnums=0)(
      rule, deltas, jnp.asarray(weights, jnp.float32)))


def _tree(values):
  """A two-leaf pytree from [m, 6] values: leaves [m, 2] and [m, 2, 2]."""
  values = jnp.asarray(values, jnp.float32)
  return {"a": values[:, :2], "b": values[:, 2:].reshape(-1, 2, 2)}


def _flat(tree):
  return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def test_rule_validation_names_the_setting():
  with pytest.raises(ValueError, match="aggregation.rule 'bulyan'") as error:
    aggregation.AggregationRule("bulyan")
  for name in aggregation.RULES:
    assert name in str(error.value)
  with pytest.raises(ValueError, match="beta"):
    aggregation.AggregationRule("trimmed_mean", beta=0.5)
  with pytest.raises(ValueError, match="f"):
    aggregation.AggregationRule("krum", f=-1)
  with pytest.raises(ValueError, match="norm_bound"):
    aggregation.AggregationRule("norm_bound")


def test_mean_is_the_weighted_sum_over_the_weight_total_as_today():
  values = np.arange(18.0).reshape(3, 6)
  weights = np.array([1.0, 1.0, 0.0])
  total, denominator = aggregation.aggregate(aggregation.AggregationRule(), _tree(values),
                                             jnp.asarray(weights))
  np.testing.assert_allclose(_flat(total), values[0] + values[1])
  assert float(denominator) == 2.0
  np.testing.assert_allclose(_flat(_run(aggregation.AggregationRule(), _tree(values), weights)),
                             values[:2].mean(0))


def test_median_and_trimmed_mean_match_numpy_and_scipy():
  from scipy import stats
  rng = np.random.default_rng(0)
  for n in (1, 2, 3, 4, 7, 10):
    values = rng.normal(size=(n, 6)).astype(np.float32)
    padded = np.concatenate([values, np.full((3, 6), 1e6, np.float32)])
    weights = np.r_[np.ones(n), np.zeros(3)]
    median = _run(aggregation.AggregationRule("median"), _tree(padded), weights)
    np.testing.assert_allclose(_flat(median), np.median(values, axis=0), rtol=1e-6, atol=1e-6)
    for beta in (0.0, 0.1, 0.2, 0.3, 0.45):
      trimmed = _run(aggregation.AggregationRule("trimmed_mean", beta=beta), _tree(padded),
                     weights)
      np.testing.assert_allclose(_flat(trimmed), stats.trim_mean(values, beta, axis=0),
                                 rtol=1e-5, atol=1e-6)


def test_trimmed_mean_worked_example():
  # 5 updates, beta = 0.2: one value trimmed at each end of every coordinate.
  values = np.array([[1, 10, 0, 0, 0, 0], [2, 20, 0, 0, 0, 0], [3, -5, 0, 0, 0, 0],
                     [100, 0, 0, 0, 0, 0], [-100, 1, 0, 0, 0, 0]], np.float32)
  out = _run(aggregation.AggregationRule("trimmed_mean", beta=0.2), _tree(values), np.ones(5))
  np.testing.assert_allclose(_flat(out)[:2], [(1 + 2 + 3) / 3, (10 + 0 + 1) / 3], rtol=1e-6)


# Krum example: the outlier first, so that an argmin that failed would not pick index 3 by luck.
KRUM_POINTS = np.array([[10, 10], [0, 0], [1, 0], [0, 1], [0.4, 0.4]], np.float32)


def test_krum_scores_and_choice_on_a_hand_built_example():
  deltas = {"w": jnp.asarray(KRUM_POINTS)}
  real = jnp.ones(5, bool)
  # n = 5, f = 1: each score sums the squared distances to the n - f - 2 = 2 nearest others.
  # (0,0): 0.32 + 1 = 1.32; (1,0): 0.52 + 1 = 1.52; (0,1): 1.52; (.4,.4): 0.32 + 0.52 = 0.84;
  # (10,10): to (1,0) and (0,1) 181 each = 362.
  scores = np.asarray(aggregation.krum_scores(deltas, real, 1))
  np.testing.assert_allclose(scores, [362.0, 1.32, 1.52, 1.52, 0.84], rtol=1e-5)
  out = _run(aggregation.AggregationRule("krum", f=1), deltas, np.ones(5))
  np.testing.assert_allclose(out["w"], [0.4, 0.4], rtol=1e-6)
  # Multi-Krum keeps the n - f = 4 best: all but the outlier.
  selected = np.asarray(aggregation.multi_krum_selection(deltas, real, 1))
  np.testing.assert_array_equal(selected, [False, True, True, True, True])
  out = _run(aggregation.AggregationRule("multi_krum", f=1), deltas, np.ones(5))
  np.testing.assert_allclose(out["w"], KRUM_POINTS[1:].mean(0), rtol=1e-6)
  # f = 0: 3 nearest; a padded duplicate of the best point changes nothing.
  padded = {"w": jnp.asarray(np.r_[KRUM_POINTS, [[0.4, 0.4], [0.4, 0.4]]])}
  weights = np.r_[np.ones(5), np.zeros(2)]
  np.testing.assert_allclose(
      np.asarray(aggregation.krum_scores(padded, jnp.asarray(weights > 0), 0))[:5],
      np.asarray(aggregation.krum_scores(deltas, real, 0)), rtol=1e-6)


def test_pairwise_distances_are_exact():
  values = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
  want = np.square(values[:, None].astype(np.float64) - values[None]).sum(-1)
  np.testing.assert_allclose(np.asarray(aggregation.pairwise_sq_distances(_tree(values))), want,
                             rtol=1e-5, atol=1e-6)


def test_norm_bound_clips_each_update_then_averages():
  values = np.zeros((3, 6), np.float32)
  values[0, 0], values[1, 1], values[2, 2] = 3.0, 0.2, 100.0
  out = _run(aggregation.AggregationRule("norm_bound", norm_bound=0.5), _tree(values),
             [1, 1, 0])
  np.testing.assert_allclose(_flat(out), [0.5 / 2, 0.2 / 2, 0, 0, 0, 0], rtol=1e-6)


@settings(max_examples=20, deadline=None)
@given(hnp.arrays(np.float32, (5, 6), elements=st.floats(-2, 2, width=32)),
       hnp.arrays(np.float32, (3, 6), elements=st.floats(-1e3, 1e3, width=32)))
def test_padding_rows_never_change_any_rule(values, padding):
  padded = np.concatenate([values[:2], padding[:1], values[2:], padding[1:]])
  weights = np.array([1, 1, 0, 1, 1, 1, 0, 0], np.float32)
  for rule in RULES:
    np.testing.assert_allclose(_flat(_run(rule, _tree(padded), weights)),
                               _flat(_run(rule, _tree(values), np.ones(5))), rtol=1e-5, atol=1e-5)


def _clipped_rows(values, clip_norm):
  return np.asarray(jax.vmap(lambda v: privacy.clip_update(v, clip_norm)[0])(jnp.asarray(values)))


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float32, (6, 6), elements=st.floats(-3, 3, width=32)),
       hnp.arrays(np.float32, (6,), elements=st.floats(-3, 3, width=32)),
       st.integers(0, 4), st.integers(2, 5))
def test_every_total_moves_by_at_most_2S_when_one_update_is_replaced(values, other, row, n):
  """The sensitivity argument of the module docstring, checked on random neighbours."""
  clip_norm = 1.0
  values = _clipped_rows(values, clip_norm)[:n]
  row = row % n
  neighbour = values.copy()
  neighbour[row] = _clipped_rows(other[None], clip_norm)[0]
  change = np.linalg.norm(neighbour[row] - values[row])
  for rule in RULES:
    one = aggregation.aggregate(rule, _tree(values), jnp.ones(n))
    two = aggregation.aggregate(rule, _tree(neighbour), jnp.ones(n))
    moved = np.linalg.norm(_flat(one[0]) - _flat(two[0]))
    assert moved <= 2 * clip_norm * (1 + 1e-5)
    assert float(one[1]) == float(two[1])  # the denominator does not depend on the data
    if rule.name in ("mean", "median", "trimmed_mean"):
      assert moved <= change * (1 + 1e-5) + 1e-6  # never more than the replaced update moved


def test_privacy_compatibility_is_stated_for_every_rule_and_refused_without_a_bound():
  assert set(aggregation.SENSITIVITY) == set(aggregation.RULES)
  for rule in RULES:
    assert aggregation.check_privacy_compatible(rule, 1.0) == aggregation.SENSITIVITY[rule.name]
  unbounded = aggregation.AggregationRule("mean")
  object.__setattr__(unbounded, "name", "geometric_median")  # a rule added without a bound
  with pytest.raises(ValueError, match="aggregation.rule 'geometric_median'"):
    aggregation.check_privacy_compatible(unbounded, 0.5)
  aggregation.check_privacy_compatible(unbounded, 0.0)  # no noise, nothing to account
  with pytest.raises(ValueError, match="noise_multiplier"):
    aggregation.check_privacy_compatible(RULES[0], -1.0)


def test_noise_on_the_update_per_rule():
  sigma, clip = 0.5, 2.0
  def noise(rule, n):
    return aggregation.noise_on_update(rule, n, sigma, clip)
  assert noise(RULES[0], 9) == pytest.approx(1.0 / 9)  # mean: sigma S / n
  assert noise(RULES[1], 9) == pytest.approx(1.0)  # median of 9: one middle value
  assert noise(RULES[1], 8) == pytest.approx(0.5)  # two middle values
  assert noise(RULES[2], 10) == pytest.approx(1.0 / 6)  # beta 0.2: 2 trimmed at each end
  assert noise(RULES[3], 9) == noise(RULES[4], 9) == pytest.approx(1.0)
  assert noise(RULES[5], 9) == pytest.approx(1.0 / 9)


def test_rules_are_hashable_static_arguments():
  assert len({dataclasses.replace(rule) for rule in RULES}) == len(RULES)
  assert RULES[2].to_json() == {"name": "trimmed_mean", "beta": 0.2, "f": 0, "norm_bound": 0.0}


def test_trim_count_is_exact_where_float32_would_round_down():
  values = np.random.default_rng(2).normal(size=(20, 6)).astype(np.float32)
  from scipy import stats
  out = _run(aggregation.AggregationRule("trimmed_mean", beta=0.35), _tree(values), np.ones(20))
  np.testing.assert_allclose(_flat(out), stats.trim_mean(values, 0.35, axis=0), rtol=1e-5)
