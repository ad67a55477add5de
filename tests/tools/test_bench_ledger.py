"""tools/bench_ledger.py: the committed report is generated from its json, and says what the
json says."""
import json

from tests.conftest import REPO_ROOT
from tests.tools.test_report import _tool

RESULTS = REPO_ROOT / "results"


def test_committed_bench_ledger_md_is_generated_from_its_json():
  tool = _tool("bench_ledger")
  result = json.loads((RESULTS / "bench_ledger.json").read_text())
  assert (RESULTS / "bench_ledger.md").read_text() == tool.markdown(result)
  assert [row["m_t"] for row in result["per_round"]] == [9, 100, 1000]
  assert [row["m_t"] for row in result["verify"]] == [9, 100, 1000]
  assert [row["transactions_per_block"] for row in result["per_round"]] == [14, 105, 1005]
  for row in result["verify"]:
    assert row["transactions"] == row["rounds"] * (row["m_t"] + 5) + row["m_t"] + 1
