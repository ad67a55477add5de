"""The null convention: what every JSON writer stores for NaN/inf and how readers get it back."""
import json
import math

from hypothesis import given, strategies as st

from ccfl_jax import nulls
from ccfl_jax.ledger.canonical import canonical_json

JSON_TREES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20)


def test_non_finite_floats_become_none_and_come_back_as_nan_or_the_bound():
  assert [nulls.finite_or_none(x) for x in (1.5, math.nan, math.inf, -math.inf, 2)] == [
      1.5, None, None, None, 2.0]
  assert nulls.strict_json({"a": [math.nan, (1.0, math.inf)], "b": "nan"}) == {
      "a": [None, [1.0, None]], "b": "nan"}
  assert math.isnan(nulls.none_to(None)) and nulls.none_to(None, math.inf) == math.inf
  assert nulls.none_to(0.25) == 0.25


@given(JSON_TREES)
def test_any_tree_made_strict_encodes_canonically_and_round_trips(tree):
  strict = nulls.strict_json(tree)
  encoded = canonical_json(strict)  # allow_nan=False: raises on any NaN/inf left behind
  assert canonical_json(json.loads(encoded)) == encoded
