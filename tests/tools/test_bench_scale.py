"""tools/bench_scale.py end to end on a tiny case: a row per (H, m_t, engine), md from json."""
import json
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_a_tiny_growth_table(tmp_path):
  out = tmp_path / "bench_scale"
  done = subprocess.run(
      [sys.executable, str(REPO_ROOT / "tools" / "bench_scale.py"), "--hospitals=4,20",
       "--models=mlp", "--rounds=1", "--engines=compiled", "--slices_per_hospital=6",
       f"--out={out}"], capture_output=True, text=True, cwd=REPO_ROOT)
  assert done.returncode == 0, done.stderr[-2000:]
  rows = json.loads(out.with_suffix(".json").read_text())["rows"]
  assert [(r["hospitals"], r["per_round"]) for r in rows] == [(4, 4), (4, 1), (20, 20), (20, 2)]
  k, b = rows[0]["local_steps"], rows[0]["batch_size"]
  for r in rows:
    # What a round moves: its cohort's K x B slices of 8x8 float32 (+ labels, int32), not H x N.
    assert r["round_data_bytes"] == r["per_round"] * k * b * (8 * 8 * 4 + 4)
    assert r["host_data_bytes"] == r["hospitals"] * (6 * (8 * 8 * 4 + 4) + 4)
    assert r["per_hospital_step_ms"] > 0 and r["peak_rss_mib"] > 0
  table = out.with_suffix(".md").read_text()
  assert table.count("| mlp |") == 4 and "| mlp | 20 | 2 | compiled |" in table
