"""Audit a run offline.

  python -m ccfl_jax.ledger verify runs/<run>   # exit 1 and the first failure if any
      [--trusted_keys=FILE]   # the hospitals' public keys, obtained out of band (JSON list or
                              # one hex per line; `keys` of a run you trust prints them)
      [--head=HASH]           # the run's last block hash, published elsewhere (`head`)
      [--min_difficulty=N]    # the verifier's proof-of-work minimum (default 8)
  python -m ccfl_jax.ledger show runs/<run>     # one line per block, rounds counted from 1
  python -m ccfl_jax.ledger head runs/<run>     # the last block's hash (to publish or pin)
  python -m ccfl_jax.ledger keys runs/<run>     # the hospitals' public keys, one per line

Without --trusted_keys and --head, verify says what it could not establish: a ledger
rewritten and re-signed with fresh keys, or one whose newest blocks were removed, can
only be told apart from the genuine run with those anchors. Exit status: 0 verified (or
shown), 1 the ledger fails, 2 a usage error or an unreadable run folder / anchor file.
"""
import pathlib
import sys

from absl import app, flags, logging

from ccfl_jax import command_line
from ccfl_jax.ledger import audit
from ccfl_jax.ledger import block as block_lib
from ccfl_jax.ledger import store
from ccfl_jax.ledger import validate

PROGRAM = "python -m ccfl_jax.ledger"
COMMANDS = ("verify", "show", "head", "keys")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The command's flags, on `flag_values` (absl's global FLAGS for the command line)."""
  flags.DEFINE_string("trusted_keys", None, "verify: a file of the hospitals' trusted public "
                      "keys (JSON list or one hex per line), obtained out of band.",
                      flag_values=flag_values)
  flags.DEFINE_string("head", None, "verify: the pinned hash of the run's last block, "
                      "published elsewhere (`head` prints it).", flag_values=flag_values)
  flags.DEFINE_integer("min_difficulty", block_lib.DEFAULT_DIFFICULTY,
                       "verify: the verifier's minimum proof-of-work bits per block.",
                       lower_bound=0, flag_values=flag_values)


def run(command: str, run_dir: str, flag_values: flags.FlagValues) -> int:
  """One command on one run folder; returns the exit status (messages printed)."""
  if not pathlib.Path(run_dir).is_dir():
    print(f"error: {run_dir}: no such run folder", file=sys.stderr)
    return 2
  try:
    if command == "verify":
      return _verify(run_dir, flag_values)
    return _show(command, run_dir)
  except (OSError, ValueError) as error:  # unreadable run folder or anchor file
    print(f"error: {error}", file=sys.stderr)
    return 2


def _show(command: str, run_dir: str) -> int:
  try:
    if command == "head":
      print(audit.head(run_dir))
    elif command == "keys":
      print("\n".join(audit.public_keys(run_dir)))
    else:
      print(audit.show(run_dir))
  except (store.StoreError, validate.LedgerRefusal) as error:
    print(f"FAILED: {error} (run verify for details)")
    return 1
  return 0


def _trusted_keys(path: str | None):
  """The --trusted_keys file's keys (None without one); ValueError naming the flag."""
  if not path:
    return None
  try:
    return audit.read_trusted_keys(path)
  except UnicodeDecodeError:
    raise ValueError(f"--trusted_keys={path}: not a text file (expected a JSON list of hex "
                     "public keys or one hex key per line)") from None
  except OSError as error:
    raise ValueError(f"--trusted_keys={path}: cannot read it "
                     f"({error.strerror or error})") from None


def _verify(run_dir: str, flag_values: flags.FlagValues) -> int:
  trusted = _trusted_keys(flag_values.trusted_keys)
  report = audit.verify_run(run_dir, trusted_keys=trusted, head=flag_values.head,
                            min_difficulty=flag_values.min_difficulty)
  print(report.summary())
  return 0 if report.ok else 1


def _command_and_run(positional: list[str]) -> tuple[str, str]:
  if len(positional) != 2 or positional[0] not in COMMANDS:
    raise app.UsageError(f"expected `{PROGRAM} {{{'|'.join(COMMANDS)}}} <run folder>`, got "
                         f"{' '.join(positional) or 'nothing'}")
  return positional[0], positional[1]


def main(argv: list[str]) -> int:
  """The command on `argv` (without the program name, e.g. ["verify", run, "--head", h]),
  parsed on flags of its own so tests can call it repeatedly; returns the exit status."""
  flag_values = flags.FlagValues()
  define_flags(flag_values)
  try:
    positional = flag_values([PROGRAM, *argv])[1:]
    command, run_dir = _command_and_run(positional)
  except (flags.Error, app.UsageError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  return run(command, run_dir, flag_values)


def _app_main(argv: list[str]) -> None:
  # absl logs at INFO until told otherwise, and JAX's backend search (imported for the
  # accountant) would print "Unable to initialize backend 'tpu'" before the verdict.
  logging.set_verbosity(logging.WARNING)
  sys.exit(run(*_command_and_run(argv[1:]), flags.FLAGS))


def cli() -> None:
  """Command-line entry (absl: --help lists the flags)."""
  define_flags()
  command_line.describe_as_main(__name__)
  command_line.run(_app_main)


if __name__ == "__main__":
  cli()
