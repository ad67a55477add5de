"""What every command's `cli()` shares: absl's --help as useful from a console script
(`ccfl-train`, ...) as from `python -m ccfl_jax.<module>`, and usage errors in one line.

absl's own `app.run` reports a bad flag in two lines with exit status 1 and a `UsageError`
with the whole usage text before it; `run` reports both as every other user-facing error
is reported: one line `error: ...` on stderr, exit status 2 (`--help` is unchanged).
"""
import sys
from typing import Callable

from absl import app, flags

USAGE_ERROR_EXIT = 2


def usage_error(message) -> None:
  """Prints `error: message` (one line) and exits with status 2."""
  print("error: " + " ".join(str(message).split()), file=sys.stderr)
  sys.exit(USAGE_ERROR_EXIT)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, a bad or missing flag reported by `usage_error`."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    usage_error(error)


def run(main: Callable[[list[str]], object],
        flags_parser: Callable[[list[str]], list[str]] = parse_flags) -> None:
  """`app.run(main)`, with bad flags and `app.UsageError` reported in one line, exit 2."""

  def main_with_usage_errors(argv):
    try:
      return main(argv)
    except app.UsageError as error:
      usage_error(error)

  app.run(main_with_usage_errors, flags_parser=flags_parser)


def describe_as_main(module_name: str) -> None:
  """Make module `module_name` what absl's --help describes: its docstring is the usage and
  its flags are listed. absl lists the flags of the module named `sys.argv[0]`, which for a
  console script is the installer's wrapper, not the module that defined them."""
  defined_in = sys.argv[0] if module_name == "__main__" else module_name
  for flag in flags.FLAGS.get_key_flags_for_module(defined_in):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  sys.modules["__main__"].__doc__ = sys.modules[module_name].__doc__
