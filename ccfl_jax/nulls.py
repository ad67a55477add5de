"""The one convention for numbers JSON cannot spell: NaN and +-inf are written as null.

Python's json writes NaN and Infinity, which jq, JavaScript, most JSON readers and the
ledger's canonical encoding refuse. So every writer (metrics.jsonl, summary.json, the
ledger's transactions) stores a non-finite float as null, and every reader that computes
turns null back into NaN (an undefined metric: precision with no positive prediction, AUC
of a one-class test set) or, where the field is a bound, +inf (epsilon without noise).
"""
import math


def finite_or_none(x) -> float | None:
  """A float for JSON: NaN and infinities become None."""
  x = float(x)
  return x if math.isfinite(x) else None


def strict_json(value):
  """`value` with every NaN or infinite float (nested in dicts/lists/tuples) replaced by None."""
  if isinstance(value, float):
    return finite_or_none(value)
  if isinstance(value, dict):
    return {k: strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  return value


def none_to(value, missing: float = math.nan) -> float:
  """A value read back from JSON, as a float: None becomes `missing` (NaN, or inf for a bound)."""
  return missing if value is None else value
