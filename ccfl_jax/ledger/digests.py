"""Digests of what the ledger refers to but never holds: model updates and checkpoints.

update_digest(tree): sha256 over the leaves of a pytree in canonical order: leaves sorted by
their key path (`jax.tree_util.keystr`), each contributing the canonical JSON of
{"path", "dtype" (little-endian numpy spelling, e.g. "<f4"), "shape"}, its length, and the
leaf's little-endian C-order bytes. Same values and structure give the same digest on any
host, whatever the container order.

checkpoint_digest(step_dir): sha256 over every regular file below the orbax step folder, in
sorted relative-path order (POSIX separators), each contributing its path, a NUL, its size
as 8 big-endian bytes, and its bytes; plus each file's own sha256, so that verify can name
the file that changed. A symlink or any other non-regular file anywhere in the folder is
refused (UnsafePath): following one would hash, and leak a digest of, a file outside the run.

Confinement: a checkpoint lives at `<run>/checkpoints/<step>` and nowhere else
(`confined_checkpoint`); absolute paths, `..` and symlinked folders are refused.
"""
import hashlib
import os
import pathlib
import re
import stat

import jax
import numpy as np

from ccfl_jax.ledger.canonical import canonical_json

_CHUNK = 1 << 20


def _little_endian_leaves(tree) -> list[tuple[str, np.ndarray]]:
  """(key path, host array in little-endian C order) per leaf, sorted by key path."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  out = []
  for path, leaf in sorted(((jax.tree_util.keystr(p), l) for p, l in leaves),
                           key=lambda item: item[0]):
    array = np.asarray(jax.device_get(leaf))
    out.append((path, np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"),
                                                        copy=False))))
  return out


def _header(path: str, dtype: np.dtype, shape) -> bytes:
  header = canonical_json({"path": path, "dtype": dtype.str, "shape": list(shape)})
  return len(header).to_bytes(8, "big") + header


def _raw(array: np.ndarray) -> np.ndarray:
  """The array's bytes as a uint8 view (no copy; any dtype, bfloat16 included)."""
  return array.reshape(-1).view(np.uint8)


def update_digest(tree) -> str:
  """sha256 hex of one hospital's (clipped) update pytree, see module docstring."""
  digest = hashlib.sha256()
  for path, array in _little_endian_leaves(tree):
    digest.update(_header(path, array.dtype, array.shape))
    digest.update(_raw(array))
  return digest.hexdigest()


def update_digests(stacked) -> tuple[str, ...]:
  """update_digest of every entry of a stacked pytree (leading axis: hospitals), equal to
  [update_digest(entry) for entry in tree_util.unstack(stacked)] without unstacking: each
  leaf is made host little-endian and its header encoded once, its rows hashed in place
  (at m_t = 1,000 small-CNN updates 0.2 s instead of 0.6 s, most of it sha256 itself;
  hashing rows in 2 threads was slower on the 2-core CPU, most rows being too small for
  hashlib to release the GIL)."""
  leaves = _little_endian_leaves(stacked)
  if not leaves:
    return ()
  # An entry's scalar leaf reads as shape [1] in update_digest (np.ascontiguousarray makes a
  # 0-d array 1-d), so it does here too.
  headers = [_header(path, array.dtype, array.shape[1:] if array.ndim > 1 else (1,))
             for path, array in leaves]

  def one(i: int) -> str:
    digest = hashlib.sha256()
    for header, (_, array) in zip(headers, leaves):
      digest.update(header)
      digest.update(_raw(array[i]))
    return digest.hexdigest()

  return tuple(one(i) for i in range(leaves[0][1].shape[0]))


CHECKPOINT_PATH = re.compile(r"checkpoints/[0-9]+")


class UnsafePath(ValueError):
  """A checkpoint path that leaves `<run>/checkpoints/<step>`, or a symlink in one."""


def confined_checkpoint(run_dir, relative) -> pathlib.Path:
  """`<run_dir>/<relative>` when relative is `checkpoints/<step>` and no folder on the way
  is a symlink; UnsafePath otherwise."""
  if not isinstance(relative, str) or not CHECKPOINT_PATH.fullmatch(relative):
    raise UnsafePath(f"checkpoint path {relative!r} is not checkpoints/<step> inside the run "
                     "folder (absolute and .. paths are refused)")
  root = pathlib.Path(run_dir) / "checkpoints"
  for path in (root, root / relative.split("/")[1]):
    if path.is_symlink():
      raise UnsafePath(f"{path} is a symlink: checkpoints must lie inside the run folder")
  return root / relative.split("/")[1]


def checkpoint_files(step_dir) -> tuple[pathlib.Path, ...]:
  """Every file below step_dir, sorted by relative path; UnsafePath on a symlink or special file."""
  step_dir = pathlib.Path(step_dir)
  if step_dir.is_symlink():
    raise UnsafePath(f"{step_dir} is a symlink: checkpoints must lie inside the run folder")
  found = []
  for folder, dirs, names in os.walk(step_dir, followlinks=False):
    for name in dirs + names:
      path = pathlib.Path(folder) / name
      mode = os.lstat(path).st_mode
      if stat.S_ISLNK(mode):
        raise UnsafePath(f"{path} is a symlink: a checkpoint may hold only regular files")
      if name in names and not stat.S_ISREG(mode):
        raise UnsafePath(f"{path} is not a regular file")
      if name in names:
        found.append(path)
  return tuple(sorted(found, key=lambda p: p.relative_to(step_dir).as_posix()))


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


def file_sha256(path) -> str:
  """sha256 hex of one regular file (UnsafePath for a symlink or anything else)."""
  path = pathlib.Path(path)
  if not stat.S_ISREG(os.lstat(path).st_mode):
    raise UnsafePath(f"{path} is not a regular file (symlinks are refused)")
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()
