"""Every command in the README runs, in the order written, and does what the text says.

The commands are read from the README's ```bash blocks, not copied here, so an edited README
is what gets tested. Each runs in a tiny form with the same flags: `configs/fed9.py` becomes
`configs/tiny.py` under the same run name, run folders go to a temporary `runs/`, the UCSD
folder becomes a four-image labelled folder and the scan a PNG made here (the README's own
data paths are checked to exist when ../shared/data is present). `pip install` and the test
command itself are the two commands not run. A command this file does not know how to make
tiny fails the test, so a new README command must come with its tiny form.
"""
from importlib import metadata
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

from PIL import Image
import pytest

from tests.conftest import REPO_ROOT, SHARED_DATA

README = REPO_ROOT / "README.md"
TINY_ROUNDS = 2  # configs/tiny.py num_rounds
SKIPPED = (re.compile(r"^pip install"), re.compile(r"^python -m pytest$"))


def readme_commands(text: str) -> list[str]:
  """The shell commands of the README's bash blocks, in order (continuations joined,
  comments dropped, `a && b` split)."""
  commands = []
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = re.sub(r"\s+#.*$", "", line).strip()
      commands += [part.strip() for part in line.split("&&") if line]
  return commands


def tiny_form(command: str, tmp: pathlib.Path) -> str:
  """The README command with the tiny config, temporary folders and tiny data."""
  replacements = [
      ("/tmp/", f"{tmp}/"),
      ("configs/fed9.py", f"configs/tiny.py --config.run_name=fed9 --config.results_dir={tmp}/runs"),
      ("../shared/data/ucsd_covid_ct/images/CT_COVID/2020.01.24.919183-p27-132.png",
       str(tmp / "scan.png")),
      ("../shared/data/ucsd_covid_ct", str(tmp / "ucsd_like")),
      ("--round=40", f"--round={TINY_ROUNDS}"),
  ]
  for old, new in replacements:
    command = command.replace(old, new)
  command = re.sub(r"(?<=[\s=(])runs/", f"{tmp}/runs/", command)
  return re.sub(r"(?<![\w/.-])python(?= )", shlex.quote(sys.executable), command)


def make_tiny_data(tmp: pathlib.Path) -> None:
  folder = tmp / "ucsd_like"
  folder.mkdir()
  for i in range(4):
    Image.new("L", (24, 24), 60 * i).save(folder / f"{i}.png")
  (folder / "labels.csv").write_text("path,label,patient_id,official_split\n"
                                     "0.png,0,a,train\n1.png,1,b,val\n2.png,1,c,val\n3.png,0,d,val\n")
  Image.new("L", (24, 24), 128).save(tmp / "scan.png")


def check_main_job_outputs(run_dir: pathlib.Path, output: str) -> None:
  """What the README's Outputs section promises of the main command's run folder."""
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert [r["round"] for r in records] == list(range(1, TINY_ROUNDS + 1))
  for key in ("local_loss", "test_loss", "accuracy", "precision", "sensitivity", "specificity",
              "auc", "epsilon", "sampled", "accepted", "rejected", "vote_scores", "update_norms",
              "clipped_fraction", "round_seconds"):
    assert key in records[-1], key
  assert records[0]["epsilon"] < records[1]["epsilon"]
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["rounds"] == TINY_ROUNDS and len(summary["data"]) == 4 + 1  # hospitals + test
  assert summary["votes"]["updates"] == 4 and summary["ledger"]["enabled"]
  assert "sensitivity" in (run_dir / "summary.md").read_text()
  assert len((run_dir / "metrics.csv").read_text().splitlines()) == 1 + TINY_ROUNDS
  for plot in ("curves.png", "votes.png"):
    assert (run_dir / plot).stat().st_size > 1000, plot
  assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["1", "2"]
  assert "compiling the round" in output and f"round {TINY_ROUNDS}/{TINY_ROUNDS}" in output
  first, second = output.splitlines()[:2]  # the short log format, no absl prefix
  assert first.startswith(f"run fed9 -> {run_dir}/: {TINY_ROUNDS} rounds") and "loading JAX" in first
  assert second.startswith("data: ") and "eps" in output


def git_status() -> str:
  return subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True,
                        text=True, check=True).stdout


def test_readme_commands_are_all_known():
  commands = readme_commands(README.read_text())
  assert commands[0] == "pip install -e ." and commands[1].startswith("python -m ccfl_jax.main")
  assert "python -m pytest" in commands  # the two commands of a fresh machine
  run = [c for c in commands if not any(p.search(c) for p in SKIPPED)]
  assert len(run) >= 10, run
  for command in run:
    tiny = tiny_form(command, pathlib.Path("/t")).replace(shlex.quote(sys.executable), "python")
    assert not re.search(r"(?<![\w/])(runs/|\.\./shared|path/to|/tmp/)", tiny), tiny
    assert "fed9.py" not in tiny and "--round=40" not in tiny, tiny
  for path in re.findall(r"\.\./shared/data/(\S+)", " ".join(run)):
    if SHARED_DATA.exists():
      assert (SHARED_DATA / path).exists(), f"README names ../shared/data/{path}: absent"


def test_readme_commands_run_in_order(tmp_path):
  make_tiny_data(tmp_path)
  before = git_status()
  env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
  env.pop("XLA_FLAGS", None)  # as on a user's machine: one CPU device unless a command says
  commands = [c for c in readme_commands(README.read_text())
              if not any(p.search(c) for p in SKIPPED)]
  outputs = []
  for command in commands:
    done = subprocess.run(["bash", "-c", tiny_form(command, tmp_path)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, f"{command}\n{done.stderr[-3000:]}"
    outputs.append(done.stderr + done.stdout)  # progress lines (stderr) first
  by_command = dict(zip(commands, outputs))
  runs = tmp_path / "runs"
  assert sorted(p.name for p in runs.iterdir()) == ["fed9", "fed9_8devices", "fed9_dirichlet"]
  rounds = {p.name: len((p / "metrics.jsonl").read_text().splitlines()) for p in runs.iterdir()}
  assert rounds == {"fed9": TINY_ROUNDS, "fed9_8devices": TINY_ROUNDS, "fed9_dirichlet": 5}
  assert '"num_devices": 8' in (runs / "fed9_8devices" / "config.json").read_text()
  main_job = (runs / "fed9", outputs[0])
  check_main_job_outputs(*main_job)
  evaluate = next(o for c, o in by_command.items() if "ccfl_jax.evaluate" in c)
  assert "synthetic CT phantom" in evaluate and "research use only" in evaluate
  predict = next(o for c, o in by_command.items() if "ccfl_jax.predict" in c)
  assert "per patient" in predict and (tmp_path / "predictions.csv").exists()
  verified = [o for c, o in by_command.items() if "ledger verify" in c]
  assert all("OK: " in o and "FAILED" not in o for o in verified), verified
  assert "no trusted keys" in verified[0] and "no trusted keys" not in verified[-1]
  assert "no pinned head" not in verified[-1]
  assert "['params']" in next(o for c, o in by_command.items() if "inspect_checkpoint" in c)
  assert git_status() == before  # nothing the README runs dirties the git tree


ENTRY_POINTS = {"ccfl-train": "ccfl_jax.main", "ccfl-evaluate": "ccfl_jax.evaluate",
                "ccfl-predict": "ccfl_jax.predict", "ccfl-ledger": "ccfl_jax.ledger.__main__",
                "ccfl-inspect": "ccfl_jax.inspect_checkpoint"}


def test_console_entry_points_are_installed():
  points = {p.name: p for p in metadata.entry_points(group="console_scripts")}
  for script, module in ENTRY_POINTS.items():
    assert script in points, f"{script}: not installed (pip install -e .)"
    assert points[script].value == f"{module}:cli" and callable(points[script].load())


@pytest.mark.parametrize("script, expected", [
    ("ccfl-train", ["--config: Experiment config file", "python -m ccfl_jax.main list"]),
    ("ccfl-ledger", ["--trusted_keys: verify:", "ccfl_jax.ledger head runs/<run>"])])
def test_an_entry_point_explains_its_command_and_flags(script, expected):
  executable = pathlib.Path(sys.executable).parent / script
  done = subprocess.run([str(executable), "--help"], capture_output=True, text=True, timeout=120)
  for text in expected:
    assert text in done.stdout, done.stdout[-3000:]
