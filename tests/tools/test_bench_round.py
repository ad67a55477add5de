"""tools/bench_round.py end to end on a tiny case: every engine's row, the bfloat16 row, and
the roofline measured against the matmul peak of the same run."""
import json
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_a_tiny_throughput_table_with_its_roofline(tmp_path):
  out = tmp_path / "bench_round"
  done = subprocess.run(
      [sys.executable, str(REPO_ROOT / "tools" / "bench_round.py"), "--hospitals=2",
       "--models=mlp", "--rounds=1", "--local_steps=1", f"--out={out}"],
      capture_output=True, text=True, cwd=REPO_ROOT)
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads(out.with_suffix(".json").read_text())
  rows, peak = result["rows"], result["matmul_peak_gflops"]
  assert [r["engine"] for r in rows] == ["sequential", "compiled/unroll", "compiled/vmap",
                                         "compiled/vmap, bfloat16"]
  assert peak > 0 and rows[0]["speedup_vs_sequential"] == 1.0
  for r in rows:
    assert r["gflops"] == r["round_gflop"] / r["round_s"]
    assert abs(r["percent_of_matmul_peak"] - 100 * r["gflops"] / peak) < 1e-9
  table = out.with_suffix(".md").read_text()
  assert f"{peak:.0f} GFLOP/s" in table and table.count("| mlp | 2 |") == 4
