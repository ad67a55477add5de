"""What a run records of where it ran."""
import subprocess

import jax

from ccfl_jax import environment, reporting
from tests.test_reporting import RECORDS, make_summary


def test_describe_names_versions_backend_devices_and_commit():
  described = environment.describe(jax.devices())
  assert described["backend"] == "cpu" and described["device_count"] == len(jax.devices())
  assert described["packages"]["jax"] == jax.__version__
  assert set(described["packages"]) == set(environment.PACKAGES)
  head = subprocess.run(["git", "-C", str(environment.SOURCE_ROOT), "rev-parse", "HEAD"],
                        capture_output=True, text=True).stdout.strip()
  assert described["git_commit"].split(" ")[0] == (head or "not")


def test_outside_a_checkout_the_commit_says_so(tmp_path):
  assert environment.git_commit(tmp_path) == "not a git checkout"


def test_summary_md_shows_the_environment():
  text = reporting.summary_markdown(make_summary(RECORDS))
  assert "## Environment" in text and "git commit abc123" in text and "| jax | 0.10.2 |" in text
