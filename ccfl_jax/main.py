r"""Trains a differentially private federated model across simulated hospitals.

  python -m ccfl_jax.main --config=configs/fed9.py [--config.num_rounds=5 ...]

Outputs go to <config.results_dir>/<config.run_name>/; rerunning the same command resumes.
"""
import logging as python_logging
import pathlib
import sys

from absl import app, logging
from ml_collections import config_flags

from ccfl_jax import configuration, training

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/<experiment>.py is required")
  logging.set_verbosity(logging.WARNING)  # orbax and JAX log every step at INFO
  python_logging.getLogger("ccfl_jax").setLevel(python_logging.INFO)
  try:
    configuration.validate(config)
  except configuration.ConfigError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  run_dir = pathlib.Path(config.results_dir) / config.run_name
  training.train_and_evaluate(config, run_dir)
  print(f"results in {run_dir}/ (summary.md, metrics.jsonl, curves.png, checkpoints/)")


if __name__ == "__main__":
  app.run(main)
