"""A run's checkpoint for evaluate and predict, loaded only once its ledger vouches for it.

`audit.verify_checkpoint` checks, before anything is restored, that the checkpoint folder is
byte for byte the one a block of the run's valid ledger records (no symlinks, no path out of
the run) and that config.json -- which rebuilds the model and its preprocessing -- is the one
the ledger records. `verify=False` (the commands' `--no_verify`) skips this, for runs kept
without a ledger; the report then says the checkpoint was not verified.
"""
from ccfl_jax import inference
from ccfl_jax.ledger import audit

NO_VERIFY_HINT = "(--no_verify loads it anyway, unaudited)"


def load_run(run_dir, round_=None, verify: bool = True) -> inference.LoadedRun:
  """inference.load_run after audit.verify_checkpoint; CheckpointRefused names what failed."""
  step = inference.checkpoint_round(run_dir, round_)
  if verify:
    try:
      audit.verify_checkpoint(run_dir, step)
    except audit.CheckpointRefused as error:
      raise audit.CheckpointRefused(f"{error} {NO_VERIFY_HINT}") from None
  return inference.load_run(run_dir, step)


def verification(verify: bool) -> str:
  """The report's line on it."""
  return ("checkpoint and config.json verified against the run's ledger" if verify else
          "NOT verified against the ledger (--no_verify)")
