"""Audit a run offline.

  python -m ccfl_jax.ledger verify results/<run>   # exit 1 and the first failure if any
      [--trusted-keys FILE]   # the hospitals' public keys, obtained out of band (JSON list or
                              # one hex per line; `show --keys` of a run you trust prints them)
      [--head HASH]           # the run's last block hash, published elsewhere (`show --head`)
      [--min-difficulty N]    # the verifier's proof-of-work minimum (default 8)
  python -m ccfl_jax.ledger show results/<run>     # one line per block
      [--head | --keys]       # only the last block's hash / the public keys, one per line

Without --trusted-keys and --head, verify says what it could not establish: a ledger
rewritten and re-signed with fresh keys, or one whose newest blocks were removed, can
only be told apart from the genuine run with those anchors.
"""
import argparse
import sys

from ccfl_jax.ledger import audit
from ccfl_jax.ledger import block as block_lib
from ccfl_jax.ledger import store
from ccfl_jax.ledger import validate


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m ccfl_jax.ledger", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("command", choices=("verify", "show"))
  parser.add_argument("run_dir")
  parser.add_argument("--trusted-keys", metavar="FILE", help="verify: trusted public keys")
  parser.add_argument("--head", nargs="?", const=True, default=None, metavar="HASH",
                      help="verify: the pinned last block hash; show: print the head")
  parser.add_argument("--min-difficulty", type=int, default=block_lib.DEFAULT_DIFFICULTY,
                      help="verify: minimum proof-of-work bits (default %(default)s)")
  parser.add_argument("--keys", action="store_true", help="show: print the public keys")
  args = parser.parse_args(argv)
  try:
    if args.command == "show":
      return _show(args)
    return _verify(args)
  except (OSError, ValueError) as error:  # unreadable run folder or anchor file
    print(f"error: {error}", file=sys.stderr)
    return 2


def _show(args) -> int:
  try:
    if args.head is True:
      print(audit.head(args.run_dir))
    elif args.keys:
      print("\n".join(audit.public_keys(args.run_dir)))
    else:
      print(audit.show(args.run_dir))
  except (store.StoreError, validate.LedgerRefusal) as error:
    print(f"FAILED: {error} (run verify for details)")
    return 1
  return 0


def _verify(args) -> int:
  if args.head is True:
    raise ValueError("verify --head needs the hash of the run's last block")
  trusted = audit.read_trusted_keys(args.trusted_keys) if args.trusted_keys else None
  report = audit.verify_run(args.run_dir, trusted_keys=trusted, head=args.head,
                            min_difficulty=args.min_difficulty)
  print(report.summary())
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
