"""Named points where a fault-injection test kills the process (SIGKILL), to prove that a run
killed anywhere resumes to the same result with its ledger intact.

Inert unless the environment sets CCFL_FAILPOINT=<name>:<n>; then the process kills itself
at point <name> when its counter there equals n, as the kernel's OOM killer or a power cut
would: no exception, no cleanup, no flush. Points and their counters: `round` (round n, after
sampling, before its update exists), `checkpoint_write` (orbax writing checkpoint n, not yet
committed), `ledger_append` (ledger record n written to its temporary file, not yet linked
into place).
"""
import os
import signal

ENV_VAR = "CCFL_FAILPOINT"
POINTS = ("round", "checkpoint_write", "ledger_append")


def hit(name: str, counter: int) -> None:
  """Kill this process here if CCFL_FAILPOINT is `<name>:<counter>`."""
  if os.environ.get(ENV_VAR) == f"{name}:{counter}":
    os.kill(os.getpid(), signal.SIGKILL)
