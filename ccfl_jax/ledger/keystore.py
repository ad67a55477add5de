"""Where a run's private hospital keys live: outside the run folder, readable by the owner only.

Layout: `<root>/<run id>/hospital_<h>.pem`, one PEM (secp256k1, identity.py) per hospital
index, files 0600 in a folder 0700, plus `public_keys.txt` (one compressed public key in hex
per line, hospital order): the file to hand to auditors out of band for
`python -m ccfl_jax.ledger verify --trusted_keys`. The run id is random and recorded in the
run's genesis block, so a resume finds its keys and a run folder never names a secret.

The root is, first found: the `keystore` argument (config `ledger.keystore`), the
environment variable CCFL_KEYSTORE, `$XDG_DATA_HOME/ccfl_jax/keystore`, then
`~/.local/share/ccfl_jax/keystore`. Tests point CCFL_KEYSTORE (or ledger.keystore) at a
temporary folder.

A real deployment supplies keys as PEM files instead (`keys = "pem"`): `keystore` is then a
folder already holding `hospital_<h>.pem` for every hospital, and nothing is generated.
"""
import os
import pathlib

from ccfl_jax.ledger import identity as identity_lib

ENV_VAR = "CCFL_KEYSTORE"
PUBLIC_KEYS_FILE = "public_keys.txt"


class KeystoreError(ValueError):
  """A run's keys are missing, unreadable or not the ones its ledger registers; names the path."""


def default_root() -> pathlib.Path:
  """CCFL_KEYSTORE, else the user's data dir (XDG) / ccfl_jax / keystore."""
  if os.environ.get(ENV_VAR):
    return pathlib.Path(os.environ[ENV_VAR]).expanduser()
  data_home = os.environ.get("XDG_DATA_HOME") or pathlib.Path.home() / ".local" / "share"
  return pathlib.Path(data_home).expanduser() / "ccfl_jax" / "keystore"


def root_of(keystore) -> pathlib.Path:
  return default_root() if keystore in (None, "") else pathlib.Path(keystore).expanduser()


def key_file(folder: pathlib.Path, hospital: int) -> pathlib.Path:
  return folder / f"hospital_{hospital}.pem"


def run_folder(keystore, run_id: str) -> pathlib.Path:
  return root_of(keystore) / run_id


def _write_private(path: pathlib.Path, data: bytes) -> None:
  """Create `path` 0600 (never replacing a file), write, fsync."""
  fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
  with os.fdopen(fd, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def save_run_keys(keystore, run_id: str, identities, run_dir) -> pathlib.Path:
  """Write a new run's private keys (0600) and public keys; returns the run's key folder."""
  folder = run_folder(keystore, run_id)
  try:
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.mkdir(mode=0o700)
    for h, identity in enumerate(identities):
      _write_private(key_file(folder, h), identity_lib.identity_to_pem(identity))
    (folder / PUBLIC_KEYS_FILE).write_text(
        "".join(i.public_key.hex() + "\n" for i in identities))
    (folder / "run_dir.txt").write_text(f"{pathlib.Path(run_dir).resolve()}\n")
  except OSError as error:
    raise KeystoreError(f"cannot write the run's private keys to {folder}: {error} "
                        f"(set ledger.keystore or {ENV_VAR} to a writable folder)") from None
  return folder


def load_keys(folder, num_hospitals: int) -> tuple[identity_lib.Identity, ...]:
  """hospital_0.pem .. hospital_<H-1>.pem from `folder`; KeystoreError naming what is missing."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise KeystoreError(f"no keystore at {folder}")
  identities = []
  for h in range(num_hospitals):
    path = key_file(folder, h)
    try:
      identities.append(identity_lib.identity_from_pem(path.read_bytes()))
    except FileNotFoundError:
      raise KeystoreError(f"keystore {folder} has no {path.name}") from None
    except Exception as error:  # OSError, or whatever the PEM/DER parser raises
      raise KeystoreError(f"{path}: not a readable secp256k1 PEM key ({error})") from None
  return tuple(identities)
