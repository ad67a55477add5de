r"""Time and size of a fresh install of the package without extras (issue 15's target:
< 60 s and < 1 GB), on a clean clone of this checkout.

  python tools/measure_install.py [--repeats=2] [--out=results/install]

Each repeat: a new venv, `pip install --upgrade pip`, then the timed
`pip install --no-cache-dir -e .` (nothing from pip's cache: every wheel is downloaded, as on a
fresh machine). Writes <out>.json and <out>.md: seconds per repeat, the venv's size (MiB, du)
and its package count.
"""
import json
import pathlib
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
_REPEATS = flags.DEFINE_integer("repeats", 2, "Fresh installs to time.", lower_bound=1)
_OUT = flags.DEFINE_string("out", str(REPO / "results" / "install"), "Output path stem.")


def one_install(work: pathlib.Path, index: int) -> dict:
  clone, venv = work / f"clone{index}", work / f"venv{index}"
  subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
  pip = [str(venv / "bin" / "python"), "-m", "pip", "-q"]
  subprocess.run(pip + ["install", "--upgrade", "pip"], check=True, capture_output=True)
  started = time.perf_counter()
  subprocess.run(pip + ["install", "--no-cache-dir", "-e", "."], cwd=clone, check=True,
                 capture_output=True)
  seconds = time.perf_counter() - started
  mib = int(subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True,
                           check=True).stdout.split()[0])
  packages = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
  return dict(seconds=round(seconds, 1), venv_mib=mib, packages=len(packages))


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as work:
    runs = [one_install(pathlib.Path(work), i) for i in range(_REPEATS.value)]
  result = dict(command="pip install --no-cache-dir -e . (fresh venv, pip upgraded first)",
                python=sys.version.split()[0], runs=runs,
                max_seconds=max(r["seconds"] for r in runs),
                venv_mib=max(r["venv_mib"] for r in runs), packages=runs[0]["packages"])
  out = pathlib.Path(_OUT.value)
  out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
  lines = ["# Fresh install without extras", "",
           f"`{result['command']}`, Python {result['python']}, this project's 2-core CPU machine "
           "(downloads from the package index included).", "",
           "| run | seconds | venv MiB | packages |", "|---|---|---|---|"]
  lines += [f"| {i + 1} | {r['seconds']} | {r['venv_mib']} | {r['packages']} |"
            for i, r in enumerate(runs)]
  lines += ["", "Target (issue 15): < 60 s and < 1 GB. Written by `tools/measure_install.py`.", ""]
  out.with_suffix(".md").write_text("\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
