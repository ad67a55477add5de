"""Classification metrics for COVID-19 detection (the paper's precision, sensitivity, ...)."""
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
