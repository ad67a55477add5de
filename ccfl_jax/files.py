"""Writing a run's files so that a crash leaves the old file or the new one, never a torn one,
and checking before any training that the run folder can be written at all."""
import os
import pathlib
import tempfile


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
