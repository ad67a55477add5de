"""Checks of the partitioned data before any training: refuse what would make the run's
metrics meaningless, warn about what makes them weak.

Refused (DataError): an empty test set (no metric is defined), training data of one class
(the model can learn only one answer), a hospital without slices. Warned: a one-class test
set (AUC, and sensitivity or specificity, undefined: reported as null), a one-class
hospital, a batch larger than a hospital's data (its local batches cycle its slices).
"""
from ccfl_jax.data.errors import DataError

LISTED = 5  # hospitals named in one warning; beyond that, a count


def _one_class(row: dict) -> str | None:
  if row["positive_slices"] == 0:
    return "only non-COVID slices"
  if row["positive_slices"] == row["slices"]:
    return "only COVID-19 slices"
  return None


def check(counts: list[dict], batch_size: int, where: str) -> list[str]:
  """`counts` as partition.describe gives them (hospitals, then the test set); returns the
  warnings, raises DataError (naming `where`, the dataset) for what is refused."""
  hospitals, test = counts[:-1], counts[-1]
  if test["slices"] == 0:
    raise DataError(where, "the test set is empty: no metric would be defined (use more "
                    "patients, a larger partition.test_fraction, or an official split)")
  empty = [r["name"] for r in hospitals if r["slices"] == 0]
  if empty:
    raise DataError(where, f"{', '.join(empty)} received no slices (fewer patients than "
                    "hospitals, or a skewed partition)")
  total = dict(slices=sum(r["slices"] for r in hospitals),
               positive_slices=sum(r["positive_slices"] for r in hospitals))
  if _one_class(total):
    raise DataError(where, f"the training data has {_one_class(total)}: a model can learn "
                    "only one answer")
  warnings = []
  if _one_class(test):
    warnings.append(f"the test set has {_one_class(test)}: AUC and "
                    f"{'sensitivity' if test['positive_slices'] == 0 else 'specificity'} "
                    "are undefined (reported as null)")
  for kind in ("only COVID-19 slices", "only non-COVID slices"):
    names = [r["name"] for r in hospitals if _one_class(r) == kind]
    if len(names) > LISTED:
      warnings.append(f"{len(names)} of {len(hospitals)} hospitals have {kind}: "
                      f"{_listed(names)}")
    else:
      warnings += [f"{name} has {kind}" for name in names]
  small = [f"{r['name']} ({r['slices']})" for r in hospitals if r["slices"] < batch_size]
  if small:
    count = f"{len(small)} of {len(hospitals)} hospitals: " if len(small) > LISTED else ""
    warnings.append(f"batch_size {batch_size} exceeds the slices of {count}{_listed(small)}: "
                    "their local batches repeat slices")
  return warnings


def _listed(names: list[str]) -> str:
  """The first LISTED names, then how many more (a warning stays one readable line)."""
  more = len(names) - LISTED
  return ", ".join(names[:LISTED]) + (f" and {more} more" if more > 0 else "")
