"""Pytree plumbing shared by the engine, the loop and the tools (as fedjax's core/tree_util).

A "stacked" tree holds one entry per hospital on the leading axis of every leaf.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np


def stack(trees):
  """A list of same-structure trees -> one tree whose leaves gain a leading axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def index(tree, i):
  """Entry i of a stacked tree."""
  return jax.tree.map(lambda leaf: leaf[i], tree)


def unstack(tree) -> list:
  """A stacked tree -> the list of its entries (leading axis length taken from the first leaf)."""
  return [index(tree, i) for i in range(len(jax.tree.leaves(tree)[0]))]


def pad_leading(array: np.ndarray, size: int) -> np.ndarray:
  """`array` padded with zeros along its leading axis to length `size` (>= its length)."""
  array = np.asarray(array)
  return np.concatenate([array, np.zeros((size - len(array),) + array.shape[1:], array.dtype)])


def round_up(count: int, multiple: int) -> int:
  """The smallest multiple of `multiple` that is >= count."""
  return -(-count // multiple) * multiple


def nan_to_none(value):
  """`value` with every NaN or infinite float (also inside dicts and lists) replaced by None.

  A None metric is undefined (precision with no positive prediction, AUC of a one-class test
  set) or unbounded (epsilon without noise); strict JSON has no token for either.
  """
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: nan_to_none(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [nan_to_none(v) for v in value]
  return value


def none_to_nan(values) -> np.ndarray:
  """A sequence of numbers and None (as read back from JSON) -> float64 array, None as NaN."""
  return np.array([np.nan if v is None else v for v in values], np.float64)
