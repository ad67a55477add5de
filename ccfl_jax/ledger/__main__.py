"""Audit a run offline.

  python -m ccfl_jax.ledger verify results/<run>   # exit 1 and the first failure if any
  python -m ccfl_jax.ledger show results/<run>     # one line per block
"""
import argparse
import sys

from ccfl_jax.ledger import audit


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m ccfl_jax.ledger", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("command", choices=("verify", "show"))
  parser.add_argument("run_dir")
  args = parser.parse_args(argv)
  if args.command == "show":
    print(audit.show(args.run_dir))
    return 0
  report = audit.verify_run(args.run_dir)
  print(report.summary())
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
