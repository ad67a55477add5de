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
