r"""Trains a differentially private federated model across simulated hospitals.

  python -m ccfl_jax.main --config=configs/fed9.py [--config.num_rounds=5 ...]   # or ccfl-train
  python -m ccfl_jax.main list     # config fields with defaults, models, datasets, configs

Outputs go to <config.results_dir>/<config.run_name>/ (runs/ by default, untracked);
rerunning the same command resumes.
"""
import ast
import logging as python_logging
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ccfl_jax import command_line, configuration

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/<name>.py); override any of its fields "
    "with --config.<field>=<value> (the fields and their defaults: "
    "ccfl_jax/configuration.py default_config).", lock_config=True)
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of an error instead of one line.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Log with absl's long prefix (time, file, line), "
                             "and JAX's and orbax's warnings and errors.")
CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"


def listing() -> str:
  """What `list` prints: every config field (default, doc), the models, datasets, configs."""
  from ccfl_jax import models  # lazy: see train
  from ccfl_jax.data import datasets
  lines = ["config fields (--config.<field>=<value>; default, then what it is):"]
  for field, default, doc in configuration.describe_fields():
    lines.append(f"  {field:<36} {default!r:<14} {doc}")
  lines += ["", "models (--config.model.name): " + ", ".join(models.model_names()),
            "datasets (--config.dataset.name): " + ", ".join(datasets.dataset_names())]
  configs = sorted(CONFIGS_DIR.glob("*.py"))
  if configs:
    lines += ["", "configs (--config=configs/<name>.py):"]
    lines += [f"  {p.name:<16} {(ast.get_docstring(ast.parse(p.read_text())) or '').splitlines()[0]}"
              for p in configs]
  return "\n".join(lines)


def _configure_logging(verbose: bool) -> None:
  """The run's progress lines, short (no absl prefix) unless --verbose."""
  logger = python_logging.getLogger("ccfl_jax")
  logger.setLevel(python_logging.INFO)
  if not verbose:
    handler = python_logging.StreamHandler(sys.stderr)
    handler.setFormatter(python_logging.Formatter("%(message)s"))
    logger.handlers = [handler]
    logger.propagate = False


def _config_argument(argv) -> str:
  """The `--config=PATH` as given, for messages."""
  given = [a for a in argv[1:] if a.startswith("--config=") or a == "--config"]
  return given[-1] if given else "--config"


def _debug_requested(argv) -> bool:
  """--debug among the arguments (flags are not parsed yet when parsing fails)."""
  return any(a in ("--debug", "--debug=true", "--debug=True", "--debug=1") for a in argv[1:])


def parse_flags(argv):
  """absl flag parsing, with a bad `--config.x=y` override or a config file that does not
  load (a syntax error, an exception in its get_config) reported in one line, exit 2."""
  try:
    return flags.FLAGS(argv)
  except OSError as error:  # a missing config file, deferred by ml_collections to first use
    if _debug_requested(argv):
      raise
    command_line.usage_error(f"{_config_argument(argv)}: {_load_failure(error)}")
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
    if _debug_requested(argv):
      raise
    if isinstance(error, AttributeError) and "attribute 'get_config'" in str(error):
      command_line.usage_error(f"{_config_argument(argv)}: cannot load the config file: it "
                               "defines no get_config()")
    if isinstance(error, flags.UnrecognizedFlagError):
      command_line.usage_error(error)
    override = next((a.split("=")[0] for a in argv[1:] if a.startswith("--config.")
                     and a.split("=")[0].rsplit(".", 1)[-1] in str(error)), "--config")
    message = str(error)
    if isinstance(error, (KeyError, AttributeError)):  # str() of a KeyError is its repr
      message = message.strip("'\"")
      if message == override.rsplit(".", 1)[-1]:
        message = "no such config field (`python -m ccfl_jax.main list` lists them)"
    if "Error whilst parsing config file" in message:
      # ml_collections puts get_config's whole traceback in the message: keep its last line.
      lines = [line for line in message.replace("\\n", "\n").splitlines() if line.strip()]
      message = f"{lines[0].split(': Error whilst')[0]}: error in the config file: {lines[-1]}"
    message = message.replace("\\'", "'").replace("\\n", " ").replace("\n", " ")
    command_line.usage_error(f"{override}: {message}")
  except Exception as error:  # the config file's own code failed: SyntaxError, NameError, ...
    if _debug_requested(argv):
      raise
    command_line.usage_error(f"{_config_argument(argv)}: {_load_failure(error)}")


def _load_failure(error: Exception) -> str:
  """Why the config file did not load, in one line."""
  if isinstance(error, OSError):  # ml_collections: the attempted paths, the OS's reason last
    cause = str(error.__cause__ or error)
    return "cannot load the config file: " + [
        line.strip() for line in cause.splitlines() if line.strip()][-1]
  return f"cannot load the config file: {type(error).__name__}: {error}"


def loaded_config():
  """The parsed config; a config file that is missing or unreadable as a `UsageError`
  (ml_collections defers that error to the config's first use)."""
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/<experiment>.py is required (or its get_config() "
                         "returned None)")
  try:
    config.run_name
  except OSError as error:
    raise app.UsageError(f"--config={config_flags.get_config_filename(flags.FLAGS['config'])}: "
                         f"{_load_failure(error)}") from None
  return config


def main(argv):
  if argv[1:] == ["list"]:
    print(listing())
    return
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])} (the only command is "
                         "`list`)")
  config = loaded_config()
  # orbax and JAX log every step at INFO, and orbax logs at ERROR, with its traceback, a
  # failure it then raises (a full disk: ~90 lines) that train reports in one line.
  logging.set_verbosity(logging.WARNING if _VERBOSE.value else logging.FATAL)
  _configure_logging(_VERBOSE.value)
  run_dir = pathlib.Path(config.results_dir) / config.run_name
  python_logging.getLogger("ccfl_jax").info("%s", started_line(config, run_dir))
  if train(config, run_dir):
    print(f"results in {run_dir}/ (summary.md, metrics.jsonl, curves.png, checkpoints/)")


def started_line(config, run_dir) -> str:
  """The first line a run prints, before JAX loads (~5 s)."""
  return (f"run {config.run_name} -> {run_dir}/: {config.num_rounds} rounds, "
          f"{config.hospitals_per_round} of {config.num_hospitals} hospitals per round, model "
          f"{config.model.name}, data {config.dataset.name}; loading JAX ...")


def train(config, run_dir) -> bool:
  """training.train_and_evaluate, its expected errors in one line (exit 2); whether this
  process wrote the run folder (with several processes only process 0 does)."""
  # Lazy, deliberately: the loop imports JAX, flax and dp_accounting (~5 s), after the
  # first progress line has told the user the run started.
  from ccfl_jax import files, recorder, training
  from ccfl_jax.data.errors import DataError
  from ccfl_jax.ledger import run_ledger
  try:
    return bool(training.train_and_evaluate(config, run_dir))  # validates the config first
  except (configuration.ConfigError, DataError, recorder.IncompatibleRun,
          training.NoUpdateAccepted, files.OutputError, *run_ledger.RESUME_ERRORS) as error:
    if _DEBUG.value:
      raise
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  except Exception as error:  # a full disk surfaces from orbax, the ledger or a plot
    if _DEBUG.value or not files.is_disk_full(error):
      raise
    print(f"error: {files.disk_full_message(run_dir)}", file=sys.stderr)
    sys.exit(2)


def cli() -> None:
  """`ccfl-train` / `python -m ccfl_jax.main`."""
  command_line.describe_as_main(__name__)
  command_line.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  cli()
