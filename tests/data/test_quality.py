"""Data checks before training: what is refused, what is warned about."""
import pytest

from ccfl_jax.data import quality
from ccfl_jax.data.errors import DataError


def row(name, slices, positive, patients=2):
  return dict(name=name, patients=patients, slices=slices, positive_slices=positive)


def test_balanced_data_passes_without_a_word():
  assert quality.check([row("hospital 0", 8, 4), row("hospital 1", 8, 3), row("test", 4, 2)],
                       batch_size=4, where="d") == []


@pytest.mark.parametrize("counts, message", [
    ([row("hospital 0", 8, 4), row("test", 0, 0, 0)], "d: the test set is empty"),
    ([row("hospital 0", 8, 4), row("hospital 1", 0, 0, 0), row("test", 4, 2)],
     "d: hospital 1 received no slices"),
    ([row("hospital 0", 8, 0), row("hospital 1", 8, 0), row("test", 4, 2)],
     "d: the training data has only non-COVID slices"),
    ([row("hospital 0", 8, 8), row("test", 4, 2)], "training data has only COVID-19 slices"),
])
def test_what_would_make_metrics_meaningless_is_refused(counts, message):
  with pytest.raises(DataError, match=message):
    quality.check(counts, batch_size=4, where="d")


def test_weak_data_is_warned_about():
  warnings = quality.check([row("hospital 0", 8, 8), row("hospital 1", 3, 0),
                            row("test", 4, 0)], batch_size=4, where="d")
  assert warnings == [
      "the test set has only non-COVID slices: AUC and sensitivity are undefined (reported as "
      "null)",
      "hospital 0 has only COVID-19 slices", "hospital 1 has only non-COVID slices",
      "batch_size 4 exceeds the slices of hospital 1 (3): their local batches repeat slices"]


def test_many_weak_hospitals_make_one_readable_line_each():
  hospitals = [row(f"hospital {h}", 3, 3 if h % 2 else 0) for h in range(1000)]
  warnings = quality.check(hospitals + [row("test", 40, 20)], batch_size=4, where="d")
  assert warnings == [
      "500 of 1000 hospitals have only COVID-19 slices: hospital 1, hospital 3, hospital 5, "
      "hospital 7, hospital 9 and 495 more",
      "500 of 1000 hospitals have only non-COVID slices: hospital 0, hospital 2, hospital 4, "
      "hospital 6, hospital 8 and 495 more",
      "batch_size 4 exceeds the slices of 1000 of 1000 hospitals: hospital 0 (3), hospital 1 "
      "(3), hospital 2 (3), hospital 3 (3), hospital 4 (3) and 995 more: their local batches "
      "repeat slices"]
