"""Classification metrics for COVID-19 detection (the paper's precision, sensitivity, ...)."""
import dataclasses

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); nan for one class."""
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, np.float64)
  positives, negatives = labels.sum(), (~labels).sum()
  if positives == 0 or negatives == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(len(scores))
  sorted_scores = scores[order]
  boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
  starts = np.concatenate([[0], boundaries])
  ends = np.concatenate([boundaries, [len(scores)]])
  for start, end in zip(starts, ends):
    ranks[order[start:end]] = (start + end + 1) / 2.0  # average rank, 1-based
  return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def _ratio(numerator, denominator) -> float:
  return float(numerator / denominator) if denominator else float("nan")


def classification_metrics(labels, prob_covid, threshold: float = 0.5) -> dict:
  """Precision, sensitivity (recall), specificity, accuracy, F1, AUC and the confusion matrix."""
  labels = np.asarray(labels).astype(int)
  predicted = (np.asarray(prob_covid) >= threshold).astype(int)
  tp = int(np.sum((predicted == 1) & (labels == 1)))
  tn = int(np.sum((predicted == 0) & (labels == 0)))
  fp = int(np.sum((predicted == 1) & (labels == 0)))
  fn = int(np.sum((predicted == 0) & (labels == 1)))
  precision, sensitivity = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
  return dict(
      precision=precision, sensitivity=sensitivity, specificity=_ratio(tn, tn + fp),
      accuracy=_ratio(tp + tn, len(labels)),
      f1=_ratio(2 * precision * sensitivity, precision + sensitivity) if tp else 0.0,
      auc=roc_auc(labels, prob_covid),
      confusion_matrix=[[tn, fp], [fn, tp]])  # rows: true 0/1, columns: predicted 0/1


SENSITIVITY_TARGET = 0.95  # the operating point a screening reader asks for


def specificity_at_sensitivity(labels, scores, target: float = SENSITIVITY_TARGET
                               ) -> tuple[float, float]:
  """(specificity, threshold): the highest specificity over thresholds t whose sensitivity is
  >= target, calling an example positive when its score >= t (as `classification_metrics`).

  Raising t never raises sensitivity and never lowers specificity, so the best t is the largest
  one that still keeps ceil(target x positives) positives at or above it: the k-th highest
  positive score. Ties at t count as positive, so negatives tied with it are false positives.
  (nan, nan) when a class is missing."""
  if not 0.0 < target <= 1.0:
    raise ValueError(f"sensitivity target {target}: expected a value in (0, 1]")
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, np.float64)
  positive_scores = np.sort(scores[labels])[::-1]
  negative_scores = scores[~labels]
  if not len(positive_scores) or not len(negative_scores):
    return float("nan"), float("nan")
  sensitivities = np.arange(1, len(positive_scores) + 1) / len(positive_scores)
  needed = int(np.argmax(sensitivities >= target)) + 1  # as a reader computes it, not ceil()
  threshold = positive_scores[needed - 1]
  return float(np.mean(negative_scores < threshold)), float(threshold)


@dataclasses.dataclass(frozen=True)
class Bootstrap:
  """A patient bootstrap: `resamples` draws of the patients with replacement (0 = none) from
  numpy's Generator seeded with `seed`, so a report is reproducible."""
  resamples: int = 1000
  seed: int = 0

  def __post_init__(self):
    if self.resamples < 0:
      raise ValueError(f"--bootstrap={self.resamples}: expected a count >= 0 (0 = no interval)")


def _patient_draws(num_patients: int, bootstrap: Bootstrap) -> np.ndarray:
  """(resamples, patients) counts: how often each patient (of np.unique(groups)) is drawn.
  Draw b is row b of `default_rng(seed).integers(0, patients, (resamples, patients))`."""
  rng = np.random.default_rng(bootstrap.seed)
  draws = rng.integers(0, num_patients, size=(bootstrap.resamples, num_patients))
  rows = np.arange(bootstrap.resamples)[:, None] * num_patients
  return np.bincount((draws + rows).ravel(), minlength=bootstrap.resamples * num_patients
                     ).reshape(bootstrap.resamples, num_patients)


def _weighted_aucs(labels, scores, weights) -> np.ndarray:
  """AUC (ties count half) of each row of weights (resamples, examples): example i taken
  weights[b, i] times; nan where a row leaves a class without weight."""
  order = np.argsort(scores, kind="mergesort")
  labels, scores, weights = labels[order], scores[order], weights[:, order]
  level_start = np.searchsorted(scores, scores, side="left")  # first index of each tie group
  level_end = np.searchsorted(scores, scores, side="right") - 1
  positive, negative = weights * labels, weights * ~labels
  negatives_through = np.cumsum(negative, axis=1)
  negatives_before = np.where(level_start > 0, negatives_through[:, level_start - 1], 0.0)
  negatives_tied = negatives_through[:, level_end] - negatives_before
  wins = np.sum(positive * (negatives_before + 0.5 * negatives_tied), axis=1)
  pairs = positive.sum(axis=1) * negative.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(pairs > 0, wins / pairs, np.nan)


WEIGHTS_PER_CHUNK = 2 ** 22  # resamples x slices weights held at once (32 MiB)


def bootstrap_auc(labels, scores, groups=None, bootstrap: Bootstrap = Bootstrap()
                  ) -> tuple[float, float, int]:
  """(low, high, used): the percentile 95% interval (2.5th, 97.5th percentiles) of ROC AUC over
  `bootstrap.resamples` resamples of the groups (patients) with replacement, a group's examples
  (slices) going together; groups=None makes each example its own group (patient-level rows).

  A resample without both classes has no AUC and is skipped; `used` counts the others.
  (nan, nan, 0) when none is left or resamples = 0. Vectorized: a resample is a row of
  per-patient counts, its AUC the weighted Mann-Whitney statistic of the slices."""
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, np.float64)
  groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
  _, patient_of = np.unique(groups, return_inverse=True)
  if not len(labels) or not bootstrap.resamples:
    return float("nan"), float("nan"), 0
  counts = _patient_draws(patient_of.max() + 1, bootstrap)
  chunk = max(1, WEIGHTS_PER_CHUNK // len(labels))
  aucs = np.concatenate([_weighted_aucs(labels, scores, counts[i:i + chunk, patient_of])
                         for i in range(0, len(counts), chunk)])
  aucs = aucs[~np.isnan(aucs)]
  if not len(aucs):
    return float("nan"), float("nan"), 0
  low, high = np.percentile(aucs, [2.5, 97.5])
  return float(low), float(high), len(aucs)


def screening_metrics(labels, scores, groups=None, bootstrap: Bootstrap = Bootstrap()) -> dict:
  """The patient-bootstrap AUC interval (None without one) and specificity at sensitivity 0.95
  with its threshold (see `bootstrap_auc`, `specificity_at_sensitivity`)."""
  low, high, used = bootstrap_auc(labels, scores, groups, bootstrap)
  specificity, threshold = specificity_at_sensitivity(labels, scores, SENSITIVITY_TARGET)
  return dict(auc_ci95=[low, high] if used else None, auc_ci95_resamples=used,
              specificity_at_sensitivity_95=specificity, threshold_at_sensitivity_95=threshold)
