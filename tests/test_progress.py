"""Progress bars are drawn on a terminal only: a log file stays clean."""
import io
import sys

from ccfl_jax import progress


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_a_bar_on_a_terminal_and_nothing_in_a_log(monkeypatch):
  log = io.StringIO()
  monkeypatch.setattr(sys, "stderr", log)
  assert list(progress.bar(range(3), "decoding")) == [0, 1, 2]
  assert log.getvalue() == ""
  terminal = _Terminal()
  monkeypatch.setattr(sys, "stderr", terminal)
  assert list(progress.bar(range(3), "decoding")) == [0, 1, 2]
  assert "decoding:   0%" in terminal.getvalue() and "0/3 [" in terminal.getvalue()  # then cleared
