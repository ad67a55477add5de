r"""Trains a differentially private federated model across simulated hospitals.

  python -m ccfl_jax.main --config=configs/fed9.py [--config.num_rounds=5 ...]

Outputs go to <config.results_dir>/<config.run_name>/; rerunning the same command resumes.
"""
import logging as python_logging
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ccfl_jax import configuration, training
from ccfl_jax.data.errors import DataError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/<name>.py); override any of its fields "
    "with --config.<field>=<value> (the fields and their defaults: "
    "ccfl_jax/configuration.py default_config).", lock_config=True)
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of an error instead of one line.")


def parse_flags(argv):
  """absl flag parsing, with a bad `--config.x=y` override reported in one line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
    override = next((a.split("=")[0] for a in argv[1:] if a.startswith("--config.")
                     and a.split("=")[0].rsplit(".", 1)[-1] in str(error)), "--config")
    message = (str(error).replace("\\'", "'").replace("\\n", " ").replace("\n", " ")
               .strip("'\""))
    print(f"error: {override}: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/<experiment>.py is required")
  logging.set_verbosity(logging.WARNING)  # orbax and JAX log every step at INFO
  python_logging.getLogger("ccfl_jax").setLevel(python_logging.INFO)
  run_dir = pathlib.Path(config.results_dir) / config.run_name
  try:
    training.train_and_evaluate(config, run_dir)  # validates the config first
  except (configuration.ConfigError, DataError) as error:
    if _DEBUG.value:
      raise
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  print(f"results in {run_dir}/ (summary.md, metrics.jsonl, curves.png, checkpoints/)")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
