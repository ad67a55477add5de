"""ccfl_jax.metrics: the patient-bootstrap AUC interval and specificity at sensitivity 0.95,
against hand-worked cases and independent loop implementations."""
import math

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from ccfl_jax import metrics

LABELS = [1, 1, 1, 0, 0, 0]


@pytest.mark.parametrize("scores, target, expected", [
    # all 3 positives are needed: t = 0.4, negatives below it 0.3, 0.1 -> 2/3
    ([0.9, 0.8, 0.4, 0.7, 0.3, 0.1], 0.95, (2 / 3, 0.4)),
    # 2 of 3 positives (0.667 >= 0.6) are enough: t = 0.8, every negative below it
    ([0.9, 0.8, 0.4, 0.7, 0.3, 0.1], 0.6, (1.0, 0.8)),
    # a negative tied at t is called positive: a false positive
    ([0.9, 0.8, 0.4, 0.4, 0.3, 0.1], 0.95, (2 / 3, 0.4)),
    # the lowest positive is the lowest score: nothing is below t
    ([0.9, 0.8, 0.05, 0.7, 0.3, 0.1], 1.0, (0.0, 0.05)),
])
def test_specificity_at_sensitivity_by_hand(scores, target, expected):
  assert metrics.specificity_at_sensitivity(LABELS, scores, target) == expected


def test_specificity_at_sensitivity_needs_19_of_20_positives_not_20():
  labels = [1] * 20 + [0]
  scores = list(range(20)) + [0.5]  # 19 positives at or above 1; 0.95 x 20 is 19 exactly
  assert metrics.specificity_at_sensitivity(labels, scores) == (1.0, 1.0)


def test_specificity_at_sensitivity_without_a_class_or_target():
  assert all(math.isnan(v) for v in metrics.specificity_at_sensitivity([1, 1], [0.2, 0.3]))
  with pytest.raises(ValueError, match=r"target 0.*\(0, 1\]"):
    metrics.specificity_at_sensitivity(LABELS, np.arange(6), 0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=30),
       st.sampled_from([0.5, 0.8, 0.95, 1.0]))
def test_specificity_at_sensitivity_is_the_best_over_every_threshold(examples, target):
  labels = np.array([label for label, _ in examples])
  scores = np.array([score / 5 for _, score in examples])
  if labels.all() or not labels.any():
    return
  candidates = [(m["specificity"], t) for t in np.unique(scores)
                for m in [metrics.classification_metrics(labels, scores, t)]
                if m["sensitivity"] >= target]
  assert metrics.specificity_at_sensitivity(labels, scores, target) == max(candidates)


def reference_bootstrap(labels, scores, groups, bootstrap):
  """One resample at a time: draw patients, concatenate their slices, roc_auc."""
  labels, scores, groups = map(np.asarray, (labels, scores, groups))
  patients = np.unique(groups)
  draws = np.random.default_rng(bootstrap.seed).integers(
      0, len(patients), size=(bootstrap.resamples, len(patients)))
  aucs = []
  for row in draws:
    taken = np.concatenate([np.flatnonzero(groups == patients[p]) for p in row])
    aucs.append(metrics.roc_auc(labels[taken], scores[taken]))
  aucs = [a for a in aucs if not math.isnan(a)]
  return (*np.percentile(aucs, [2.5, 97.5]), len(aucs))


@pytest.mark.parametrize("weights_per_chunk", [metrics.WEIGHTS_PER_CHUNK, 100])
def test_bootstrap_auc_resamples_patients_as_a_loop_does(weights_per_chunk, monkeypatch):
  monkeypatch.setattr(metrics, "WEIGHTS_PER_CHUNK", weights_per_chunk)  # 100: 2 resamples a chunk
  rng = np.random.default_rng(7)
  groups = np.repeat([f"p{i}" for i in range(12)], rng.integers(1, 6, 12))
  labels = np.isin(groups, ["p1", "p2", "p5", "p8", "p11"]).astype(int)
  scores = np.round(rng.random(len(groups)) * 0.6 + 0.3 * labels, 1)  # ties within and across
  bootstrap = metrics.Bootstrap(resamples=200, seed=3)
  low, high, used = metrics.bootstrap_auc(labels, scores, groups, bootstrap)
  ref_low, ref_high, ref_used = reference_bootstrap(labels, scores, groups, bootstrap)
  assert used == ref_used and 0 < used < 200  # some draws miss the positives
  assert (low, high) == pytest.approx((ref_low, ref_high), rel=1e-12)
  assert low < high


def test_bootstrap_auc_keeps_a_patients_slices_together():
  # one positive patient (slices 0.9, 0.1) and one negative (0.5, 0.5): any draw holding both
  # holds them in equal numbers, so its AUC is the full data's, 0.5; slices drawn alone vary.
  # Usable draws: about 1/2 of patient draws, 1 - 2 x 2^-4 of slice draws.
  labels, scores = [1, 1, 0, 0], [0.9, 0.1, 0.5, 0.5]
  bootstrap = metrics.Bootstrap(resamples=1000, seed=0)
  assert metrics.bootstrap_auc(labels, scores, ["a", "a", "b", "b"], bootstrap) == (0.5, 0.5, 523)
  assert metrics.bootstrap_auc(labels, scores, None, bootstrap) == (0.0, 1.0, 880)


def test_bootstrap_auc_degenerate_intervals():
  groups = np.repeat(np.arange(6), 3)
  labels = (groups < 3).astype(int)
  bootstrap = metrics.Bootstrap(resamples=1000, seed=0)
  # about 2 x 2^-6 of the draws hold one class only (1000 x 31/32 = 969 expected)
  separated = metrics.bootstrap_auc(labels, 0.2 + 0.6 * labels, groups, bootstrap)
  assert separated == (1.0, 1.0, 970)
  assert metrics.bootstrap_auc(labels, np.full(18, 0.3), groups, bootstrap) == (0.5, 0.5, 970)


def test_bootstrap_auc_is_reproducible_and_can_be_off():
  rng = np.random.default_rng(0)
  labels, scores = rng.integers(0, 2, 50), rng.random(50)
  same = [metrics.bootstrap_auc(labels, scores, None, metrics.Bootstrap(300, 1)) for _ in range(2)]
  assert same[0] == same[1] != metrics.bootstrap_auc(labels, scores, None, metrics.Bootstrap(300, 2))
  low, high, used = metrics.bootstrap_auc(labels, scores, None, metrics.Bootstrap(0))
  assert math.isnan(low) and math.isnan(high) and used == 0
  assert metrics.screening_metrics(labels, scores, None, metrics.Bootstrap(0))["auc_ci95"] is None
  with pytest.raises(ValueError, match=r"--bootstrap=-1: expected a count >= 0"):
    metrics.Bootstrap(-1)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.floats(0, 1)), min_size=1,
                max_size=40),
       st.integers(0, 2 ** 32 - 1))
def test_bootstrap_auc_interval_is_ordered_and_in_the_unit_interval(slices, seed):
  groups, labels, scores = map(np.array, zip(*slices))
  low, high, used = metrics.bootstrap_auc(labels, scores, groups, metrics.Bootstrap(50, seed))
  assert 0 <= used <= 50
  if used:
    assert 0.0 <= low <= high <= 1.0
  else:
    assert math.isnan(low) and math.isnan(high)
