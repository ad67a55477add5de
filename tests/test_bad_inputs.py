"""Bad input, table-driven (issue 13): every case is refused with a non-zero exit (2, or 1
where `ledger verify` finds a ledger that fails), one line naming the input, no traceback,
and no file of a previous good run changed.

One good tiny run (configs/tiny.py) is made per module (so per xdist worker) and every
file and folder under it hashed; each case then runs its command against it, against a copy
of it, or against a bad input written to the case's own tmp_path, and the hashes are
compared again (a damaged copy's too: a refused command writes nothing there either). Only read-only commands (evaluate, predict, ledger) and reruns that must be
refused before anything is written point at the good run itself; everything that modifies a
run folder works on a copy.

Commands run as real subprocesses (`python -m ...`, as a user types them) with the
environment a user has: no JAX_PLATFORMS, no simulated devices. The `ledger` cases run its
`main(argv)` in-process (it parses flags of its own), with two subprocess cases for the
console path (absl flag errors, JAX's backend search).
"""
import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Callable

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from ccfl_jax import configuration, training
from ccfl_jax.ledger import __main__ as ledger_cli
from ccfl_jax.ledger import audit, identity
from tests.conftest import REPO_ROOT

TINY = REPO_ROOT / "configs" / "tiny.py"
# Lines allowed around the error line, because they are not ours and say nothing wrong:
# JAX's one warning on a machine with an NVIDIA GPU but a CPU-only jaxlib (absent here).
BENIGN_NOISE = (re.compile(r"^W\d{4} .*An NVIDIA GPU may be present on this machine, but a "
                           r"CUDA-enabled jaxlib is not installed"),)
SUBPROCESS_TIMEOUT_S = 300


def snapshot(folder: pathlib.Path) -> dict[str, str]:
  """{relative path: sha256 of a file, or 'folder'} of everything under `folder`."""
  entries = {}
  for path in sorted(folder.rglob("*")):
    relative = path.relative_to(folder).as_posix()
    if path.is_symlink():
      entries[relative] = f"symlink -> {os.readlink(path)}"
    elif path.is_dir():
      entries[relative] = "folder"
    else:
      entries[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
  return entries


@dataclasses.dataclass(frozen=True)
class GoodRun:
  path: pathlib.Path
  files: dict  # snapshot() right after training
  head: str    # its last block's hash


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> GoodRun:
  """configs/tiny.py trained once (results_dir a module temp folder), then hashed."""
  root = tmp_path_factory.mktemp("good")
  config = configuration.load_config_file(TINY)
  config.results_dir = str(root)
  run_dir = root / config.run_name
  training.train_and_evaluate(config, run_dir)
  return GoodRun(run_dir, snapshot(run_dir), audit.head(run_dir))


# --- bad inputs, written into the case's folder ------------------------------------------

def png(path: pathlib.Path, value: int = 128, size: int = 40) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new("L", (size, size), value).save(path)
  return path


def float_tiff(path: pathlib.Path) -> pathlib.Path:
  """A float (mode F) TIFF with one NaN and one +Inf pixel."""
  pixels = np.full((40, 40), 0.5, np.float32)
  pixels[3, 3], pixels[20, 20] = np.nan, np.inf
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels, mode="F").save(path)
  return path


def dicom_slice(path: pathlib.Path) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  shutil.copy(get_testdata_file("CT_small.dcm"), path)
  return path


def truncated_dicom(path: pathlib.Path) -> pathlib.Path:
  data = pathlib.Path(get_testdata_file("CT_small.dcm")).read_bytes()
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data[:len(data) // 2])
  return path


def nan_dicom(path: pathlib.Path) -> pathlib.Path:
  """CT_small.dcm as float pixel data with a NaN in the middle of the field of view."""
  dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
  hu = np.full((dataset.Rows, dataset.Columns), -500.0, np.float32)
  hu[64, 64] = np.nan
  del dataset.PixelData, dataset.PixelRepresentation
  dataset.FloatPixelData = hu.tobytes()
  dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 32, 32, 31
  dataset.RescaleSlope, dataset.RescaleIntercept = 1, 0
  path.parent.mkdir(parents=True, exist_ok=True)
  dataset.save_as(path)
  return path


def edit(path: pathlib.Path, old: str, new: str) -> None:
  text = path.read_text()
  assert old in text, f"{old!r} not in {path}"
  path.write_text(text.replace(old, new, 1))


def flip_one_byte(path: pathlib.Path, offset: int = 10) -> None:
  data = bytearray(path.read_bytes())
  data[offset % len(data)] ^= 0x01
  path.write_bytes(bytes(data))


@dataclasses.dataclass
class Bad:
  """What a case builds its command from: the good run (never to be written), its own
  scratch folder, and environment changes for the command."""
  good: GoodRun
  tmp: pathlib.Path
  env: dict = dataclasses.field(default_factory=dict)
  copies: list = dataclasses.field(default_factory=list)

  def write(self, name: str, content: str | bytes) -> pathlib.Path:
    path = self.tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path

  def copy(self) -> pathlib.Path:
    """A copy of the good run, `<tmp>/copy/<run name>`, for cases that damage or resume it."""
    copy = self.tmp / "copy" / self.good.path.name
    shutil.copytree(self.good.path, copy, symlinks=True)
    self.copies.append(copy)
    return copy

  def folder(self, name: str, *files: str) -> pathlib.Path:
    """A folder of the case's with empty `files` in it."""
    folder = self.tmp / name
    folder.mkdir(parents=True)
    for file in files:
      (folder / file).write_text("")
    return folder

  def image_folder(self, labels: str, bad: dict[str, Callable] = None) -> pathlib.Path:
    """A labelled image folder: 0.png .. 3.png, labels.csv given in full, and `bad`
    {name: writer(path)} files beside them."""
    folder = self.tmp / "images"
    for i in range(4):
      png(folder / f"{i}.png", 40 + 50 * i)
    for name, writer in (bad or {}).items():
      writer(folder / name)
    (folder / "labels.csv").write_text(labels)
    return folder

  def dicom_tree(self, bad: dict[str, Callable]) -> pathlib.Path:
    """covid/p1 and non-covid/p2 series of CT_small.dcm, plus `bad` {relative path: writer}."""
    root = self.tmp / "dicom"
    dicom_slice(root / "covid" / "p1" / "1.dcm")
    dicom_slice(root / "non-covid" / "p2" / "1.dcm")
    for name, writer in bad.items():
      writer(root / name)
    return root

  def main(self, *args: str, config=TINY) -> list[str]:
    """`python -m ccfl_jax.main --config=... <args>`, results under the case's folder."""
    return ["ccfl_jax.main", f"--config={config}", f"--config.results_dir={self.tmp / 'runs'}",
            *args]

  def rerun(self, run_dir: pathlib.Path, *args: str) -> list[str]:
    """The good run's own command again, into `run_dir` (the good run or a copy)."""
    return ["ccfl_jax.main", f"--config={TINY}", f"--config.results_dir={run_dir.parent}",
            f"--config.run_name={run_dir.name}", *args]


GOOD_LABELS = "path,label,patient_id\n0.png,0,a\n1.png,1,b\n2.png,0,c\n3.png,1,d\n"
EXTRA_ROW = GOOD_LABELS + "{path},1,e\n"
BAD_LABEL = GOOD_LABELS + "4.png,maybe,e\n"
NO_PATIENT_COLUMN = "path,label\n0.png,0\n1.png,1\n"


@dataclasses.dataclass(frozen=True)
class Case:
  make: Callable[[Bad], list[str]]  # writes the bad input; returns argv after `python -m`
  expected: str                     # in the error line
  exit: int = 2
  in_process: bool = False          # ledger only: its main(argv) in this process
  then: Callable[[Bad], None] | None = None  # a further check after the command


def case(case_id: str, make, expected: str, *, exit: int = 2, in_process: bool = False,
         then=None, xfail: str = ""):
  marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
  return pytest.param(Case(make, expected, exit, in_process, then), id=case_id, marks=marks)


def _not_created(path_of: Callable[[Bad], pathlib.Path]):
  def check(bad: Bad) -> None:
    assert not path_of(bad).exists(), f"{path_of(bad)} was created by a refused command"
  return check


def _random_keys_file(bad: Bad) -> pathlib.Path:
  keys = [identity.generate_identity().public_key.hex() for _ in range(4)]
  return bad.write("other_keys.txt", "\n".join(keys) + "\n")


def _copy_with(change: Callable[[pathlib.Path], None]) -> Callable[[Bad], pathlib.Path]:
  def make(bad: Bad) -> pathlib.Path:
    copy = bad.copy()
    change(copy)
    return copy
  return make


def _largest_checkpoint_file(run: pathlib.Path) -> pathlib.Path:
  return max((p for p in (run / "checkpoints" / "2").rglob("*") if p.is_file()),
             key=lambda p: p.stat().st_size)


TAMPERED_CHECKPOINT = _copy_with(lambda run: flip_one_byte(_largest_checkpoint_file(run)))
TAMPERED_BLOCK = _copy_with(lambda run: flip_one_byte(max((run / "ledger").glob("*.json")), 40))
TAMPERED_METRICS = _copy_with(lambda run: edit(run / "metrics.jsonl", '"round": 2', '"round": 2 '))
TAMPERED_SUMMARY = _copy_with(lambda run: flip_one_byte(run / "summary.json", 20))
TAMPERED_CONFIG = _copy_with(lambda run: edit(run / "config.json", '"eval_batch_size": 256',
                                             '"eval_batch_size": 8'))
NOT_JSON_CONFIG = _copy_with(lambda run: (run / "config.json").write_text("{"))
WITHOUT_LATEST_CHECKPOINT = _copy_with(lambda run: shutil.rmtree(run / "checkpoints" / "2"))
WITHOUT_LEDGER = _copy_with(lambda run: shutil.rmtree(run / "ledger"))
WITHOUT_LAST_BLOCK = _copy_with(lambda run: max((run / "ledger").glob("*.json")).unlink())


def _without_keystore(bad: Bad) -> pathlib.Path:
  bad.env["CCFL_KEYSTORE"] = str(bad.tmp / "empty_keystore")
  return bad.copy()


def _evaluate(*args: str) -> Callable[[Bad], list[str]]:
  return lambda bad: ["ccfl_jax.evaluate", f"--run={bad.good.path}", *args]


def _predict(*args: str) -> Callable[[Bad], list[str]]:
  return lambda bad: ["ccfl_jax.predict", f"--run={bad.good.path}", *args]


CASES = [
    # --- the config file and its overrides (main) ---
    case("config-file-missing", lambda b: b.main(config=b.tmp / "absent.py"),
         "cannot load the config file: [Errno 2] No such file or directory"),
    case("config-file-syntax-error",
         lambda b: b.main(config=b.write("broken.py", "def get_config(:\n")),
         "cannot load the config file: SyntaxError: invalid syntax"),
    case("config-file-get-config-raises", lambda b: b.main(config=b.write(
        "raises.py", "def get_config():\n  raise RuntimeError('no such experiment')\n")),
         "cannot load the config file: RuntimeError: no such experiment"),
    case("config-file-without-get-config", lambda b: b.main(config=b.write("empty.py", "x = 1\n")),
         "it defines no get_config()"),
    case("config-file-is-a-folder", lambda b: b.main(config=b.tmp),
         "cannot load the config file: [Errno 21] Is a directory"),
    case("config-file-field-of-wrong-type", lambda b: b.main(config=b.write("wrong_type.py", (
        "from ccfl_jax.configuration import default_config\n"
        "def get_config():\n  c = default_config()\n  c.num_rounds = 'two'\n  return c\n"))),
         "error in the config file: TypeError: Could not override field 'num_rounds'"),
    case("no-config-flag", lambda b: ["ccfl_jax.main"], "--config=configs/<experiment>.py is required"),
    case("unexpected-positional-argument", lambda b: b.main("train"), "unexpected arguments: train"),
    case("unknown-flag", lambda b: b.main("--rounds=3"), "Unknown command line flag 'rounds'"),
    case("override-not-a-number", lambda b: b.main("--config.num_rounds=two"),
         "--config.num_rounds: flag --config.num_rounds=two"),
    case("override-misspelt-field", lambda b: b.main("--config.privacy.noise_multipler=1"),
         'Did you mean "noise_multiplier"'),
    case("negative-num-rounds", lambda b: b.main("--config.num_rounds=-1"),
         "config.num_rounds = -1: expected an integer >= 1"),
    case("more-hospitals-per-round-than-hospitals", lambda b: b.main("--config.hospitals_per_round=5"),
         "config.hospitals_per_round"),
    case("unknown-model", lambda b: b.main("--config.model.name=resnet9000"), "config.model.name"),
    case("unknown-schedule", lambda b: b.main("--config.local_schedule.name=linear"),
         "config.local_schedule.name = 'linear': expected one of constant, cosine, one_cycle"),
    case("warmup-fraction-of-one", lambda b: b.main("--config.local_schedule.warmup_fraction=1"),
         "config.local_schedule.warmup_fraction = 1"),
    case("unknown-dataset", lambda b: b.main("--config.dataset.name=mnist"), "config.dataset.name"),
    case("negative-noise-multiplier", lambda b: b.main("--config.privacy.noise_multiplier=-0.1"),
         "noise_multiplier"),
    case("phantom-without-patients", lambda b: b.main("--config.dataset.num_patients=0"),
         "config.dataset.num_patients = 0: expected an integer >= 1"),
    case("results-dir-is-a-file", lambda b: b.main(f"--config.results_dir={b.write('a_file', 'x')}"),
         "cannot write the run folder here (Not a directory)"),
    # --- data files (main) ---
    case("dataset-path-missing", lambda b: b.main(
        "--config.dataset.name=image_folder", f"--config.dataset.path={b.tmp / 'absent'}"),
         "absent: dataset path does not exist"),
    case("dataset-path-is-a-file", lambda b: b.main(
        "--config.dataset.name=image_folder", f"--config.dataset.path={b.write('f.txt', 'x')}"),
         "f.txt: dataset path is not a folder"),
    case("image-folder-empty", lambda b: b.main(
        "--config.dataset.name=image_folder", f"--config.dataset.path={b.folder('empty')}"),
         "no labels.csv in this folder"),
    case("image-folder-corrupt-png", lambda b: b.main(
        "--config.dataset.name=image_folder", "--config.dataset.path=" + str(b.image_folder(
            EXTRA_ROW.format(path="bad.png"), {"bad.png": lambda p: p.write_bytes(b"\x89PNG\r\n")}))),
         "bad.png: unreadable image"),
    case("image-folder-truncated-png", lambda b: b.main(
        "--config.dataset.name=image_folder", "--config.dataset.path=" + str(b.image_folder(
            EXTRA_ROW.format(path="cut.png"), {"cut.png": lambda p: p.write_bytes(
                png(p, size=200).read_bytes()[:120])}))),
         "cut.png: unreadable image"),
    case("labels-csv-bad-label", lambda b: b.main(
        "--config.dataset.name=image_folder",
        f"--config.dataset.path={b.image_folder(BAD_LABEL)}"),
         "labels.csv line 6: label 'maybe' is not 0 or 1"),
    case("labels-csv-missing-column", lambda b: b.main(
        "--config.dataset.name=image_folder",
        f"--config.dataset.path={b.image_folder(NO_PATIENT_COLUMN)}"),
         "missing column(s) patient_id"),
    case("labels-csv-path-escaping-the-folder", lambda b: b.main(
        "--config.dataset.name=image_folder", "--config.dataset.path=" + str(b.image_folder(
            EXTRA_ROW.format(path="../outside.png"), {"../outside.png": png}))),
         "path '../outside.png' leaves the dataset folder"),
    case("labels-csv-names-a-missing-file", lambda b: b.main(
        "--config.dataset.name=image_folder",
        f"--config.dataset.path={b.image_folder(EXTRA_ROW.format(path='gone.png'))}"),
         "gone.png: named on labels.csv line 6 but missing"),
    case("float-image-with-nan-pixels", lambda b: b.main(
        "--config.dataset.name=image_folder", "--config.dataset.path=" + str(b.image_folder(
            EXTRA_ROW.format(path="nan.tiff"), {"nan.tiff": float_tiff}))),
         "nan.tiff: 2 of 1,600 pixel values are not finite (NaN, +Inf)"),
    case("dicom-truncated", lambda b: b.main(
        "--config.dataset.name=dicom",
        f"--config.dataset.path={b.dicom_tree({'covid/p1/2.dcm': truncated_dicom})}"),
         "2.dcm: "),
    case("dicom-nan-float-pixel-data", lambda b: b.main(
        "--config.dataset.name=dicom",
        f"--config.dataset.path={b.dicom_tree({'covid/p3/1.dcm': nan_dicom})}"),
         "p3/1.dcm: 1 of 16,384 Hounsfield units of frame 0"),
    case("dicom-folder-without-slices", lambda b: b.main(
        "--config.dataset.name=dicom", f"--config.dataset.path={b.folder('d/covid', 'notes.txt').parent}"),
         "no DICOM slices found"),
    # --- run folders (main): the good run itself only where the rerun must be refused ---
    case("rerun-good-run-with-another-seed", lambda b: b.rerun(b.good.path, "--config.seed=7"),
         "this run was made with another config (seed: 0 -> 7)"),
    case("rerun-good-run-with-another-model", lambda b: b.rerun(
        b.good.path, "--config.model.hidden=(32,)"), "model.hidden"),
    case("resume-without-its-latest-checkpoint",
         lambda b: b.rerun(WITHOUT_LATEST_CHECKPOINT(b), "--config.num_rounds=3"),
         "checkpoints/2: missing, but the ledger's block of round 1 records it"),
    case("resume-with-a-tampered-checkpoint",
         lambda b: b.rerun(TAMPERED_CHECKPOINT(b), "--config.num_rounds=3"),
         "checkpoint checkpoints/2 does not match the ledger"),
    case("resume-with-a-tampered-ledger-block",
         lambda b: b.rerun(TAMPERED_BLOCK(b), "--config.num_rounds=3"),
         "record hash mismatch (altered)"),
    case("resume-without-its-ledger", lambda b: b.rerun(WITHOUT_LEDGER(b), "--config.num_rounds=3"),
         "has checkpoints but no ledger"),
    case("resume-with-config-json-not-json",
         lambda b: b.rerun(NOT_JSON_CONFIG(b), "--config.num_rounds=3"), "config.json: unreadable"),
    case("resume-without-its-keystore",
         lambda b: b.rerun(_without_keystore(b), "--config.num_rounds=3"),
         "the private keys of run"),
    # --- evaluate ---
    case("evaluate-round-past-the-last", _evaluate("--data=phantom:", "--round=9"),
         "checkpoints/9: no such checkpoint (--round); present: 1, 2"),
    case("evaluate-threshold-out-of-range", _evaluate("--data=phantom:", "--threshold=2"),
         "--threshold=2"),
    case("evaluate-unknown-data-kind", _evaluate("--data=pictures:/x"), "expected <kind>:<path>"),
    case("evaluate-missing-run-folder", lambda b: [
        "ccfl_jax.evaluate", f"--run={b.tmp / 'no_run'}", "--data=phantom:"],
         "no checkpoint to load", then=_not_created(lambda b: b.tmp / "no_run")),
    case("evaluate-on-a-corrupt-png", lambda b: _evaluate("--data=image_folder:" + str(b.image_folder(
        EXTRA_ROW.format(path="bad.png"), {"bad.png": lambda p: p.write_bytes(b"no image")})))(b),
         "bad.png: unreadable image"),
    case("evaluate-split-not-in-the-data", lambda b: _evaluate(
        f"--data=image_folder:{b.image_folder(GOOD_LABELS)}", "--split=val")(b),
         "--split=val: this dataset has no split column"),
    case("evaluate-run-with-edited-config-json", lambda b: [
        "ccfl_jax.evaluate", f"--run={TAMPERED_CONFIG(b)}", "--data=phantom:"],
         "config.json changed"),
    case("evaluate-round-not-a-number", _evaluate("--data=phantom:", "--round=last"), "--round"),
    # --- predict ---
    case("predict-missing-file", lambda b: _predict(str(b.tmp / "absent.png"))(b),
         "absent.png: no such file or folder"),
    case("predict-non-image", lambda b: _predict(str(b.write("scan.png", "not an image")))(b),
         "scan.png: unreadable image"),
    case("predict-not-a-dicom-file", lambda b: _predict(str(b.write("scan.txt", "notes")))(b),
         "scan.txt: not a DICOM file"),
    case("predict-float-image-with-nan", lambda b: _predict(str(float_tiff(b.tmp / "nan.tif")))(b),
         "nan.tif: 2 of 1,600 pixel values are not finite"),
    case("predict-dicom-with-nan", lambda b: _predict(str(nan_dicom(b.tmp / "nan.dcm")))(b),
         "nan.dcm: 1 of 16,384 Hounsfield units"),
    case("predict-top-fraction-zero", lambda b: _predict(
        "--top_fraction=0", str(png(b.tmp / "s.png")))(b), "--top_fraction=0"),
    case("predict-threshold-not-a-number", lambda b: _predict(
        "--threshold=high", str(png(b.tmp / "s.png")))(b), "flag --threshold=high"),
    case("predict-without-a-path", _predict(), "give at least one PATH"),
    # --- ledger verify / show (in-process main, then two as subprocesses) ---
    case("verify-missing-run-folder", lambda b: ["ccfl_jax.ledger", "verify", str(b.tmp / "no_run")],
         "no_run: no such run folder", in_process=True),
    case("show-missing-run-folder", lambda b: ["ccfl_jax.ledger", "show", str(b.tmp / "no_run")],
         "no_run: no such run folder", in_process=True),
    case("verify-unknown-command", lambda b: ["ccfl_jax.ledger", "check", str(b.good.path)],
         "expected `python -m ccfl_jax.ledger {verify|show|head|keys} <run folder>`", in_process=True),
    case("verify-bad-head", lambda b: ["ccfl_jax.ledger", "verify", str(b.good.path), "--head=00ff"],
         "the pinned head 00ff... is not in the ledger", exit=1, in_process=True),
    case("verify-trusted-keys-missing", lambda b: [
        "ccfl_jax.ledger", "verify", str(b.good.path), f"--trusted_keys={b.tmp / 'keys.txt'}"],
         "keys.txt: cannot read it (No such file or directory)", in_process=True),
    case("verify-trusted-keys-not-keys", lambda b: [
        "ccfl_jax.ledger", "verify", str(b.good.path),
        f"--trusted_keys={b.write('keys.txt', 'hospital zero')}"],
         "keys.txt: entry 1", in_process=True),
    case("verify-trusted-keys-binary", lambda b: [
        "ccfl_jax.ledger", "verify", str(b.good.path),
        f"--trusted_keys={b.write('keys.bin', bytes(range(128, 256)))}"],
         "keys.bin: not a text file", in_process=True),
    case("verify-trusted-keys-of-others", lambda b: [
        "ccfl_jax.ledger", "verify", str(b.good.path), f"--trusted_keys={_random_keys_file(b)}"],
         "is not among the 4 trusted keys", exit=1, in_process=True),
    case("verify-negative-min-difficulty", lambda b: [
        "ccfl_jax.ledger", "verify", str(b.good.path), "--min_difficulty=-1"],
         "-1 is not a non-negative integer", in_process=True),
    case("verify-tampered-block", lambda b: ["ccfl_jax.ledger", "verify", str(TAMPERED_BLOCK(b))],
         "record hash mismatch (altered)", exit=1, in_process=True),
    case("verify-tampered-metrics", lambda b: ["ccfl_jax.ledger", "verify", str(TAMPERED_METRICS(b))],
         "metrics.jsonl", exit=1, in_process=True),
    case("verify-tampered-summary", lambda b: ["ccfl_jax.ledger", "verify", str(TAMPERED_SUMMARY(b))],
         "summary.json", exit=1, in_process=True),
    case("verify-tampered-checkpoint", lambda b: [
        "ccfl_jax.ledger", "verify", str(TAMPERED_CHECKPOINT(b))], "checkpoints/2", exit=1,
         in_process=True),
    case("verify-last-block-removed-against-pinned-head", lambda b: [
        "ccfl_jax.ledger", "verify", str(WITHOUT_LAST_BLOCK(b)), f"--head={b.good.head}"],
         "is not in the ledger: blocks were removed or rewritten", exit=1, in_process=True),
    case("verify-bad-head-console", lambda b: [
        "ccfl_jax.ledger", "verify", str(b.good.path), "--head=00ff"],
         "the pinned head 00ff... is not in the ledger", exit=1),
    case("verify-negative-min-difficulty-console", lambda b: [
        "ccfl_jax.ledger", "verify", str(b.good.path), "--min_difficulty=-1"],
         "flag --min_difficulty=-1: -1 is not a non-negative integer"),
    # --- python -m ccfl_jax.data.cache ---
    case("cache-unexpected-argument", lambda b: ["ccfl_jax.data.cache", "everything"],
         "unexpected arguments: everything"),
    case("cache-dir-is-a-file", lambda b: [
        "ccfl_jax.data.cache", f"--cache_dir={b.write('cache_file', 'x')}"], "is not a folder"),
    case("cache-clear-dir-is-a-file", lambda b: [
        "ccfl_jax.data.cache", "--clear", f"--cache_dir={b.write('cache_file', 'x')}"],
         "is not a folder", then=lambda b: (b.tmp / "cache_file").is_file() or pytest.fail("cleared")),
    case("cache-unknown-flag", lambda b: ["ccfl_jax.data.cache", "--purge"],
         "Unknown command line flag 'purge'"),
]


def _run(argv: list[str], bad: Bad, in_process: bool, capsys):
  """(exit status, stdout, stderr) of `python -m <argv>`."""
  if in_process:
    assert argv[0] == "ccfl_jax.ledger" and not bad.env
    status = ledger_cli.main(argv[1:])
    captured = capsys.readouterr()
    return status, captured.out, captured.err
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), XDG_CACHE_HOME=str(bad.tmp / "xdg_cache"),
             **bad.env)
  for name in ("JAX_PLATFORMS", "XLA_FLAGS"):  # as on a user's machine
    env.pop(name, None)
  done = subprocess.run([sys.executable, "-m", *argv], cwd=bad.tmp, env=env, capture_output=True,
                        text=True, timeout=SUBPROCESS_TIMEOUT_S)
  return done.returncode, done.stdout, done.stderr


def _lines(text: str) -> list[str]:
  return [line for line in text.splitlines()
          if line.strip() and not any(p.search(line) for p in BENIGN_NOISE)]


@pytest.mark.parametrize("bad_input", CASES)
def test_bad_input_is_refused_in_one_line(bad_input: Case, good_run, tmp_path, capsys):
  bad = Bad(good_run, tmp_path)
  argv = bad_input.make(bad)
  copies = {copy: snapshot(copy) for copy in bad.copies}  # as damaged, before the command
  status, out, err = _run(argv, bad, bad_input.in_process, capsys)
  shown = f"$ python -m {' '.join(map(str, argv))}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
  assert "Traceback" not in out + err, shown
  assert status == bad_input.exit, shown
  if bad_input.exit == 2:
    lines = _lines(err)
    assert lines and lines[-1].startswith("error: "), shown
    assert bad_input.expected in lines[-1], shown
    if argv[0] == "ccfl_jax.main":  # main's progress lines may come first, never an error
      assert not any(line.startswith("error") for line in lines[:-1]), shown
    else:
      assert lines == lines[-1:], shown
  else:  # `ledger verify`: the report on stdout, its one failure line
    failed = [line for line in out.splitlines() if line.startswith("FAILED: ")]
    assert len(failed) == 1 and bad_input.expected in failed[0], shown
    assert _lines(err) == [], shown
  if bad_input.then:
    bad_input.then(bad)
  assert snapshot(good_run.path) == good_run.files, "the good run changed: " + shown
  for copy, files in copies.items():
    assert snapshot(copy) == files, "the damaged copy was written to: " + shown


def test_the_table_has_at_least_40_distinct_cases():
  ids = [c.id for c in CASES]
  assert len(ids) >= 40 and len(set(ids)) == len(ids)
