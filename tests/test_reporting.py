import csv
import io
import json
import logging
import math
import struct
import sys

import pytest
from PIL import Image

from ccfl_jax import reporting


def _strict_loads(text):
  def refuse(token):
    raise ValueError(f"non-standard JSON token {token}")
  return json.loads(text, parse_constant=refuse)


def make_record(round_, sampled=(0, 1, 2), rejected=(), **changes):
  record = dict(
      round=round_, sampled=list(sampled), accepted=[h for h in sampled if h not in rejected],
      rejected=list(rejected), malicious_accepted=0, malicious_rejected=0,
      honest_rejected=len(rejected), vote_scores=[0.7] * len(sampled), local_loss=0.7,
      clipped_fraction=1.0, test_loss=0.69, precision=math.nan, sensitivity=0.0,
      specificity=1.0, accuracy=0.5, f1=0.0, auc=0.6, confusion_matrix=[[4, 0], [4, 0]],
      epsilon=410.0 * round_, delta=1e-5, round_seconds=80.0 if round_ == 1 else 4.0)
  record.update(changes)
  return record


ENVIRONMENT = dict(python="3.11.9", platform="Linux", backend="cpu", device_count=1,
                   devices=["cpu:0"], packages={"jax": "0.10.2"}, git_commit="abc123")


def make_summary(records, noise_multiplier=0.1, attack=None):
  final = records[-1] if records else {}
  return dict(
      run_name="t", rounds=len(records),
      final={k: final.get(k) for k in reporting.METRIC_NAMES + ("test_loss", "confusion_matrix")},
      privacy=dict(epsilon=final.get("epsilon"), delta=1e-5, noise_multiplier=noise_multiplier,
                   clip_norm=2.0, accountant="RDP", unit="one hospital"),
      ledger=dict(enabled=True, num_verifiers=3,
                  consensus=dict(absolute_threshold=0.5, gamma=0.5, k=3.0, rule="median_mad")),
      attack=attack or dict(kind="none", num_malicious=0, scale=10.0),
      votes=reporting.vote_totals(records), data=[], seconds_this_process=9.0,
      skipped_files=[], mean_round_seconds=4.0 if len(records) > 1 else None,
      devices=["cpu:0"], environment=ENVIRONMENT, config=dict(num_hospitals=4))


RECORDS = [make_record(1), make_record(2, sampled=(1, 2, 3), rejected=(3,)),
           make_record(3, sampled=(0, 3), rejected=(0,), malicious_rejected=1, honest_rejected=0)]


def test_json_text_writes_undefined_and_unbounded_metrics_as_null():
  record = dict(round=3, precision=math.nan, epsilon=math.inf, auc=0.75,
                nested=[1.0, -math.inf, dict(x=math.nan)], name="fed9")
  parsed = _strict_loads(reporting.json_text(record))
  assert parsed == dict(round=3, precision=None, epsilon=None, auc=0.75,
                        nested=[1.0, None, dict(x=None)], name="fed9")


def test_summary_json_is_strict_with_an_undefined_metric_and_no_noise(tmp_path):
  records = [make_record(1, epsilon=math.inf), make_record(2, epsilon=math.inf)]
  reporting.write_outputs(tmp_path, make_summary(records, noise_multiplier=0.0), records)
  summary = _strict_loads((tmp_path / "summary.json").read_text())
  assert summary["final"]["precision"] is None and summary["privacy"]["epsilon"] is None


def test_summary_markdown_says_undefined_and_unbounded_in_words():
  records = [make_record(1, epsilon=math.inf)]
  text = reporting.summary_markdown(make_summary(records, noise_multiplier=0.0))
  assert "| 0.5 | undefined | 0 | 1 | 0.6 | 0.69 |" in text  # precision NaN
  assert "(ε, δ) = (∞ (no noise), 1e-05)" in text
  assert "nan" not in text.lower().replace("non-covid", "") and " inf" not in text
  assert "mean round time undefined" in text
  # read back from summary.json: the nulls say the same
  back = _strict_loads(reporting.json_text(make_summary(records, noise_multiplier=0.0)))
  assert "(ε, δ) = (∞ (no noise), 1e-05)" in reporting.summary_markdown(back)


def test_summary_markdown_renders_the_rule_as_a_table():
  text = reporting.summary_markdown(make_summary(RECORDS))
  assert "| field | value |" in text and "| `k` | 3.0 |" in text
  assert "| `rule` | `median_mad` |" in text and "{'" not in text
  assert "| **actual COVID-19** | 4 (FN) | 0 (TP) |" in text
  assert "![the vote per hospital and round](votes.png)" in text


def test_round_line_leaves_out_the_compiling_round():
  first = reporting.round_line(make_record(1), 10, [80.0])
  assert "ETA after the next round" in first and "incl. compilation" in first
  second = reporting.round_line(make_record(2), 10, [80.0, 4.0])
  assert second.endswith("ETA 32 s")  # 8 rounds x 4 s, not (80 + 4) / 2
  assert reporting.round_line(make_record(3), 100, [80.0, 4.0, 6.0]).endswith("ETA 8 min 05 s")
  resumed = reporting.round_line(make_record(6), 10, [70.0])  # a resumed process compiles too
  assert "ETA after the next round" in resumed
  assert reporting.round_line(make_record(10), 10, [80.0, 4.0]).endswith("done")
  assert "\n" not in second and len(second) < 160
  assert "eps inf (no noise)" in reporting.round_line(make_record(2, epsilon=math.inf), 3, [1, 1])


def test_rejections_are_counted_by_reason_and_non_finite_ones_named():
  records = [make_record(1, sampled=(0, 1, 3), rejected=(3,),
                         reasons=["accepted", "accepted", "non_finite_update"]),
             make_record(2, sampled=(3, 2, 1), rejected=(3, 1),
                         reasons=["non_finite_update", "accepted", "vote_score"]),
             make_record(3)]  # a line written before reasons were recorded
  totals = reporting.vote_totals(records)
  assert totals["rejected_by_reason"] == {"non_finite_update": 2, "vote_score": 1}
  assert totals["non_finite_updates"] == {"3": [1, 2]}
  text = reporting.summary_markdown(make_summary(records))
  assert "Updates: 9 submitted, 6 accepted, 3 rejected (2 non-finite, 1 by the eq. 15 vote " \
         "score)." in text
  assert "data hold NaN/Inf): hospital 3 in rounds 1, 2." in text
  assert "accepted 1/3 (non-finite: 3)  " in reporting.round_line(records[1], 3, [80.0, 4.0])
  assert "non-finite" not in reporting.round_line(records[2], 3, [80.0, 4.0])


def test_log_round_logs_the_line(caplog):
  with caplog.at_level(logging.INFO, logger="ccfl_jax"):
    reporting.log_round(make_record(1), 2, [80.0])
  assert "round 1/2" in caplog.text and "ETA after the next round" in caplog.text


def test_plots_are_written_at_150_dpi(tmp_path):
  reporting.write_outputs(tmp_path, make_summary(RECORDS), RECORDS)
  for name in ("curves.png", "votes.png"):
    with Image.open(tmp_path / name) as image:
      assert round(image.info["dpi"][0]) >= 150
      assert image.size[0] >= 1000 and image.size[1] >= 350


def _integer_ticks(ax):
  low, high = ax.get_xlim()
  ticks = [t for t in ax.get_xticks() if low <= t <= high]
  return ticks and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("num_rounds", [1, 2, 3, 40])
def test_curves_have_labels_integer_rounds_markers_and_outside_legends(num_rounds):
  records = [make_record(r) for r in range(1, num_rounds + 1)]
  fig = reporting.curves_figure(records)
  fig.canvas.draw()
  metrics, losses, eps = fig.axes
  assert metrics.get_ylabel() and losses.get_ylabel() == "loss" and "ε" in eps.get_ylabel()
  for ax in fig.axes:
    assert ax.get_xlabel() == "round" and _integer_ticks(ax)
    assert all(line.get_marker() == "o" for line in ax.get_lines())
  for ax in (metrics, losses):
    legend, frame = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= frame.x1  # right of the data, never over it
  assert {line.get_label() for line in losses.get_lines()} == set(reporting.LOSS_NAMES.values())


def test_vote_grid_and_heat_map_mark_malicious_hospitals():
  grid = reporting.vote_grid(RECORDS, num_hospitals=5)
  assert grid.shape == (5, 3)
  assert grid[:, 1].tolist() == [reporting.NOT_SAMPLED, reporting.ACCEPTED, reporting.ACCEPTED,
                                 reporting.REJECTED, reporting.NOT_SAMPLED]
  fig = reporting.votes_figure(RECORDS, num_hospitals=5, malicious=range(1))
  ax = fig.axes[0]
  labels = [t.get_text() for t in ax.get_yticklabels()]
  assert labels == ["H0 (malicious)", "H1", "H2", "H3", "H4"]
  legend = [t.get_text() for t in ax.get_legend().get_texts()]
  assert legend == ["accepted (6)", "rejected (2)", "not sampled (7)"]
  assert "2 of 8 updates rejected" in ax.get_title()


def test_metrics_csv_has_flat_columns():
  rows = list(csv.DictReader(io.StringIO(reporting.metrics_csv_text(
      RECORDS[:2] + [make_record(3, epsilon=math.inf)]))))
  assert len(rows) == 3
  assert rows[1]["round"] == "2" and rows[1]["sampled"] == "1 2 3"
  assert rows[1]["num_rejected"] == "1" and rows[1]["rejected"] == "3"
  assert rows[0]["precision"] == "" and rows[2]["epsilon"] == "inf"
  assert (rows[0]["tn"], rows[0]["fp"], rows[0]["fn"], rows[0]["tp"]) == ("4", "0", "4", "0")
  assert float(rows[0]["auc"]) == 0.6 and "vote_scores" not in rows[0]


def test_write_outputs_writes_metrics_csv(tmp_path):
  reporting.write_outputs(tmp_path, make_summary(RECORDS), RECORDS)
  assert (tmp_path / "metrics.csv").read_text() == reporting.metrics_csv_text(RECORDS)


def event_file_scalars(path):
  """(tag, step, value) of the scalars in a TensorBoard event file (TFRecord framing)."""
  from tensorboardX.proto import event_pb2
  data, found, offset = path.read_bytes(), [], 0
  while offset < len(data):
    (length,) = struct.unpack("<Q", data[offset:offset + 8])
    event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
    offset += 12 + length + 4
    found += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
  return found


def test_tensorboard_event_files_hold_each_round(tmp_path):
  pytest.importorskip("tensorboardX")
  reporting.write_tensorboard(tmp_path / "tb", RECORDS)
  [event_file] = list((tmp_path / "tb").glob("events.out.tfevents.*"))
  scalars = event_file_scalars(event_file)
  assert {(t, s) for t, s, _ in scalars} >= {("test/accuracy", 1), ("privacy/epsilon", 3),
                                             ("train/local_loss", 2), ("votes/num_rejected", 2)}
  assert ("test/precision", 1) not in {(t, s) for t, s, _ in scalars}  # undefined: left out
  assert "tensorflow" not in sys.modules


def test_tensorboard_without_the_extra_names_it(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  with pytest.raises(ImportError, match=r'pip install -e "\.\[tensorboard\]"'):
    reporting.TensorBoardWriter(tmp_path)
