"""files: a full disk is recognised however it surfaces, and main reports it in one line."""
import errno

import pytest

from ccfl_jax import files, main, training
from ccfl_jax.configuration import default_config

ORBAX_STYLE = ValueError('RESOURCE_EXHAUSTED: Failed writing: "/r/checkpoints/2.orbax-checkpoint-'
                         'tmp/d/7e": Failed to write 707 bytes to file 6: No space left on '
                         "device [os_error_code='28']")


def _raised_from(outer, inner):
  try:
    try:
      raise inner
    except BaseException as error:
      raise outer from error
  except BaseException as error:
    return error


@pytest.mark.parametrize("error, full", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (ORBAX_STYLE, True),  # what orbax (tensorstore) raises on a full disk, measured on a tmpfs
    (_raised_from(RuntimeError("save failed"), OSError(errno.ENOSPC, "full")), True),
    (OSError(errno.EACCES, "Permission denied"), False),
    (ValueError("RESOURCE_EXHAUSTED: out of memory"), False),
])
def test_is_disk_full(error, full):
  assert files.is_disk_full(error) is full


def test_main_reports_a_full_disk_in_one_line(monkeypatch, tmp_path, capsys):
  def full_disk(config, run_dir):
    raise _raised_from(RuntimeError("orbax save failed"), ORBAX_STYLE)
  monkeypatch.setattr(training, "train_and_evaluate", full_disk)
  monkeypatch.setattr(main, "_DEBUG", type("Flag", (), {"value": False}))
  with pytest.raises(SystemExit) as exit_:
    main.train(default_config(), tmp_path / "run")
  assert exit_.value.code == 2
  [line] = capsys.readouterr().err.splitlines()
  assert line == f"error: {files.disk_full_message(tmp_path / 'run')}"
  assert "free space and rerun the same command" in line


def test_main_lets_other_errors_through(monkeypatch, tmp_path):
  def broken(config, run_dir):
    raise ValueError("a bug")
  monkeypatch.setattr(training, "train_and_evaluate", broken)
  monkeypatch.setattr(main, "_DEBUG", type("Flag", (), {"value": False}))
  with pytest.raises(ValueError, match="a bug"):
    main.train(default_config(), tmp_path / "run")
