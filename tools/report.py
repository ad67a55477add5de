r"""results/REPORT.md from the committed results files alone (nothing is retrained).

  python tools/report.py [--results=results] [--out=results/REPORT.md]

One section per experiment: the question, how it was made (the tool's command, config,
seeds, as its results file states them), its table or figure, and what it shows — every
number in the text is read from a results file here, none typed. A results file a section
needs that is missing or unreadable stops the tool with one line naming it (a report that
silently drops an experiment would read as if it had none).
"""
import json
import pathlib
import re
import statistics
import sys
from typing import Callable, NamedTuple

from absl import app, flags



class MissingResult(Exception):
  """A results file a section needs is absent or unreadable."""


class Section(NamedTuple):
  name: str  # what --not_run names
  title: str
  question: str
  source: str  # the results .md the section quotes (its tool's own write-up)
  figure: str | None  # a PNG beside it, or None
  findings: Callable[[pathlib.Path], list[str]]  # results dir -> sentences (numbers read)
  command: str | None = None  # what made it, where its results file does not quote it first


def read_json(results: pathlib.Path, name: str):
  try:
    return json.loads((results / name).read_text())
  except (OSError, ValueError) as error:
    raise MissingResult(f"{results / name}: {error}") from None


def read_text(results: pathlib.Path, name: str) -> str:
  try:
    return (results / name).read_text()
  except OSError as error:
    raise MissingResult(f"{results / name}: {error}") from None


def first_table(markdown: str) -> list[str]:
  """The first markdown table's lines (header, rule, rows)."""
  lines, table = markdown.splitlines(), []
  for line in lines:
    if line.startswith("|"):
      table.append(line)
    elif table:
      break
  return table


def table_rows(table: list[str]) -> list[dict]:
  header = [c.strip() for c in table[0].strip("|").split("|")]
  return [dict(zip(header, (c.strip() for c in row.strip("|").split("|")))) for row in table[2:]]


def command_line(markdown: str) -> str | None:
  """The first `python tools/...` or `python -m ccfl_jax...` command a results file quotes."""
  match = re.search(r"`(python (?:tools/|-m ccfl_jax)[^`]*)`", markdown)
  return match.group(1) if match else None


def _mean(values) -> float:
  values = [v for v in values if v is not None]
  return statistics.mean(values) if values else float("nan")


def runs_by_variant(runs: list[dict]):
  """A paper_experiments results file's runs grouped by variant (in order of appearance),
  and each variant's test accuracy over its last 5 rounds, the mean over its seeds."""
  by_variant = {}
  for r in runs:
    by_variant.setdefault(r["variant"], []).append(r)
  last = {v: _mean([_mean(r["accuracy"][-5:]) for r in rows]) for v, rows in by_variant.items()}
  return by_variant, last


# --- what each experiment shows, from its numbers ----------------------------------------


def fed9_findings(results):
  s = read_json(results, "fed9/summary.json")
  final, privacy = s["final"], s["privacy"]
  return [f"After {s['rounds']} rounds the 9 hospitals' model reaches test accuracy "
          f"{final['accuracy']:.3f} and AUC {final['auc']:.3f} on held-out synthetic patients, "
          f"at ε = {privacy['epsilon']:.4g} (δ = {privacy['delta']:g}).",
          "That ε is no meaningful guarantee: with every one of 9 hospitals sampled each round "
          "there is no amplification by sampling (see the privacy-utility section); the "
          "phantom is easy, so accuracy says little about real CT (next sections)."]


def ucsd_findings(results):
  runs = read_json(results, "ucsd_pretrained.json")
  runs = runs["runs"] if isinstance(runs, dict) else runs
  auc = lambda recipe: [r["slice"]["auc"] for r in runs if r["recipe"] == recipe]
  fed9, central = auc("fed9"), auc("central")
  return [f"On real CT (UCSD COVID-CT val split), the ImageNet-pretrained EfficientNet-Lite0 "
          f"reaches slice AUC {_mean(fed9):.3f} over {len(fed9)} seeds with 9 hospitals and "
          f"{_mean(central):.3f} over {len(central)} seeds centralized, against the published "
          "0.94 of a centralized DenseNet-169 with self-supervised pretraining at full "
          "resolution.",
          "What closes the gap is not established: a learning-rate schedule across rounds did "
          "not help (the one-cycle rows), and 224 px, the pretrained net's own size, has not "
          "been run on this CPU; the table lists every recipe tried, the misses included."]


def curves_findings(name: str, reference: str):
  def findings(results):
    by_variant, last = runs_by_variant(read_json(results, f"{name}.json"))
    best, worst = max(last, key=last.get), min(last, key=last.get)
    seeds = sorted({len(rows) for rows in by_variant.values()})
    return [f"Mean test accuracy over the last 5 rounds ranges from {last[worst]:.3f} "
            f"({worst}) to {last[best]:.3f} ({best}), {'/'.join(map(str, seeds))} seed(s) each.",
            f"The paper ({reference}) reports its curves on real CT without seeds or spread; "
            "ours are on the synthetic phantom, so only the ordering is comparable."]
  return findings


def privacy_findings(results):
  rows = table_rows(first_table(read_text(results, "privacy_sweep.md")))
  good = [r for r in rows if float(r["accuracy"]) >= 0.9]
  loosest = min(good, key=lambda r: float(r["ε"]) if r["ε"] != "inf" else float("inf"))
  return [f"Accuracy stays >= 0.9 up to σ = {loosest['σ']}, where ε = {loosest['ε']}; at the "
          f"largest σ tried ({rows[-1]['σ']}, ε = {rows[-1]['ε']}) accuracy is "
          f"{rows[-1]['accuracy']}.",
          "The paper reports DP without an (ε, δ); with 9 hospitals, client-level DP costs "
          "either the model or any meaningful ε: it needs many hospitals per round."]


def privacy_at_scale_findings(results):
  by_variant, last = runs_by_variant(read_json(results, "privacy_at_scale.json"))
  reference = next(v for v in by_variant if "non-private" in v)
  lines = []
  for variant, rows in by_variant.items():
    if variant != reference:
      gap = 100 * (last[reference] - last[variant])
      epsilon = "inf" if rows[0]["epsilon"] is None else f"{rows[0]['epsilon']:.3g}"
      lines.append(f"{variant} (ε = {epsilon}) ends {gap:.1f} points below the "
                   f"non-private {last[reference]:.3f} (last-5-round accuracy, {len(rows)} "
                   f"seed(s)): the 3-point target is {'met' if gap <= 3 else 'missed'}.")
  return lines + ["Client-level DP with a single-digit ε needs both many hospitals per round "
                  "and a model small enough for σS√d/m_t to stay near the update's size."]


def precision_findings(results):
  by_variant, last = runs_by_variant(read_json(results, "precision.json"))
  round_s = {v: _mean([statistics.median(r["round_seconds"][1:]) for r in rows])
             for v, rows in by_variant.items()}
  seeds = "/".join(str(len(rows)) for rows in by_variant.values())
  return [f"bfloat16 local training ends at {last['bfloat16']:.3f} last-5-round accuracy "
          f"against float32's {last['float32']:.3f} ({seeds} seeds); its rounds take "
          f"{round_s['bfloat16'] / round_s['float32']:.2f}x as long on this CPU, which has no "
          "fast bfloat16 path.",
          "The switch is for accelerators; its speed there has not been measured here."]


def robustness_findings(results):
  grid = read_json(results, "robustness.json")["grid"]
  clean = grid["none"]["none"]["accuracy"]
  best = {attack: max(cells.items(), key=lambda item: item[1]["accuracy"])
          for attack, cells in grid.items() if attack != "none"}
  drop = {attack: clean - cell["accuracy"] for attack, (_, cell) in best.items()}
  worst = max(drop, key=drop.get)
  backdoor = min((cell.get("backdoor_success", 1.0), name)
                 for name, cell in grid.get("backdoor", {}).items())
  lines = [f"Without attack or defence accuracy is {clean:.3f}; against {len(best)} attacks the "
           f"best defence of each loses at most {drop[worst] * 100:.1f} points ({worst}, best "
           f"defence {best[worst][0]})."]
  if grid.get("backdoor"):
    lines.append(f"The backdoor's lowest success rate under any defence is {backdoor[0]:.1%} "
                 f"({backdoor[1]}); the paper tests no attack of this kind.")
  return lines


def table3_findings(results):
  data = read_json(results, "table3.json")
  records = data["records"]
  by_model = {}
  for r in records:
    by_model.setdefault(r["model"], []).append(r)
  auc = {m: _mean([r["auc"] for r in rows]) for m, rows in by_model.items()}
  best = max(auc, key=auc.get)
  return [f"{len(by_model)} models trained alike on the UCSD train split; the best val AUC is "
          f"{auc[best]:.3f} ({best}).",
          "Small widths and sizes on this CPU (the setup line above), so the ranking, not the "
          "level, is what compares with the paper's Table III."]


SECTIONS = (
    Section("fed9", "The main job: 9 hospitals, DP, the MAE vote (phantom)",
            "Does the project's main job train, and what does its privacy guarantee mean?",
            "fed9/summary.md", "fed9/curves.png", fed9_findings,
            "python -m ccfl_jax.main --config=configs/fed9.py --config.results_dir=results"),
    Section("table3", "Table III: the model zoo on real CT",
            "How do the paper's CNN baselines and IV3* compare when trained alike?",
            "table3.md", None, table3_findings),
    Section("ucsd_pretrained", "Pretrained models on real CT (UCSD COVID-CT)",
            "Can federated fine-tuning of a pretrained model read real CT?",
            "ucsd_pretrained.md", None, ucsd_findings),
    Section("fed_vs_central", "Federated vs centralized (Fig. 9)",
            "What does federation cost against one site holding all the data, iid and non-iid?",
            "fed_vs_central.md", "fed_vs_central.png",
            curves_findings("fed_vs_central", "Fig. 9")),
    Section("providers", "Number of providers (Figs. 10 and 11)",
            "How do 3, 5, 7 and 9 hospitals sharing the same data train?",
            "providers.md", "providers.png", curves_findings("providers", "Figs. 10 and 11")),
    Section("privacy_sweep", "Privacy-utility (Gaussian, central)",
            "What accuracy does each noise multiplier leave, at what ε?",
            "privacy_sweep.md", None, privacy_findings),
    Section("privacy_at_scale", "Client-level DP at 1,000 hospitals",
            "What does a meaningful ε (≈ 9 at δ 1e-6) cost with 100 of 1,000 hospitals a round?",
            "privacy_at_scale.md", "privacy_at_scale.png", privacy_at_scale_findings),
    Section("precision", "Mixed precision: bfloat16 local training",
            "What does bfloat16 local training change in accuracy and in time per round?",
            "precision.md", "precision.png", precision_findings),
    Section("robustness", "Robustness: strong poisoning attacks vs defences",
            "Which defence keeps the model under ALIE, IPM, min-max/min-sum and a backdoor?",
            "robustness.md", "robustness.png", robustness_findings),
)


def section_lines(results: pathlib.Path, section: Section) -> list[str]:
  markdown = read_text(results, section.source)
  lines = [f"## {section.title}", "", f"**Question.** {section.question}", ""]
  command = section.command or command_line(markdown)
  lines += [f"**Made by** `{command}`; full write-up: [{section.source}]({section.source})."
            if command else f"**Full write-up:** [{section.source}]({section.source}).", ""]
  table = first_table(markdown)
  if table:
    lines += table + [""]
  if section.figure:
    if not (results / section.figure).exists():
      raise MissingResult(f"{results / section.figure}: missing (the section's figure)")
    lines += [f"![{section.title}]({section.figure})", ""]
  try:
    findings = section.findings(results)
  except (KeyError, IndexError, TypeError, ValueError) as error:
    raise MissingResult(f"{results / section.source}: its numbers are not in the form the "
                        f"report reads ({type(error).__name__}: {error})") from None
  return lines + ["**What it shows.** " + " ".join(findings), ""]


NOT_RUN_COMMANDS = {"fed_vs_central": "python tools/paper_experiments.py --experiment=fed_vs_central",
                    "providers": "python tools/paper_experiments.py --experiment=providers",
                    "privacy_at_scale": "python tools/paper_experiments.py "
                                        "--experiment=privacy_at_scale",
                    "precision": "python tools/paper_experiments.py --experiment=precision"}


def not_run_lines(section: Section) -> list[str]:
  command = NOT_RUN_COMMANDS.get(section.name, "its tool (see the README's tools table)")
  return [f"## {section.title}", "", f"**Question.** {section.question}", "",
          f"**Not run yet** (`--not_run={section.name}`): `{section.source}` is not in the "
          f"results. It is made by `{command}`.", ""]


def report(results: pathlib.Path, not_run: tuple[str, ...] = ()) -> str:
  unknown = sorted(set(not_run) - {s.name for s in SECTIONS})
  if unknown:
    raise MissingResult(f"--not_run: unknown section(s) {', '.join(unknown)}; known: "
                        + ", ".join(s.name for s in SECTIONS))
  lines = ["# ccfl_jax: the paper's experiments, reproduced", "",
           "Regenerated by `python tools/report.py"
           + (f" --not_run={','.join(not_run)}" if not_run else "")
           + "` from the results files in this folder (nothing retrained); each section "
           "links the file it quotes.", ""]
  for section in SECTIONS:
    lines += (not_run_lines(section) if section.name in not_run
              else section_lines(results, section))
  return "\n".join(lines)


def define_flags():
  flags.DEFINE_string("results", "results", "The results folder the report reads.")
  flags.DEFINE_string("out", "", "Where REPORT.md goes (default: <results>/REPORT.md).")
  flags.DEFINE_list("not_run", [], "Sections whose experiment has not been run: the report "
                    "says so instead of failing on their missing results.")


def main(argv):
  del argv
  results = pathlib.Path(flags.FLAGS.results)
  out = pathlib.Path(flags.FLAGS.out or results / "REPORT.md")
  try:
    text = report(results, tuple(flags.FLAGS.not_run))
  except MissingResult as error:
    sys.exit(f"error: {error}")
  out.write_text(text)
  print(f"wrote {out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
