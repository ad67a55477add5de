"""Test set-up: 8 simulated CPU devices and one XLA compilation cache for the session (both
set before JAX is imported), and the shared data."""
import atexit
import os
import pathlib
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  # The suite compiles the same tiny rounds again and again, in pytest-xdist's workers and in
  # the command-line runs it starts (which inherit this environment): JAX's persistent cache
  # shares them (the key covers the computation, devices and XLA flags, so results are
  # unchanged). One fresh folder per session, made by the first process to load this file.
  _cache = tempfile.mkdtemp(prefix="ccfl_jax_tests_xla_cache_")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("CCFL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def require_shared(relative: str) -> pathlib.Path:
  """Path of ../shared/data/<relative>; skips where absent, but fails under CI=true."""
  path = SHARED_DATA / relative
  if not path.exists():
    message = (f"real data {path} is absent (it lies in ../shared/data beside the repo; "
               "set CCFL_SHARED_DATA to point elsewhere)")
    if os.environ.get("CI", "").lower() == "true":
      pytest.fail(message)
    pytest.skip(message)
  return path


@pytest.fixture
def ucsd_dir():
  return require_shared("ucsd_covid_ct")


@pytest.fixture
def covid_ct_md_dir():
  return require_shared("covid_ct_md")


@pytest.fixture(scope="session", autouse=True)
def temporary_keystore(tmp_path_factory):
  """Every test keeps its runs' private ledger keys in a temporary keystore (CCFL_KEYSTORE),
  never the user's (session scope: module fixtures open runs too)."""
  from ccfl_jax.ledger import keystore
  before = os.environ.get(keystore.ENV_VAR)
  root = tmp_path_factory.mktemp("keystore")
  os.environ[keystore.ENV_VAR] = str(root)
  yield root
  if before is None:
    os.environ.pop(keystore.ENV_VAR, None)
  else:
    os.environ[keystore.ENV_VAR] = before
