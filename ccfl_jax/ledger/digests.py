"""Digests of what the ledger refers to but never holds: model updates and checkpoints.

update_digest(tree): sha256 over the leaves of a pytree in canonical order: leaves sorted by
their key path (`jax.tree_util.keystr`), each contributing the canonical JSON of
{"path", "dtype" (little-endian numpy spelling, e.g. "<f4"), "shape"}, its length, and the
leaf's little-endian C-order bytes. Same values and structure give the same digest on any
host, whatever the container order.

checkpoint_digest(step_dir): sha256 over every regular file below the orbax step folder, in
sorted relative-path order (POSIX separators), each contributing its path, a NUL, its size
as 8 big-endian bytes, and its bytes; plus each file's own sha256, so that verify can name
the file that changed.
"""
import hashlib
import pathlib

import jax
import numpy as np

from ccfl_jax.ledger.canonical import canonical_json

_CHUNK = 1 << 20


def update_digest(tree) -> str:
  """sha256 hex of one hospital's (clipped) update pytree, see module docstring."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  digest = hashlib.sha256()
  for path, leaf in sorted(((jax.tree_util.keystr(p), l) for p, l in leaves),
                           key=lambda item: item[0]):
    array = np.asarray(jax.device_get(leaf))
    array = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
    header = canonical_json({"path": path, "dtype": array.dtype.str,
                             "shape": list(array.shape)})
    digest.update(len(header).to_bytes(8, "big") + header)
    digest.update(array.tobytes())
  return digest.hexdigest()


def checkpoint_files(step_dir) -> tuple[pathlib.Path, ...]:
  step_dir = pathlib.Path(step_dir)
  return tuple(sorted((p for p in step_dir.rglob("*") if p.is_file()),
                      key=lambda p: p.relative_to(step_dir).as_posix()))


def checkpoint_digest(step_dir) -> tuple[str, dict[str, str]]:
  """(sha256 of the whole step folder, {relative path: sha256 of that file})."""
  step_dir = pathlib.Path(step_dir)
  if not step_dir.is_dir():
    raise FileNotFoundError(f"no checkpoint folder {step_dir}")
  whole = hashlib.sha256()
  per_file = {}
  for path in checkpoint_files(step_dir):
    relative = path.relative_to(step_dir).as_posix()
    one = hashlib.sha256()
    whole.update(relative.encode("utf-8") + b"\0" + path.stat().st_size.to_bytes(8, "big"))
    with open(path, "rb") as f:
      while chunk := f.read(_CHUNK):
        whole.update(chunk)
        one.update(chunk)
    per_file[relative] = one.hexdigest()
  return whole.hexdigest(), per_file


def checkpoint_sha256(step_dir) -> str:
  return checkpoint_digest(step_dir)[0]
