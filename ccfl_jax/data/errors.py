"""Bad input: one exception that names the file, and a policy that either raises or counts.

`config.dataset.on_bad_file` chooses the policy: 'error' stops at the first bad file with a
`DataError`; 'skip' logs the file, leaves it out and records it, so that every dropped file is
counted (readers return the record as `RealSlices.skipped`).
"""
import dataclasses
import logging
import os

ON_BAD_FILE_CHOICES = ("error", "skip")


class DataError(ValueError):
  """A data file (or labels row) that cannot be used; the message names it and the problem."""

  def __init__(self, path, problem: str):
    self.path = os.fspath(path)
    self.problem = problem
    super().__init__(f"{self.path}: {problem}")


@dataclasses.dataclass(frozen=True)
class SkippedFile:
  """A file left out under `on_bad_file='skip'`, and why."""
  path: str
  problem: str


class BadFilePolicy:
  """Raises `DataError` ('error') or logs and records the file ('skip').

  One instance is made per load and passed down the readers; it is the only place that
  decides whether a bad file stops the run.
  """

  def __init__(self, on_bad_file: str = "error"):
    if on_bad_file not in ON_BAD_FILE_CHOICES:
      raise ValueError(f"config.dataset.on_bad_file: {on_bad_file!r} is not one of "
                       f"{', '.join(ON_BAD_FILE_CHOICES)}")
    self.on_bad_file = on_bad_file
    self.skipped: list[SkippedFile] = []

  def reject(self, path, problem: str) -> None:
    """Reports a bad file: raises under 'error', records it under 'skip'."""
    if self.on_bad_file == "error":
      raise DataError(path, problem)
    logging.getLogger(__name__).warning("skipping %s: %s", os.fspath(path), problem)
    self.skipped.append(SkippedFile(os.fspath(path), problem))
