"""Where a run ran: package versions, JAX backend and devices, and the code's git commit.

Recorded in summary.json/summary.md so that a number can be traced to the code and the
software that produced it (bit-identical results hold for one machine, one device count and
these versions; see the README's reproducibility notes).
"""
from importlib import metadata
import pathlib
import platform
import subprocess

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "dp-accounting", "numpy",
            "ecdsa", "coincurve", "pydicom")
SOURCE_ROOT = pathlib.Path(__file__).resolve().parents[1]


def package_versions() -> dict[str, str]:
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = "not installed"
  return versions


def git_commit(root: pathlib.Path = SOURCE_ROOT) -> str:
  """The checkout's commit ('+ uncommitted changes' when tracked files outside results/
  differ), or 'not a git checkout' (an installed wheel, no git)."""
  def git(*args):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()
  try:
    if pathlib.Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
      return "not a git checkout"
    commit = git("rev-parse", "HEAD")
    # results/ is where runs write their committed outputs: regenerating them is not a
    # change to the code that produced them.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")
  except (OSError, subprocess.SubprocessError):
    return "not a git checkout"
  return commit + (" + uncommitted changes" if dirty else "")


def describe(devices, processes: int = 1) -> dict:
  """The run's environment, JSON-ready: `processes` JAX processes (hosts) hold `devices`."""
  devices = list(devices)
  return dict(python=platform.python_version(), platform=platform.platform(),
              backend=devices[0].platform if devices else "none", device_count=len(devices),
              devices=[str(d) for d in devices], processes=processes,
              packages=package_versions(), git_commit=git_commit())
