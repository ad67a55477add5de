"""A progress bar (tqdm) for steps that are long and otherwise silent, such as decoding a
folder of scans. Drawn only on a terminal: in a log file or a pipe it prints nothing, so a
non-interactive log stays clean (the step's summary line is logged either way)."""
import sys

from tqdm import tqdm


def bar(iterable, description: str, total: int | None = None, unit: str = "file"):
  return tqdm(iterable, desc=description, total=total, unit=unit, leave=False,
              disable=not sys.stderr.isatty(), file=sys.stderr)
