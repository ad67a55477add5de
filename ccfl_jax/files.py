"""Writing a run's files so that a crash leaves the old file or the new one, never a torn one,
and checking before any training that the run folder can be written at all."""
import errno
import os
import pathlib
import tempfile

# How a full disk or quota surfaces: OSError from Python's own writes, and orbax's
# tensorstore errors (a ValueError "RESOURCE_EXHAUSTED: ... No space left on device").
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


class OutputError(OSError):
  """The run folder (or an output file) cannot be written; the message names it."""


def write_atomically(path, data: str | bytes) -> None:
  """Write beside `path`, flush to disk, then rename over it (atomic on POSIX)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  mode = "wb" if isinstance(data, bytes) else "w"
  with tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}.",
                                   suffix=".tmp", delete=False) as f:
    try:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    except BaseException:
      f.close()
      os.unlink(f.name)
      raise
  os.replace(f.name, path)


def check_writable_folder(folder) -> None:
  """OutputError unless `folder` exists or can be made, and a file can be written in it."""
  folder = pathlib.Path(folder)
  try:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
      pass
  except OSError as error:
    raise OutputError(f"{folder}: cannot write the run folder here ({error.strerror or error}); "
                      "choose another --config.results_dir") from None


def is_disk_full(error: BaseException) -> bool:
  """Whether `error`, or any exception it was raised from or during, is a full disk/quota."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
      return True
    if any(text in str(error) for text in _DISK_FULL_TEXT):
      return True
    error = error.__cause__ or error.__context__
  return False


def disk_full_message(run_dir) -> str:
  return (f"{run_dir}: the disk is full (no space left on device) while writing the run; "
          "nothing already recorded is lost: free space and rerun the same command to resume "
          "from the last checkpoint")
