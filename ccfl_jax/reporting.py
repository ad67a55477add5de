"""What a run prints and writes: the per-round log line, summary.json/.md and curves.png."""
import json
import logging
import math
import pathlib

METRIC_NAMES = ("accuracy", "precision", "sensitivity", "specificity", "auc")

LOG = logging.getLogger("ccfl_jax")


def strict_json(value):
  """`value` with every NaN or infinite float replaced by None, so json.dumps writes strict JSON.

  Python's json writes NaN and Infinity, which jq, JavaScript and most JSON readers refuse.
  A null metric is one that is undefined (precision with no positive prediction, AUC of a
  one-class test set) or unbounded (epsilon without noise).
  """
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  return value


def json_text(value, **kwargs) -> str:
  """json.dumps of strict_json(value); raises rather than write a non-standard token."""
  return json.dumps(strict_json(value), allow_nan=False, **kwargs)


def log_round(record: dict, num_rounds: int, round_times: list[float]) -> None:
  """round, loss, test accuracy, ε, seconds per round, ETA."""
  recent = round_times[1:] or round_times  # the first round includes compilation
  eta = (num_rounds - record["round"]) * sum(recent) / len(recent)
  LOG.info("round %d/%d  loss %.4f  test acc %.3f  sens %.3f  spec %.3f  eps %.3g "
               "(delta %.0e)  accepted %d/%d  %.2fs/round  ETA %.0fs", record["round"],
               num_rounds, record["local_loss"], record["accuracy"], record["sensitivity"],
               record["specificity"], record["epsilon"], record["delta"],
               len(record["accepted"]), len(record["sampled"]), record["round_seconds"], eta)


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
  totals["malicious_rejected_rate"] = (totals["malicious_rejected"] / malicious
                                       if malicious else None)
  totals["honest_rejected_rate"] = (totals["honest_rejected"] / totals["honest_updates"]
                                    if totals["honest_updates"] else None)
  return totals


def summarize(config, records: list[dict], data_counts: list[dict], skipped, seconds: float,
              devices) -> dict:
  final = records[-1] if records else {}
  return dict(
      run_name=config.run_name, rounds=len(records),
      final={k: final.get(k) for k in METRIC_NAMES + ("test_loss", "confusion_matrix")},
      privacy=dict(epsilon=final.get("epsilon"), delta=config.privacy.delta,
                   noise_multiplier=config.privacy.noise_multiplier,
                   clip_norm=config.privacy.clip_norm, accountant="RDP (dp_accounting), "
                   "sampling without replacement, REPLACE_ONE, sensitivity 2S, charged with the m_t "
                   "sampled (not the accepted) hospitals each round; the vote's published MAEs "
                   "(and, with the update checks on, update norms and cosines) are not "
                   "covered (federated/privacy.py, ledger/consensus.py)",
                   unit="one hospital's whole dataset"),
      ledger=dict(enabled=config.ledger.enabled,
                  consensus=config.ledger.consensus.to_dict() if config.ledger.enabled else None,
                  num_verifiers=config.ledger.num_verifiers),
      attack=config.attack.to_dict(), votes=vote_totals(records),
      data=data_counts, seconds_this_process=seconds,
      skipped_files=[dict(path=str(f.path), problem=f.problem) for f in skipped],
      mean_round_seconds=(sum(r["round_seconds"] for r in records[1:]) / (len(records) - 1)
                          if len(records) > 1 else None),
      devices=[str(d) for d in devices], config=json.loads(config.to_json()))


def _fmt(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return "inf" if math.isinf(value) else f"{value:.4g}"
  return str(value)


def summary_markdown(summary: dict) -> str:
  f, p = summary["final"], summary["privacy"]
  lines = [f"# Run `{summary['run_name']}`", "",
           f"{summary['rounds']} rounds; devices: {', '.join(summary['devices'])}; "
           f"mean round time {_fmt(summary['mean_round_seconds'])} s.", "",
           "## Final test metrics (held-out patients, slice level, threshold 0.5)", "",
           "| " + " | ".join(METRIC_NAMES) + " | test loss |",
           "|" + "---|" * (len(METRIC_NAMES) + 1),
           "| " + " | ".join(_fmt(f[k]) for k in METRIC_NAMES) + f" | {_fmt(f['test_loss'])} |", "",
           f"Confusion matrix [[TN, FP], [FN, TP]]: {f['confusion_matrix']}", "",
           "## Privacy", "",
           f"(ε, δ) = ({_fmt(p['epsilon'])}, {p['delta']:g}) with noise multiplier σ = "
           f"{p['noise_multiplier']}, clip norm S = {p['clip_norm']}; accountant: {p['accountant']}; "
           f"unit of privacy: {p['unit']}.", "",
           "## Consensus and attack", "", _votes_markdown(summary), "",
           "## Data (patients, slices, positive slices)", "",
           "| split | patients | slices | positive slices |", "|---|---|---|---|"]
  lines += [f"| {r['name']} | {r['patients']} | {r['slices']} | {r['positive_slices']} |"
            for r in summary["data"]]
  skipped = summary["skipped_files"]
  lines += ["", f"Files skipped by the loader (on_bad_file='skip'): {len(skipped)}"]
  lines += [f"- `{f['path']}`: {f['problem']}" for f in skipped]
  lines += ["", f"Wall time of this process: {summary['seconds_this_process']:.0f} s.",
            "", "## Config", "", "```json", json.dumps(summary["config"], indent=2,
                                                        sort_keys=True), "```", ""]
  return "\n".join(lines)


def _votes_markdown(summary: dict) -> str:
  v, a, ledger = summary["votes"], summary["attack"], summary["ledger"]
  vote = (f"MAE vote (eqs. 14-15) {ledger['consensus']} with {ledger['num_verifiers']} verifiers; "
          "ledger: `python -m ccfl_jax.ledger verify` on the run folder."
          if ledger["enabled"] else "No ledger and no vote: every sampled update aggregated.")
  lines = [vote, "",
           f"Updates: {v['updates']} submitted, {v['accepted']} accepted, {v['rejected']} rejected."]
  if a["kind"] != "none" and a["num_malicious"]:
    lines.append(f"Attack {a['kind']} by {a['num_malicious']} hospital(s): "
                 f"{v['malicious_rejected']}/{v['malicious_updates']} malicious updates rejected "
                 f"({_fmt(v['malicious_rejected_rate'])}), {v['honest_rejected']}/"
                 f"{v['honest_updates']} honest ones ({_fmt(v['honest_rejected_rate'])}).")
  else:
    lines.append(f"No attack; honest updates rejected: {v['honest_rejected']}/{v['honest_updates']}.")
  return "\n".join(lines)


def _plottable(value) -> float:
  return math.nan if value is None else value


def plot_curves(path: pathlib.Path, records: list[dict]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rounds = [r["round"] for r in records]
  fig, (ax_metrics, ax_eps) = plt.subplots(1, 2, figsize=(10, 3.5))
  for name in METRIC_NAMES:
    ax_metrics.plot(rounds, [_plottable(r[name]) for r in records], label=name)
  ax_metrics.set(xlabel="round", title="test metrics", ylim=(0, 1.02))
  ax_metrics.legend(fontsize=8)
  ax_eps.plot(rounds, [_plottable(r["epsilon"]) for r in records])
  ax_eps.set(xlabel="round", title=f"ε at δ = {records[-1]['delta']:g}")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def write_outputs(run_dir: pathlib.Path, summary: dict, records: list[dict]) -> None:
  (run_dir / "summary.json").write_text(json_text(summary, indent=2))
  (run_dir / "summary.md").write_text(summary_markdown(summary))
  if records:
    plot_curves(run_dir / "curves.png", records)
