"""The MAE vote (eqs. 14-15) rejects a planted bad update, keeps the good ones, and traces."""
import jax
import numpy as np
import pytest

from ccfl_jax.ledger import consensus


def planted(num_hospitals=9, num_verifiers=3, bad=4, seed=0):
  rng = np.random.default_rng(seed)
  mae = rng.uniform(0.15, 0.25, (num_hospitals, num_verifiers)).astype(np.float32)
  mae[bad] = rng.uniform(0.6, 0.8, num_verifiers)  # a poisoned model: near-chance on every panel batch
  self_mae = rng.uniform(0.1, 0.2, num_hospitals).astype(np.float32)
  self_mae[bad] = 0.05  # and it lies about its own MAE
  return mae, self_mae


@pytest.mark.parametrize("rule", ["median_mad", "absolute"])
def test_planted_bad_update_is_rejected_and_good_ones_kept(rule):
  mae, self_mae = planted()
  scores = consensus.vote_scores(mae, self_mae, gamma=0.5)
  keep = np.asarray(consensus.accept_mask(scores, rule, k=3.0, absolute_threshold=0.4))
  assert keep.tolist() == [True] * 4 + [False] + [True] * 4


def test_eq15_is_gamma_self_plus_verifier_mean():
  mae, self_mae = planted()
  np.testing.assert_allclose(consensus.vote_scores(mae, self_mae, 0.3),
                             0.3 * self_mae + mae.mean(axis=1), rtol=1e-6)


def test_runs_inside_jit_with_the_same_decision():
  mae, self_mae = planted(bad=7)

  @jax.jit
  def decide(m, s):
    return consensus.accept_mask(consensus.vote_scores(m, s, 0.5), "median_mad", 3.0)

  eager = consensus.accept_mask(consensus.vote_scores(mae, self_mae, 0.5), "median_mad", 3.0)
  np.testing.assert_array_equal(decide(mae, self_mae), eager)
  assert not bool(decide(mae, self_mae)[7])


def test_never_rejects_everyone_and_never_keeps_a_diverged_model():
  keep = consensus.accept_mask(np.array([0.9, 0.7, 0.8]), "absolute", absolute_threshold=0.1)
  assert np.asarray(keep).tolist() == [False, True, False]  # only the best survives
  keep = consensus.accept_mask(np.array([0.2, np.nan, 0.21, np.inf, 0.19]), "median_mad")
  assert np.asarray(keep).tolist() == [True, False, True, False, True]


def test_identical_scores_are_all_kept():
  assert bool(np.all(consensus.accept_mask(np.full(9, 0.2), "median_mad", 3.0)))


def test_unknown_rule_is_an_error():
  with pytest.raises(ValueError, match="rule"):
    consensus.accept_mask(np.zeros(3), "mean")


def honest_and_flipped_updates(num_honest=7, num_flipped=2, seed=0):
  """Honest updates share a direction plus their own noise; the first num_flipped are negated."""
  rng = np.random.default_rng(seed)
  common = rng.normal(size=(1, 50))
  honest = common + rng.normal(size=(num_honest + num_flipped, 50))
  updates = honest.copy()
  updates[:num_flipped] *= -1
  return {"w": updates.astype(np.float32)[:, :40].reshape(-1, 4, 10),
          "b": updates.astype(np.float32)[:, 40:]}


def test_median_cosine_points_at_the_honest_majority():
  updates = honest_and_flipped_updates()
  cosines = np.asarray(consensus.median_cosines(updates, np.ones(9, bool)))
  assert cosines[:2].max() < 0 < cosines[2:].min()
  flat = np.concatenate([updates["w"].reshape(9, -1), updates["b"]], axis=1)
  reference = np.median(flat, axis=0)
  np.testing.assert_allclose(cosines, flat @ reference / (np.linalg.norm(flat, axis=1)
                                                          * np.linalg.norm(reference)), rtol=1e-5)


def test_padding_rows_are_left_out_of_the_median_and_get_nan():
  updates = honest_and_flipped_updates()
  real = np.array([True] * 7 + [False] * 2)
  cosines = np.asarray(consensus.median_cosines(updates, real))
  assert np.isnan(cosines[7:]).all() and np.isfinite(cosines[:7]).all()
  alone = np.asarray(consensus.median_cosines(jax.tree.map(lambda u: u[:7], updates),
                                              np.ones(7, bool)))
  np.testing.assert_allclose(cosines[:7], alone, rtol=1e-6)


def test_direction_and_magnitude_checks_reject_what_eq15_lets_through():
  updates = honest_and_flipped_updates()
  cosines = consensus.median_cosines(updates, np.ones(9, bool))
  norms = np.array([2.0] * 8 + [25.0], np.float32)  # hospital 8 scaled its update
  scores = np.full(9, 0.2, np.float32)  # eq. 15 sees nine equally good models
  plain = consensus.ConsensusRule()
  assert np.asarray(consensus.decide(scores, norms, cosines, plain)).all()  # checks off
  checked = consensus.ConsensusRule(direction_k=3.0, max_norm_ratio=3.0)
  keep = np.asarray(consensus.decide(scores, norms, cosines, checked))
  assert keep.tolist() == [False, False] + [True] * 6 + [False]
  jitted = jax.jit(lambda s, n, c: consensus.decide(s, n, c, checked))(scores, norms, cosines)
  np.testing.assert_array_equal(jitted, keep)


def test_eq15_still_rejects_when_the_checks_pass():
  mae, self_mae = planted()
  scores = consensus.vote_scores(mae, self_mae, 0.5)
  rule = consensus.ConsensusRule(direction_k=3.0, max_norm_ratio=3.0)
  keep = consensus.decide(scores, np.ones(9), np.full(9, 0.5), rule)
  assert np.asarray(keep).tolist() == [True] * 4 + [False] + [True] * 4


def test_when_every_update_fails_the_best_checked_score_is_kept():
  scores = np.array([0.1, 0.9, 0.8], np.float32)
  norms = np.array([50.0, 1.0, 1.0], np.float32)  # the best score belongs to a scaled update
  keep = consensus.accept_mask(scores, "absolute", absolute_threshold=0.05,
                               passes_checks=consensus.update_checks(
                                   norms, None, consensus.ConsensusRule(max_norm_ratio=3.0)))
  assert np.asarray(keep).tolist() == [False, False, True]


def test_direction_check_spares_an_honest_outlier_that_still_points_along_the_median():
  cosines = np.array([0.62, 0.6, 0.58, 0.61, 0.59, 0.6, 0.3, 0.1, -0.4], np.float32)
  norms = np.ones(9, np.float32)
  rule = consensus.ConsensusRule(direction_k=2.5, direction_cosine=0.2)
  keep = np.asarray(consensus.update_checks(norms, cosines, rule))
  assert keep.tolist() == [True] * 7 + [False, False]  # 0.3 is an outlier, yet along the median
  _, min_cosine = consensus.check_thresholds(
      norms, cosines, consensus.ConsensusRule(direction_k=2.5, direction_cosine=1.0))
  assert float(min_cosine) > 0.3  # without the bound, median - 2.5 MAD alone would reject it


def test_no_finite_score_keeps_nothing():
  """Every local model diverged: nothing is kept (the loop stops), never a NaN model."""
  keep = consensus.accept_mask(np.array([np.nan, np.inf, np.nan]), "median_mad")
  assert np.asarray(keep).tolist() == [False, False, False]


def test_rejection_reasons_name_the_first_failing_check():
  rule = consensus.ConsensusRule(k=3.0, direction_k=2.0, max_norm_ratio=3.0)
  #                 ok    NaN     score   score+dir  dir    norm   ok
  scores = np.array([0.2, np.nan, 0.9,    0.9,       0.21,  0.2,   0.19], np.float32)
  norms = np.array([1.0, np.nan, 1.0,    1.0,       1.0,   9.0,   1.1], np.float32)
  cosines = np.array([0.6, np.nan, 0.6,   -0.5,      -0.5,   0.6,   0.55], np.float32)
  finite = np.array([True, False, True, True, True, True, True])
  accepted = np.asarray(consensus.decide(scores, norms, cosines, rule))
  assert accepted.tolist() == [True, False, False, False, False, False, True]
  assert consensus.rejection_reasons(scores, norms, cosines, finite, rule, accepted) == [
      "accepted", "non_finite_update", "vote_score", "vote_score", "direction", "norm",
      "accepted"]


def test_a_non_finite_update_is_named_whatever_its_other_values():
  """The round never scores a non-finite update; finite=False wins over any recorded value."""
  rule = consensus.ConsensusRule(rule="absolute", absolute_threshold=0.5)
  reasons = consensus.rejection_reasons(np.array([0.1, 0.1, 0.1]), None, None,
                                        [True, False, True], rule, [True, False, True])
  assert reasons == ["accepted", "non_finite_update", "accepted"]
  assert consensus.rejection_reasons(None, None, None, [True, False], None,
                                     [True, False]) == ["accepted", "non_finite_update"]


def test_a_borderline_rejection_goes_to_the_check_nearest_its_limit():
  """The jit rejected an update the host finds within every limit (float32 borderline)."""
  rule = consensus.ConsensusRule(rule="absolute", absolute_threshold=0.5, max_norm_ratio=2.0)
  norms = np.array([1.0, 1.0, 1.9999], np.float32)  # the limit is 2 x median = 2
  reasons = consensus.rejection_reasons(np.full(3, 0.1, np.float32), norms, None,
                                        np.ones(3, bool), rule, [True, True, False])
  assert reasons == ["accepted", "accepted", "norm"]
