"""What a run prints and writes: the per-round log line, summary.json/.md, metrics.csv, the
plots curves.png (test metrics, losses and ε per round), votes.png (the vote per hospital
and round) and update_stats.png (V_c and U_s per round, eqs. 6-8), and, with the optional
`tensorboard` extra, TensorBoard event files.

How a value that is not an ordinary number is shown in each output:

  | value                                   | memory | JSON | CSV   | summary.md     |
  |-----------------------------------------|--------|------|-------|----------------|
  | undefined metric (precision with no     | NaN    | null | empty | undefined      |
  | positive prediction, AUC of one class)  |        |      |       |                |
  | unbounded ε (noise multiplier σ = 0)    | inf    | null | inf   | ∞ (no noise)   |
"""
import csv
import io
import json
import logging
import math
import pathlib
import shutil

import numpy as np

from ccfl_jax.files import write_atomically
from ccfl_jax.nulls import none_to, strict_json

METRIC_NAMES = ("accuracy", "precision", "sensitivity", "specificity", "auc")
LOSS_NAMES = {"local_loss": "training\n(mean over the\nsampled hospitals)",
              "test_loss": "test\n(held-out patients)"}
PLOT_DPI = 150
UPDATE_STATS_PLOT = "update_stats.png"
TENSORBOARD_EXTRA = 'pip install -e ".[tensorboard]"'

# votes.png: the state of a (hospital, round) cell and its colour.
NOT_SAMPLED, ACCEPTED, REJECTED = 0, 1, 2
VOTE_STATES = {NOT_SAMPLED: ("not sampled", "#e6e6e6"), ACCEPTED: ("accepted", "#3f7fbf"),
               REJECTED: ("rejected", "#e05a1a")}

# Per-round lists of hospital ids; metrics.csv carries each as a count and as the ids.
HOSPITAL_LISTS = ("sampled", "accepted", "rejected")
# Why an update was rejected (a metrics line's `reasons`, ledger/consensus.REJECTIONS order).
REJECTION_TEXT = {"non_finite_update": "non-finite", "vote_score": "by the eq. 15 vote score",
                  "direction": "by the direction check", "norm": "by the magnitude check"}

LOG = logging.getLogger("ccfl_jax")


def json_text(value, **kwargs) -> str:
  """json.dumps of strict_json(value); raises rather than write a non-standard token."""
  return json.dumps(strict_json(value), allow_nan=False, **kwargs)


def _undefined(value) -> bool:
  """None (read back from JSON) or NaN (in memory): a metric without a value."""
  return value is None or (isinstance(value, float) and math.isnan(value))


def _unbounded(value) -> bool:
  return isinstance(value, float) and math.isinf(value)


# ---------------------------------------------------------------------------------------------
# The per-round log line


def duration_text(seconds: float) -> str:
  """A duration for people: '45 s', '2 min 40 s', '1 h 05 min'."""
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds} s"
  if seconds < 3600:
    return f"{seconds // 60} min {seconds % 60:02d} s"
  return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def eta_seconds(rounds_left: int, round_times) -> float | None:
  """Seconds until the last round, or None while it cannot be estimated.

  `round_times` are the rounds this process has run, in order. Its first round includes
  compiling the round function (often tens of times a later round), so it is left out:
  with only that round timed there is nothing to extrapolate from yet.
  """
  if rounds_left <= 0:
    return 0.0
  steady = list(round_times)[1:]
  return rounds_left * sum(steady) / len(steady) if steady else None


def _log_number(value, spec: str = ".3f") -> str:
  if _undefined(value):
    return "n/a"
  return "inf" if _unbounded(value) else format(value, spec)


def round_line(record: dict, num_rounds: int, round_times) -> str:
  """One short line about a finished round: loss, test metrics, ε, vote, time, ETA."""
  rounds_left = num_rounds - record["round"]
  eta = eta_seconds(rounds_left, round_times)
  if rounds_left <= 0:
    eta_text = "done"
  elif eta is None:
    eta_text = "ETA after the next round"
  else:
    eta_text = f"ETA {duration_text(eta)}"
  compiled = " incl. compilation" if len(round_times) == 1 else ""
  epsilon = ("inf (no noise)" if _unbounded(record["epsilon"])
             else _log_number(record["epsilon"], ".3g"))
  delta = record.get("epsilon_delta", record["delta"])
  delta_text = (f"delta {delta:.0e}" if delta else "pure") + (
      ", local" if record.get("mechanism") == "laplace_local" else "")
  return (f"round {record['round']}/{num_rounds}  loss {_log_number(record['local_loss'], '.4f')}"
          f"  test acc {_log_number(record['accuracy'])}"
          f"  sens {_log_number(record['sensitivity'])}"
          f"  spec {_log_number(record['specificity'])}"
          f"  eps {epsilon} ({delta_text})"
          f"  accepted {len(record['accepted'])}/{len(record['sampled'])}{_non_finite_note(record)}"
          f"  {record['round_seconds']:.2f} s{compiled}  {eta_text}")


def _non_finite_note(record: dict) -> str:
  hospitals = [h for h, r in zip(record["sampled"], record.get("reasons") or [])
               if r == "non_finite_update"]
  return f" (non-finite: {' '.join(map(str, hospitals))})" if hospitals else ""


def log_round(record: dict, num_rounds: int, round_times: list[float]) -> None:
  """Logs `round_line` (see there) at INFO on the `ccfl_jax` logger."""
  LOG.info("%s", round_line(record, num_rounds, round_times))


# ---------------------------------------------------------------------------------------------
# summary.json and summary.md


def vote_totals(records: list[dict]) -> dict:
  """Accepted and rejected updates over the run, split into malicious and honest hospitals."""
  malicious = sum(r["malicious_accepted"] + r["malicious_rejected"] for r in records)
  updates = sum(len(r["sampled"]) for r in records)
  totals = dict(
      updates=updates, accepted=sum(len(r["accepted"]) for r in records),
      rejected=sum(len(r["rejected"]) for r in records), malicious_updates=malicious,
      malicious_accepted=sum(r["malicious_accepted"] for r in records),
      malicious_rejected=sum(r["malicious_rejected"] for r in records),
      honest_updates=updates - malicious,
      honest_rejected=sum(r["honest_rejected"] for r in records))
  reasons = [(r["round"], h, why) for r in records
             for h, why in zip(r["sampled"], r.get("reasons") or []) if why in REJECTION_TEXT]
  totals["rejected_by_reason"] = {why: n for why in REJECTION_TEXT
                                  if (n := sum(1 for _, _, w in reasons if w == why))}
  non_finite = {}
  for round_, h, why in reasons:
    if why == "non_finite_update":
      non_finite.setdefault(str(h), []).append(round_)
  totals["non_finite_updates"] = non_finite  # {hospital: [rounds]}
  totals["malicious_rejected_rate"] = (totals["malicious_rejected"] / malicious
                                       if malicious else None)
  totals["honest_rejected_rate"] = (totals["honest_rejected"] / totals["honest_updates"]
                                    if totals["honest_updates"] else None)
  return totals


ACCOUNTANTS = {
    "rdp": "RDP (dp_accounting)", "pld": "PLD of the composed Gaussian in closed form (every "
    "round had m_t = H, and it was the smaller valid bound; privacy.gaussian_epsilon)"}


def privacy_summary(config, final: dict, accountant: str, parameters: dict | None) -> dict:
  """summary.json's `privacy`: the mechanism, its parameters, the final ε and how it was
  accounted (gaussian_central: `accountant` as privacy.epsilon_report named it; laplace_local:
  the record's composition fields, training.laplace_record)."""
  p = config.privacy
  common = dict(mechanism=p.get("mechanism", "gaussian_central"), epsilon=final.get("epsilon"),
                clip_norm=p.clip_norm, unit="one hospital's whole dataset",
                parameters=parameters)
  if common["mechanism"] != "laplace_local":
    return dict(common, delta=p.delta, noise_multiplier=p.noise_multiplier,
                accountant=f"{ACCOUNTANTS[accountant]}, sampling without replacement, "
                "REPLACE_ONE, sensitivity 2S, charged with the m_t sampled (not the accepted) "
                "hospitals each round; the vote's published MAEs (and, with the update checks "
                "on, update norms and cosines) are not covered (federated/privacy.py, "
                "ledger/consensus.py)")
  scale = 2 * p.clip_norm / p.laplace_epsilon
  return dict(common, delta=final.get("epsilon_delta", 0.0), delta_advanced=p.delta,
              noise_multiplier=0.0, laplace_epsilon=p.laplace_epsilon, laplace_scale=scale,
              composition=final.get("epsilon_composition"),
              epsilon_basic=final.get("epsilon_basic"),
              epsilon_advanced=final.get("epsilon_advanced"),
              hospital_rounds=final.get("hospital_rounds"),
              accountant="local Laplace (eqs. 12-13): L1 clip to B, sensitivity 2B, each "
              "submission laplace_epsilon-DP (pure); per hospital over the rounds it was "
              "sampled in, the smaller of basic composition (delta 0) and advanced composition "
              "(Dwork-Rothblum-Vadhan, at delta_advanced); no amplification by sampling; the "
              "vote's published MAEs (and cosines) of the noised submissions are "
              "post-processing, each author's MAE on its own validation batch is not "
              "covered (federated/privacy.py)")


def summarize(config, records: list[dict], data_counts: list[dict], skipped, seconds: float,
              environment: dict, accountant: str = "rdp", data_warnings=(),
              parameters: dict | None = None) -> dict:
  """summary.json: `environment` from environment.describe, `accountant` the name that
  privacy.epsilon_report gave for the final ε (gaussian_central), `data_warnings` the data
  checks' warnings, `parameters` models.parameter_counts (trainable and frozen)."""
  final = records[-1] if records else {}
  return dict(
      run_name=config.run_name, rounds=len(records),
      final={k: final.get(k) for k in METRIC_NAMES + ("test_loss", "confusion_matrix")},
      privacy=privacy_summary(config, final, accountant, parameters),
      ledger=dict(enabled=config.ledger.enabled,
                  consensus=config.ledger.consensus.to_dict() if config.ledger.enabled else None,
                  num_verifiers=config.ledger.num_verifiers),
      attack=config.attack.to_dict(), votes=vote_totals(records),
      data=data_counts, seconds_this_process=seconds,
      skipped_files=[dict(path=str(f.path), problem=f.problem) for f in skipped],
      data_warnings=list(data_warnings),
      mean_round_seconds=(sum(r["round_seconds"] for r in records[1:]) / (len(records) - 1)
                          if len(records) > 1 else None),
      devices=environment["devices"], environment=environment,
      config=json.loads(config.to_json()))


def _fmt(value) -> str:
  """A value for summary.md: floats to 4 significant digits (whole numbers from 10,000 on),
  None or NaN as 'undefined'."""
  if _undefined(value):
    return "undefined"
  if isinstance(value, float):
    if math.isinf(value):
      return "∞" if value > 0 else "-∞"
    return f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
  return str(value)


def _fmt_large(value) -> str:
  """_fmt, but from 10^9 on in scientific notation (advanced composition's bound explodes)."""
  if isinstance(value, float) and math.isfinite(value) and abs(value) >= 1e9:
    return f"{value:.3g}"
  return _fmt(value)


def epsilon_text(epsilon, noise_multiplier=None) -> str:
  """ε for summary.md: '∞ (no noise)' when unbounded (inf, or null with σ = 0), else _fmt."""
  if _unbounded(epsilon) or (epsilon is None and noise_multiplier == 0):
    return "∞ (no noise)"
  return _fmt(epsilon)


def _percent(rate) -> str:
  return "undefined" if _undefined(rate) else f"{100 * rate:.1f}%"


def _table(header, rows) -> list[str]:
  """A markdown table: header cells, then one line per row of cells."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _setting(value) -> str:
  """A config value in a table cell: numbers as written (0.001, 3.0), strings in backticks."""
  if isinstance(value, str):
    return f"`{value}`"
  if isinstance(value, float):
    return "undefined" if math.isnan(value) else repr(value)
  if isinstance(value, (dict, list, tuple)):
    return f"`{json_text(value)}`"
  return str(value)


def _confusion_markdown(matrix) -> list[str]:
  if matrix is None:
    return ["Confusion matrix: undefined (no round ran)."]
  (tn, fp), (fn, tp) = matrix
  return ["Confusion matrix (slices):", ""] + _table(
      ["", "predicted non-COVID", "predicted COVID-19"],
      [["**actual non-COVID**", f"{tn} (TN)", f"{fp} (FP)"],
       ["**actual COVID-19**", f"{fn} (FN)", f"{tp} (TP)"]])


def _round_time_text(summary: dict) -> str:
  mean = summary["mean_round_seconds"]
  if mean is None:
    return "mean round time undefined (only the first round, which compiles, ran)"
  return f"mean round time {_fmt(mean)} s (after the first round, which compiles)"


def summary_markdown(summary: dict) -> str:
  """summary.md: final metrics, privacy, the vote and the attack, data, plots and the config."""
  f, p = summary["final"], summary["privacy"]
  lines = [f"# Run `{summary['run_name']}`", "",
           f"{summary['rounds']} rounds; devices: {', '.join(summary['devices'])}; "
           f"{_round_time_text(summary)}.", "",
           "## Final test metrics (held-out patients, slice level, threshold 0.5)", ""]
  lines += _table(list(METRIC_NAMES) + ["test loss"],
                  [[_fmt(f[k]) for k in METRIC_NAMES + ("test_loss",)]])
  lines += [""] + _confusion_markdown(f["confusion_matrix"])
  lines += ["", "## Privacy", "", _privacy_markdown(p) + _frozen_text(p.get("parameters")), "",
            "## Consensus and attack", "", _votes_markdown(summary), ""]
  lines += _robustness_markdown(summary)
  if summary["rounds"]:
    lines += ["## Plots", "", "![test metrics, losses and ε per round](curves.png)", "",
              "![the vote per hospital and round](votes.png)", "",
              f"![V_c and U_s of the accepted updates per round]({UPDATE_STATS_PLOT})", ""]
  lines += ["## Data (patients, slices, positive slices)", ""]
  lines += _table(["split", "patients", "slices", "positive slices"],
                  [[r["name"], r["patients"], r["slices"], r["positive_slices"]]
                   for r in summary["data"]])
  skipped = summary["skipped_files"]
  lines += ["", f"Files skipped by the loader (on_bad_file='skip'): {len(skipped)}"]
  lines += [f"- `{f['path']}`: {f['problem']}" for f in skipped]
  if summary.get("data_warnings"):
    lines += ["", "Data warnings:"] + [f"- {w}" for w in summary["data_warnings"]]
  lines += ["", f"Wall time of this process: {summary['seconds_this_process']:.0f} s.", ""]
  lines += _environment_markdown(summary.get("environment"))
  lines += ["## Config", "", "```json", json.dumps(summary["config"], indent=2,
                                                        sort_keys=True), "```", ""]
  return "\n".join(lines)


def _privacy_markdown(p: dict) -> str:
  """The privacy paragraph of summary.md: what was guaranteed, by which mechanism, and how
  the central Gaussian and the local Laplace guarantees differ."""
  if p.get("mechanism", "gaussian_central") != "laplace_local":
    return (f"(ε, δ) = ({epsilon_text(p['epsilon'], p['noise_multiplier'])}, {p['delta']:g}) "
            f"with noise multiplier σ = {p['noise_multiplier']}, clip norm S = {p['clip_norm']}; "
            f"accountant: {p['accountant']}; unit of privacy: {p['unit']}. Central DP "
            "(gaussian_central): the guarantee covers the noised aggregate the server "
            "publishes, approximate (δ > 0), and trusts the server that sums the clean "
            "updates.")
  how = ("basic composition, pure DP" if p["delta"] == 0 else
         f"advanced composition at δ = {p['delta_advanced']:g}")
  return (f"Local DP (laplace_local, eqs. 12-13): every sampled hospital clipped its update to "
          f"L1 norm B = {p['clip_norm']} and added Laplace noise of scale b = 2B/ε_round = "
          f"{_fmt(p['laplace_scale'])} to each trainable coordinate before submitting, so "
          f"each submission is ε_round = {p['laplace_epsilon']}-DP (pure, δ = 0). Over the "
          f"run the hospital that took part most ({p['hospital_rounds']} rounds) is at "
          f"(ε, δ) = ({_fmt(p['epsilon'])}, {p['delta']:g}) ({how}; basic "
          f"{_fmt_large(p['epsilon_basic'])}, advanced {_fmt_large(p['epsilon_advanced'])}); "
          "unit of "
          f"privacy: {p['unit']}. How it differs from the central Gaussian mechanism "
          "(gaussian_central): this guarantee is local, it holds for each hospital's own "
          "release against everyone who sees it, the server and the ledger included, with no "
          "trusted aggregator, and each round is pure ε-DP; the Gaussian's (ε, δ) is "
          "approximate DP (δ > 0) of the published noised aggregate only, trusting the "
          "server with the clean updates, and is amplified by sampling, which the local "
          "guarantee does not claim. The price: m_t independent noises in the mean, each "
          f"large enough to hide a whole update. Accountant: {p['accountant']}.")


def _robustness_markdown(summary: dict) -> list[str]:
  """The aggregation rule (when not eq. 5's mean) and the backdoor's success, if any."""
  lines = []
  rule = summary.get("aggregation") or {}
  if rule and rule.get("rule") != "mean":
    used = (f"; it aggregated {rule['aggregated']} updates in all, {rule['malicious_aggregated']} "
            f"of them malicious" if "aggregated" in rule else "")
    lines += [f"Aggregation rule `{rule['rule']}` (config.aggregation): {rule['privacy']}{used}.",
              ""]
  backdoor = summary.get("backdoor_success")
  if backdoor:
    lines += [f"Backdoor success (triggered held-out slices called the target): final "
              f"{_fmt(backdoor['final'])}, mean of the last {backdoor['last_rounds']} rounds "
              f"{_fmt(backdoor['last_rounds_mean'])}.", ""]
  return lines


def _frozen_text(parameters: dict | None) -> str:
  if not parameters or not parameters["frozen"]:
    return ""
  return (f" The noise and the clipping cover the {parameters['trainable']:,} trainable "
          f"parameters; the {parameters['frozen']:,} frozen ones (pretrained, `model.trainable`) "
          "receive no update, carry no noise and take no share of the clipped norm.")


def _over_processes(processes: int) -> str:
  return "" if processes == 1 else f" over {processes} processes (process 0 wrote this run)"


def _environment_markdown(environment: dict | None) -> list[str]:
  if not environment:
    return []
  lines = ["## Environment", "",
           f"Code: git commit {environment['git_commit']}; Python {environment['python']} on "
           f"{environment['platform']}; JAX backend {environment['backend']}, "
           f"{environment['device_count']} device(s)"
           f"{_over_processes(environment.get('processes', 1))}.", ""]
  return lines + _table(["package", "version"],
                        [[k, v] for k, v in environment["packages"].items()]) + [""]


def _votes_markdown(summary: dict) -> str:
  v, a, ledger = summary["votes"], summary["attack"], summary["ledger"]
  if ledger["enabled"]:
    lines = [f"MAE vote (eqs. 14-15) with {ledger['num_verifiers']} verifiers; ledger: "
             "`python -m ccfl_jax.ledger verify` on the run folder. The rule:", ""]
    lines += _table(["field", "value"], [[f"`{k}`", _setting(value)]
                                         for k, value in (ledger["consensus"] or {}).items()])
    lines.append("")
  else:
    lines = ["No ledger and no vote: every sampled update aggregated.", ""]
  by_reason = v.get("rejected_by_reason") or {}
  why = (" (" + ", ".join(f"{n} {REJECTION_TEXT[r]}" for r, n in by_reason.items()) + ")"
         if by_reason else "")
  lines.append(f"Updates: {v['updates']} submitted, {v['accepted']} accepted, "
               f"{v['rejected']} rejected{why}.")
  non_finite = v.get("non_finite_updates") or {}
  if non_finite:
    lines.append("Non-finite (NaN/Inf) updates, never aggregated (local training diverged "
                 "or the data hold NaN/Inf): " + "; ".join(
                     f"hospital {h} in round{'s' if len(rounds) > 1 else ''} "
                     f"{', '.join(map(str, rounds))}" for h, rounds in non_finite.items()) + ".")
  if a["kind"] != "none" and a["num_malicious"]:
    lines.append(f"Attack `{a['kind']}` by {a['num_malicious']} hospital(s) (ids 0-"
                 f"{a['num_malicious'] - 1}): {v['malicious_rejected']}/{v['malicious_updates']} "
                 f"malicious updates rejected ({_percent(v['malicious_rejected_rate'])}), "
                 f"{v['honest_rejected']}/{v['honest_updates']} honest ones "
                 f"({_percent(v['honest_rejected_rate'])}).")
  else:
    lines.append(f"No attack; honest updates rejected: {v['honest_rejected']}/"
                 f"{v['honest_updates']} ({_percent(v['honest_rejected_rate'])}).")
  return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# metrics.csv and TensorBoard


def _csv_cell(value) -> str:
  if _undefined(value):
    return ""
  if isinstance(value, float):
    return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
  return str(value)


def csv_row(record: dict) -> dict[str, str]:
  """One record as flat CSV cells.

  Scalars keep their name; the hospital-id lists (sampled, accepted, rejected) become a count
  `num_<list>` and the ids, space-separated; the confusion matrix becomes tn, fp, fn, tp.
  Per-hospital vectors (vote_scores, update_norms, cosines) stay in metrics.jsonl only.
  """
  row = {}
  for key, value in record.items():
    if key in HOSPITAL_LISTS:
      row[f"num_{key}"] = str(len(value))
      row[key] = " ".join(str(h) for h in value)
    elif key == "confusion_matrix":
      cells = [str(c) for pair in value for c in pair] if value else [""] * 4
      row.update(zip(("tn", "fp", "fn", "tp"), cells))
    elif value is None or isinstance(value, (bool, int, float, str)):
      row[key] = _csv_cell(value)
  return row


def metrics_csv_text(records: list[dict]) -> str:
  """metrics.csv for `records`: one row per round; columns in first-seen order."""
  rows = [csv_row(r) for r in records]
  columns = list(dict.fromkeys(column for row in rows for column in row))
  out = io.StringIO()
  writer = csv.DictWriter(out, columns, restval="", lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  return out.getvalue()


def write_metrics_csv(path, records: list[dict]) -> None:
  """Writes (rewrites) metrics.csv: cheap enough to call after every round."""
  write_atomically(path, metrics_csv_text(records))


_TENSORBOARD_GROUPS = dict(local_loss="train", clipped_fraction="train", v_c="updates",
                           u_s="updates", test_loss="test",
                           epsilon="privacy", round_seconds="time", num_sampled="votes",
                           num_accepted="votes", num_rejected="votes",
                           malicious_accepted="votes", malicious_rejected="votes",
                           honest_rejected="votes")
_TENSORBOARD_SKIP = ("round", "delta", "tn", "fp", "fn", "tp") + HOSPITAL_LISTS


def tensorboard_scalars(record: dict) -> dict[str, float]:
  """The finite numbers of a record, tagged `<group>/<name>` (test/auc, privacy/epsilon, ...)."""
  scalars = {}
  for key, cell in csv_row(record).items():
    if key in _TENSORBOARD_SKIP:
      continue
    try:
      value = float(cell)
    except ValueError:
      continue
    if math.isfinite(value):
      group = _TENSORBOARD_GROUPS.get(key, "test" if key in METRIC_NAMES + ("f1",) else "run")
      scalars[f"{group}/{key.removesuffix('_loss') if group == 'test' else key}"] = value
  return scalars


class TensorBoardWriter:
  """TensorBoard event files in `log_dir`, one step per round (needs the `tensorboard` extra).

    with TensorBoardWriter(run_dir / "tensorboard") as writer:
      writer.write(record)        # after each round

  Written with tensorboardX, which needs protobuf but not TensorFlow.
  """

  def __init__(self, log_dir):
    try:
      import tensorboardX  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise ImportError("TensorBoard event files need tensorboardX, the optional extra "
                        f"`tensorboard`: {TENSORBOARD_EXTRA}") from None
    self._writer = tensorboardX.SummaryWriter(str(log_dir))

  def write(self, record: dict) -> None:
    for tag, value in tensorboard_scalars(record).items():
      self._writer.add_scalar(tag, value, global_step=record["round"])

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()


def write_tensorboard(log_dir, records: list[dict]) -> None:
  """All `records` as TensorBoard event files in `log_dir` (see TensorBoardWriter)."""
  with TensorBoardWriter(log_dir) as writer:
    for record in records:
      writer.write(record)


# ---------------------------------------------------------------------------------------------
# curves.png and votes.png


def _png(figure, dpi: int) -> bytes:
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=dpi)
  return buffer.getvalue()


def _figure(width: float, height: float):
  """A matplotlib Figure with constrained layout, drawn by Agg without touching pyplot."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  return Figure(figsize=(width, height), layout="constrained")


def _round_axis(ax, rounds) -> None:
  """x axis of rounds: integer ticks only, and room around a run of one to three rounds."""
  from matplotlib.ticker import MaxNLocator  # pylint: disable=import-outside-toplevel
  ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
  ax.set_xlabel("round")
  if max(rounds) - min(rounds) < 3:  # the locator would fall back to fractions
    ax.set_xticks(range(min(rounds), max(rounds) + 1))
    ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)


def _line_style(rounds) -> dict:
  return dict(marker="o", markersize=3.5, linewidth=1.4, markevery=max(1, len(rounds) // 50))


def _legend_outside(ax) -> None:
  ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False,
            labelspacing=0.8)


def _plot_metrics(ax, records, rounds) -> None:
  for name in METRIC_NAMES:
    ax.plot(rounds, [none_to(r[name]) for r in records], label=name, **_line_style(rounds))
  ax.set(ylabel="test metric (slice level)", title="test metrics", ylim=(-0.02, 1.02))
  _legend_outside(ax)


def _plot_losses(ax, records, rounds) -> None:
  for name, label in LOSS_NAMES.items():
    ax.plot(rounds, [none_to(r.get(name)) for r in records], label=label,
            **_line_style(rounds))
  ax.set(ylabel="loss", title="losses")
  _legend_outside(ax)


def _plot_epsilon(ax, records, rounds) -> None:
  epsilons = [none_to(r["epsilon"]) for r in records]
  last = records[-1]
  if last.get("mechanism") == "laplace_local":
    delta = last.get("epsilon_delta", 0.0)
    ax.set(ylabel="ε (privacy loss, worst hospital)",
           title=f"local Laplace ε at δ = {delta:g} ({last.get('epsilon_composition')})")
  else:
    ax.set(ylabel="ε (privacy loss)", title=f"ε at δ = {last['delta']:g}")
  if not any(math.isfinite(e) for e in epsilons):
    ax.text(0.5, 0.5, "ε = ∞\n(no noise, σ = 0)", ha="center", va="center", fontsize=12,
            transform=ax.transAxes)
    ax.set_yticks([])
  else:
    ax.plot(rounds, epsilons, color="tab:purple", **_line_style(rounds))


def curves_figure(records: list[dict], title: str | None = None):
  """Test metrics, the two losses and ε per round, three panels side by side (a Figure)."""
  rounds = [r["round"] for r in records]
  fig = _figure(15, 4.2)
  ax_metrics, ax_loss, ax_eps = fig.subplots(1, 3, width_ratios=(1.2, 1, 0.9))
  _plot_metrics(ax_metrics, records, rounds)
  _plot_losses(ax_loss, records, rounds)
  _plot_epsilon(ax_eps, records, rounds)
  for ax in (ax_metrics, ax_loss, ax_eps):
    _round_axis(ax, rounds)
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  return fig


def plot_curves(path: pathlib.Path, records: list[dict], *, title: str | None = None,
                dpi: int = PLOT_DPI) -> None:
  """curves.png: see curves_figure."""
  write_atomically(path, _png(curves_figure(records, title), dpi))


def update_stats_figure(records: list[dict], title: str | None = None):
  """V_c (eq. 7) and U_s (eq. 8) per round, and their ratio V_c / U_s (a Figure), on a log
  scale where a panel spans more than a decade; rounds without a value (nothing accepted, or
  a run from before the statistics) are gaps."""
  rounds = [r["round"] for r in records]
  v_c = [none_to(r.get("v_c")) for r in records]
  u_s = [none_to(r.get("u_s")) for r in records]
  ratio = [v / u if u and math.isfinite(v) and math.isfinite(u) else math.nan
           for v, u in zip(v_c, u_s)]
  noised = records[-1].get("mechanism") == "laplace_local"
  what = ("noised submissions (their Laplace noise included)" if noised
          else "clipped updates (before the server's noise)")
  fig = _figure(12, 4.4)
  ax_stats, ax_ratio = fig.subplots(1, 2)
  ax_stats.plot(rounds, v_c, label="V_c (eq. 7): mean per-coordinate variance over hospitals",
                **_line_style(rounds))
  ax_stats.plot(rounds, u_s, label="U_s (eq. 8): mean squared coordinate of the mean update",
                **_line_style(rounds))
  ax_stats.set(ylabel="(parameter units)² per coordinate", title=f"accepted {what}")
  ax_stats.legend(loc="best", fontsize="small", frameon=False)
  ax_ratio.plot(rounds, ratio, color="tab:green", **_line_style(rounds))
  ax_ratio.set(ylabel="V_c / U_s (dimensionless)",
               title="V_c / U_s: disagreement vs. shared signal")
  for ax, values in ((ax_stats, v_c + u_s), (ax_ratio, ratio)):
    positive = [y for y in values if math.isfinite(y) and y > 0]
    if positive and max(positive) > 10 * min(positive):
      ax.set_yscale("log")
    _round_axis(ax, rounds)
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  return fig


def plot_update_stats(path: pathlib.Path, records: list[dict], *, title: str | None = None,
                      dpi: int = PLOT_DPI) -> None:
  """update_stats.png: see update_stats_figure."""
  write_atomically(path, _png(update_stats_figure(records, title), dpi))


def vote_grid(records: list[dict], num_hospitals: int | None = None) -> np.ndarray:
  """(hospital, round) states: NOT_SAMPLED, ACCEPTED or REJECTED; rows 0 .. H - 1.

  H is `num_hospitals`, or one more than the largest hospital id sampled.
  """
  if num_hospitals is None:
    num_hospitals = 1 + max((h for r in records for h in r["sampled"]), default=-1)
  grid = np.full((num_hospitals, len(records)), NOT_SAMPLED, np.int8)
  for column, record in enumerate(records):
    grid[list(record["accepted"]), column] = ACCEPTED
    grid[list(record["rejected"]), column] = REJECTED
  return grid


def _vote_size(num_hospitals: int, num_rounds: int) -> tuple[float, float]:
  width = min(16.0, max(7.0, 3.2 + 0.2 * num_rounds))
  return width, min(12.0, max(2.6, 1.5 + 0.3 * num_hospitals))


def _draw_vote_cells(ax, grid: np.ndarray, first_round: int) -> None:
  """The cells, coloured by state, rejected ones also marked x (for grey-scale prints)."""
  from matplotlib.colors import BoundaryNorm, ListedColormap  # pylint: disable=import-outside-toplevel
  hospitals, rounds = grid.shape
  colours = ListedColormap([VOTE_STATES[s][1] for s in sorted(VOTE_STATES)])
  ax.imshow(grid, cmap=colours, norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3), aspect="auto",
            interpolation="nearest",
            extent=(first_round - 0.5, first_round + rounds - 0.5, hospitals - 0.5, -0.5))
  rejected_h, rejected_r = np.nonzero(grid == REJECTED)
  ax.scatter(rejected_r + first_round, rejected_h, marker="x", color="white", s=18,
             linewidths=1.2)
  if rounds <= 80 and hospitals <= 60:  # cell borders while cells stay visible
    ax.set_xticks(np.arange(first_round - 0.5, first_round + rounds), minor=True)
    ax.set_yticks(np.arange(-0.5, hospitals), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
  _round_axis(ax, [first_round, first_round + rounds - 1])


def _label_hospitals(ax, hospitals: int, malicious) -> None:
  """Rows H0 .. H{n-1} (at most ~30 labels); the attack's hospitals in bold red."""
  malicious = set(int(h) for h in malicious)
  ticks = list(range(0, hospitals, max(1, hospitals // 30)))
  ax.set_yticks(ticks, [f"H{h} (malicious)" if h in malicious else f"H{h}" for h in ticks])
  for label, h in zip(ax.get_yticklabels(), ticks):
    if h in malicious:
      label.set(color="#b00000", fontweight="bold")
  ax.set_ylabel("hospital")


def _vote_legend(ax, counts: dict) -> None:
  from matplotlib.patches import Patch  # pylint: disable=import-outside-toplevel
  handles = [Patch(facecolor=VOTE_STATES[s][1], edgecolor="#999999",
                   label=f"{VOTE_STATES[s][0]} ({counts[s]})")
             for s in (ACCEPTED, REJECTED, NOT_SAMPLED)]
  ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
            frameon=False, title="update")


def votes_figure(records: list[dict], num_hospitals: int | None = None, malicious=(),
                 title: str | None = None):
  """The vote per hospital (rows) and round (columns) as a heat map (a Figure).

  Cells are accepted, rejected or not sampled; `malicious` hospital ids (the attack's,
  0 .. num_malicious - 1) are labelled so. The default title counts the rejections.
  """
  grid = vote_grid(records, num_hospitals)
  fig = _figure(*_vote_size(*grid.shape))
  ax = fig.subplots()
  _draw_vote_cells(ax, grid, records[0]["round"] if records else 1)
  _label_hospitals(ax, grid.shape[0], malicious)
  counts = {s: int(np.sum(grid == s)) for s in VOTE_STATES}
  _vote_legend(ax, counts)
  ax.set_title(title or f"vote per hospital and round: {counts[REJECTED]} of "
               f"{counts[ACCEPTED] + counts[REJECTED]} updates rejected")
  return fig


def plot_votes(path: pathlib.Path, records: list[dict], *, num_hospitals: int | None = None,
               malicious=(), title: str | None = None, dpi: int = PLOT_DPI) -> None:
  """votes.png: see votes_figure."""
  write_atomically(path, _png(votes_figure(records, num_hospitals, malicious, title), dpi))


def _malicious_ids(summary: dict) -> range:
  attack = summary.get("attack") or {}
  active = attack.get("kind", "none") != "none" and attack.get("num_malicious", 0)
  return range(attack["num_malicious"] if active else 0)


def write_outputs(run_dir: pathlib.Path, summary: dict, records: list[dict], *,
                  metrics_csv: bool = True, tensorboard: bool = False) -> None:
  """summary.json, summary.md and, once a round ran, curves.png, votes.png, update_stats.png
  (and metrics.csv, and TensorBoard event files of every round in tensorboard/, rewritten
  whole so that a resumed run has each round once)."""
  run_dir = pathlib.Path(run_dir)
  write_atomically(run_dir / "summary.json", json_text(summary, indent=2))
  write_atomically(run_dir / "summary.md", summary_markdown(summary))
  if not records:
    return
  plot_curves(run_dir / "curves.png", records, title=f"run {summary['run_name']}")
  num_hospitals = (summary.get("config") or {}).get("num_hospitals")
  plot_votes(run_dir / "votes.png", records, num_hospitals=num_hospitals,
             malicious=_malicious_ids(summary),
             title=None if summary["ledger"]["enabled"] else
             "no ledger, no vote: every sampled update aggregated")
  plot_update_stats(run_dir / UPDATE_STATS_PLOT, records,
                    title=f"run {summary['run_name']}: update statistics (eqs. 6-8)")
  if metrics_csv:
    write_metrics_csv(run_dir / "metrics.csv", records)
  if tensorboard:
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    write_tensorboard(run_dir / "tensorboard", records)
