import json
import math

import pytest

from ccfl_jax import reporting


def _strict_loads(text):
  def refuse(token):
    raise ValueError(f"non-standard JSON token {token}")
  return json.loads(text, parse_constant=refuse)


def test_json_text_writes_undefined_and_unbounded_metrics_as_null():
  record = dict(round=3, precision=math.nan, epsilon=math.inf, auc=0.75,
                nested=[1.0, -math.inf, dict(x=math.nan)], name="fed9")
  parsed = _strict_loads(reporting.json_text(record))
  assert parsed == dict(round=3, precision=None, epsilon=None, auc=0.75,
                        nested=[1.0, None, dict(x=None)], name="fed9")


def test_python_json_would_have_written_nan():
  with pytest.raises(ValueError):
    _strict_loads(json.dumps(dict(precision=math.nan)))


def test_summary_markdown_shows_a_null_metric_as_a_dash():
  assert reporting._fmt(None) == "-"
  assert reporting._fmt(math.inf) == "inf"
  assert reporting._fmt(0.12345) == "0.1235"
