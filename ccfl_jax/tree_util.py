"""Pytree plumbing shared by the engine, the loop and the tools (as fedjax's core/tree_util).

A "stacked" tree holds one entry per hospital on the leading axis of every leaf.
"""
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


def keep(tree, mask):
  """`tree` with zeros where `mask` (a same-structure tree of Python bools) is False; `tree`
  itself when `mask` is None. The zeros are constants, so a jit drops what produced them."""
  if mask is None:
    return tree
  return jax.tree.map(lambda leaf, trains: leaf if trains else jnp.zeros_like(leaf), tree, mask)


def pad_leading(array: np.ndarray, size: int) -> np.ndarray:
  """`array` padded with zeros along its leading axis to length `size` (>= its length)."""
  array = np.asarray(array)
  return np.concatenate([array, np.zeros((size - len(array),) + array.shape[1:], array.dtype)])


def round_up(count: int, multiple: int) -> int:
  """The smallest multiple of `multiple` that is >= count."""
  return -(-count // multiple) * multiple
