"""Test set-up: 8 simulated CPU devices (set before JAX is imported) and the shared data."""
import os
import pathlib

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
