"""On-disk cache of preprocessed slices, so that decoding and windowing happen once.

An entry is keyed by a digest of (reader, cache format version, every preprocessing parameter,
and the relative path and *content* of every source file). Editing, adding or removing a source
file, or changing image_size / window / on_bad_file, gives a new key; the old entry is simply
never read again. An entry stores the slices with the loader's skipped files and data-quality
warnings, so a hit reports them as the first load did. (A file's content digest is remembered with its size and modification time,
and recomputed when either changes, so a hit costs a `stat` per file, not a full reread.)

Where it lives: `config.dataset.cache_dir`, or when that is '' `$XDG_CACHE_HOME/ccfl_jax`
(default `~/.cache/ccfl_jax`); entries are `<root>/slices/<reader>-<key>.npz`, digests `<root>/file_digests/`.
How to clear it: `python -m ccfl_jax.data.cache --clear [--cache_dir=DIR]` (or delete the folder).
"""
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import time
from typing import Callable, Iterable

import numpy as np
from absl import app, flags

from ccfl_jax import command_line
from ccfl_jax.data.errors import SkippedFile
from ccfl_jax.data.real_slices import RealSlices
from ccfl_jax.files import write_atomically

# Bump when the preprocessing code changes what it produces for the same parameters.
# 2: entries carry the loader's data-quality warnings (older entries have none to report).
# 3: slices with NaN/Inf pixels are refused (an older entry could hold them).
CACHE_FORMAT_VERSION = 3
_READ_CHUNK = 1 << 20
_RACY_WINDOW_NS = 2_000_000_000


def cache_root(cache_dir: str = "") -> pathlib.Path:
  """The cache folder: `cache_dir` if given, else the user's cache dir."""
  if cache_dir:
    return pathlib.Path(cache_dir).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "ccfl_jax"


def files_under(root) -> list[pathlib.Path]:
  """Every regular, non-hidden file under `root` (or `root` itself), in a stable order."""
  root = pathlib.Path(root)
  if root.is_file():
    return [root]
  return sorted(p for p in root.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))


def file_digest(path: pathlib.Path) -> str:
  """Digest of one file's bytes."""
  digest = hashlib.blake2b(digest_size=20)
  with open(path, "rb") as f:
    while chunk := f.read(_READ_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _memo_path(root: pathlib.Path, cache_dir: str) -> pathlib.Path:
  name = hashlib.blake2b(str(root.resolve()).encode(), digest_size=12).hexdigest()
  return cache_root(cache_dir) / "file_digests" / f"{name}.json"


def sources_digest(root, files: Iterable[pathlib.Path], cache_dir: str | None = None) -> str:
  """Digest of the files' paths (relative to `root`) and contents.

  With `cache_dir` (not None), each file's content digest is remembered beside the cache with
  its size and modification time and recomputed only when one of them changes (as git and make
  notice edits), so a cache hit does not reread every source byte.
  """
  root = pathlib.Path(root)
  memo_path = None if cache_dir is None else _memo_path(root, cache_dir)
  memo = {}
  if memo_path is not None and memo_path.exists():
    try:
      memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
      memo = {}  # a damaged memo only costs rehashing
  updated, combined = {}, hashlib.blake2b(digest_size=20)
  for path in files:
    relative = path.name if path == root else path.relative_to(root).as_posix()
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns]
    known = memo.get(relative)
    digest = known[2] if known and known[:2] == stamp and known[2] else file_digest(path)
    # A file modified within the timestamp granularity of now could change again without
    # its stamp changing ("racy git"): remember its digest only once it is old enough.
    recent = time.time_ns() - stat.st_mtime_ns < _RACY_WINDOW_NS
    updated[relative] = stamp + [None if recent else digest]
    combined.update(f"{relative}\0{digest}\0".encode())
  if memo_path is not None and updated != memo:
    write_atomically(memo_path, json.dumps(updated))
  return combined.hexdigest()


def entry_key(reader: str, params: dict, source_digest: str) -> str:
  """The cache key of one (reader, preprocessing parameters, sources) combination."""
  description = json.dumps({"reader": reader, "version": CACHE_FORMAT_VERSION,
                            "params": params, "sources": source_digest}, sort_keys=True)
  return hashlib.blake2b(description.encode(), digest_size=20).hexdigest()


def _to_arrays(slices: RealSlices) -> dict[str, np.ndarray]:
  arrays = {"images": slices.images, "labels": slices.labels,
            "patient_ids": np.asarray(slices.patient_ids, str),
            "skipped_paths": np.asarray([s.path for s in slices.skipped], str),
            "skipped_problems": np.asarray([s.problem for s in slices.skipped], str),
            "warnings": np.asarray(slices.warnings, str)}
  for name in ("split", "site", "source_paths", "slice_positions", "slice_thickness"):
    if getattr(slices, name) is not None:
      arrays[name] = np.asarray(getattr(slices, name))
  return arrays


def _from_arrays(arrays) -> RealSlices:
  optional = lambda name: arrays[name] if name in arrays else None
  skipped = tuple(SkippedFile(str(p), str(q))
                  for p, q in zip(arrays["skipped_paths"], arrays["skipped_problems"]))
  return RealSlices(arrays["images"], arrays["labels"], arrays["patient_ids"],
                    optional("split"), optional("site"), optional("source_paths"),
                    optional("slice_positions"), optional("slice_thickness"), skipped,
                    tuple(str(w) for w in arrays["warnings"]))


def _write_atomically(path: pathlib.Path, arrays: dict) -> None:
  """Writes beside the target and renames, so a crash never leaves a half-written entry."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
    np.savez(f, **arrays)
  os.replace(f.name, path)


def cached_slices(reader: str, root, params: dict, cache_dir: str,
                  build: Callable[[], RealSlices]) -> RealSlices:
  """Returns the cached slices for (reader, params, files under root), building them on a miss."""
  key = entry_key(reader, params, sources_digest(root, files_under(root), cache_dir))
  path = cache_root(cache_dir) / "slices" / f"{reader}-{key}.npz"
  if path.exists():
    try:
      with np.load(path, allow_pickle=False) as arrays:
        return _from_arrays({name: arrays[name] for name in arrays.files})
    except (OSError, ValueError, KeyError):
      pass  # an unreadable entry (disk trouble, older format) is rebuilt, not trusted
  slices = build()
  _write_atomically(path, _to_arrays(slices))
  return slices


def cached_arrays(reader: str, params: dict, cache_dir: str,
                  build: Callable[[], dict]) -> dict[str, np.ndarray]:
  """Arrays made from `params` alone (a generated dataset: no source files), cached like the
  slices of a real one; a cache that cannot be written only costs building them again."""
  path = cache_root(cache_dir) / "slices" / f"{reader}-{entry_key(reader, params, '')}.npz"
  if path.exists():
    try:
      with np.load(path, allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, KeyError):
      pass  # an unreadable entry is rebuilt, not trusted
  arrays = build()
  try:
    _write_atomically(path, arrays)
  except OSError:
    pass
  return arrays


def clear(cache_dir: str = "") -> pathlib.Path:
  """Deletes every cached entry; returns the folder that was cleared."""
  root = cache_root(cache_dir)
  for folder in ("slices", "file_digests"):
    shutil.rmtree(root / folder, ignore_errors=True)
  return root


def main(argv: list[str]) -> None:
  """`python -m ccfl_jax.data.cache [--clear] [--cache_dir=DIR]`: shows or clears the cache."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  cache_dir = flags.FLAGS.cache_dir
  root = cache_root(cache_dir)
  if root.exists() and not root.is_dir():
    raise app.UsageError(f"--cache_dir={cache_dir}: {root} is not a folder (expected the cache "
                         "folder, as config.dataset.cache_dir)")
  folder = root / "slices"
  if flags.FLAGS.clear:
    print(f"cleared {clear(cache_dir)}")
    return
  entries = sorted(folder.glob("*.npz")) if folder.exists() else []
  size = sum(p.stat().st_size for p in entries)
  print(f"{folder}: {len(entries)} entries, {size / 2**20:.1f} MiB "
        "(clear with: python -m ccfl_jax.data.cache --clear)")


def cli() -> None:
  """The command line; its flags are defined here, so importing this module defines none."""
  flags.DEFINE_bool("clear", False, "Delete every cached entry and digest memo (default: only "
                    "show the cache's folder, entry count and size).")
  flags.DEFINE_string("cache_dir", "", "The cache folder, as config.dataset.cache_dir; '' = "
                      "$XDG_CACHE_HOME/ccfl_jax (default ~/.cache/ccfl_jax).")
  command_line.run(main)


if __name__ == "__main__":
  cli()
