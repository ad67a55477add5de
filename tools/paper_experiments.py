r"""The paper's federated experiments, several seeds each: providers (Figs. 10 and 11) and
federated vs centralized (Fig. 9).

  python tools/paper_experiments.py --experiment=providers [--seeds=0,1,2]
  python tools/paper_experiments.py --experiment=fed_vs_central [--seeds=0,1,2]
  python tools/paper_experiments.py --experiment=precision [--seeds=0,1,2]

providers: configs/fed9.py's recipe (phantom, small CNN, 40 rounds of 10 local Adam steps,
S = 2, sigma = 0.1) with 3, 5, 7 and 9 hospitals sharing the same 180 patients, every
hospital sampled every round; test accuracy and mean local loss per round.
fed_vs_central: the same model and the same total data and local compute per round,
trained by one site holding everything (90 local steps a round = 9 hospitals x 10), by 9
hospitals iid by patient, and by 9 hospitals with Dirichlet label skew (alpha 0.5 and 0.1);
no DP noise and no vote in any of them, so federation alone differs.
privacy_at_scale: configs/scale1000.py (1,000 hospitals, 100 a round) at sigma 0, 1 and 3.
precision: configs/fed9.py with local training in float32 and in bfloat16
(engine.compute_dtype); accuracy and the median round time, compile excluded.

Each (variant, seed) is one run (training.train_and_evaluate) under --runs_dir; a finished
run (its summary.json exists) is read, not retrained, so an interrupted sweep resumes.
Writes results/<experiment>.json (per run: final metrics, the per-round curves, epsilon,
wall time), .md (mean +- sd over seeds) and .png (accuracy and loss per round, the mean
over seeds with its range shaded).
"""
import json
import logging as python_logging
import pathlib
import statistics
import sys
import time
from typing import NamedTuple

from absl import app, flags, logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from ccfl_jax import training  # noqa: E402
from ccfl_jax.configuration import load_config_file  # noqa: E402
from ucsd_pretrained import mean_sd  # noqa: E402  (tools/ is on sys.path when run as a script)

REPO = pathlib.Path(__file__).resolve().parents[1]


class Variant(NamedTuple):
  label: str
  overrides: dict  # config field path -> value


def _hospitals(n: int) -> dict:
  return {"num_hospitals": n, "hospitals_per_round": n}


NO_NOISE_NO_VOTE = {"privacy.noise_multiplier": 0.0, "ledger.enabled": False}
EXPERIMENTS = {
    "providers": ("configs/fed9.py", "How does the number of hospitals sharing the same data "
                  "change accuracy and loss per round? (the paper's Figs. 10 and 11)",
                  tuple(Variant(f"{n} hospitals", _hospitals(n)) for n in (3, 5, 7, 9))),
    "fed_vs_central": ("configs/fed9.py", "Federated vs centralized on the same model, data "
                       "and local compute per round (the paper's Fig. 9)", (
        Variant("centralized (1 site, 90 steps/round)",
                {**_hospitals(1), **NO_NOISE_NO_VOTE, "local_steps": 90}),
        Variant("federated iid (9 hospitals)", {**_hospitals(9), **NO_NOISE_NO_VOTE}),
        Variant("federated Dirichlet 0.5", {**_hospitals(9), **NO_NOISE_NO_VOTE,
                                            "partition.kind": "dirichlet",
                                            "partition.alpha": 0.5}),
        Variant("federated Dirichlet 0.1", {**_hospitals(9), **NO_NOISE_NO_VOTE,
                                            "partition.kind": "dirichlet",
                                            "partition.alpha": 0.1}),
    )),
    "privacy_at_scale": ("configs/scale1000.py", "What does client-level DP with a "
                         "meaningful epsilon cost at 1,000 hospitals, 100 sampled a round? "
                         "(issue #12; target: within 3 points of non-private accuracy)", (
        Variant("non-private (σ 0)", {"privacy.noise_multiplier": 0.0}),
        Variant("σ 1", {"privacy.noise_multiplier": 1.0}),
        Variant("σ 3", {"privacy.noise_multiplier": 3.0}),
    )),
    "precision": ("configs/fed9.py", "What does bfloat16 local training change in accuracy "
                  "and in time per round? (engine.compute_dtype; issue #12, mixed precision)", (
        Variant("float32", {"engine.compute_dtype": "float32"}),
        Variant("bfloat16", {"engine.compute_dtype": "bfloat16"}),
    )),
}
# The variant the others are compared with, where an experiment has one.
REFERENCE = {"privacy_at_scale": "non-private (σ 0)", "precision": "float32"}
FINAL_METRICS = ("accuracy", "auc", "sensitivity", "specificity")
LAST_ROUNDS = 5  # the table's accuracy is also given as the mean of the last 5 rounds



def define_flags():
  flags.DEFINE_enum("experiment", "providers", list(EXPERIMENTS), "Which experiment.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (config.seed) of every variant.")
  flags.DEFINE_string("runs_dir", "runs/paper_experiments", "Where the run folders go.")
  flags.DEFINE_string("out_dir", "results", "Where <experiment>.{md,json,png} go.")
  flags.DEFINE_integer("num_rounds", 0, "Rounds per run (0: the config's).")
  flags.DEFINE_string("config", "", "Config file the variants override (default: the "
                      "experiment's, configs/fed9.py; configs/tiny.py for a smoke run).")
  flags.DEFINE_bool("report_only", False, "Train nothing: tabulate the finished runs only.")


def configured(config_path: str, variant: Variant, seed: int, num_rounds: int, run_name: str):
  config = load_config_file(REPO / config_path)
  config.update_from_flattened_dict({**variant.overrides, "seed": seed, "run_name": run_name})
  if num_rounds:
    config.num_rounds = num_rounds
  return config


def run_record(run_dir: pathlib.Path, variant: Variant, seed: int, wall_seconds) -> dict:
  """What the tables and plots need from one finished run folder."""
  summary = json.loads((run_dir / "summary.json").read_text())
  rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  return dict(variant=variant.label, seed=seed, wall_seconds=wall_seconds,
              final={k: summary["final"].get(k) for k in FINAL_METRICS},
              epsilon=summary["privacy"]["epsilon"],
              accuracy=[r["accuracy"] for r in rounds], loss=[r["local_loss"] for r in rounds],
              test_loss=[r["test_loss"] for r in rounds],
              round_seconds=[r["round_seconds"] for r in rounds])


def run_name_of(experiment: str, variant: Variant, seed: int) -> str:
  return f"{experiment}_{variant.label.split(' (')[0].replace(' ', '_')}_seed{seed}"


def run_one(experiment: str, variant: Variant, seed: int, runs_dir: pathlib.Path,
            num_rounds: int, config_path: str) -> dict:
  run_name = run_name_of(experiment, variant, seed)
  run_dir = runs_dir / run_name
  timing = runs_dir / f"{run_name}.wall_seconds.txt"
  if not (run_dir / "summary.json").exists():
    started = time.time()
    training.train_and_evaluate(configured(config_path, variant, seed, num_rounds, run_name),
                                run_dir)
    timing.write_text(f"{time.time() - started:.1f}\n")
  return run_record(run_dir, variant, seed,
                    float(timing.read_text()) if timing.exists() else None)


def _rounds_to(accuracy: list, level: float):
  return next((i + 1 for i, a in enumerate(accuracy) if a >= level), None)


def setup_line(config_path: str, variants) -> str:
  """What every variant shares and what each changes, read from the configs themselves."""
  base = load_config_file(REPO / config_path)
  changed = sorted({path for v in variants for path in v.overrides})
  return (f"Shared: {base.dataset.num_patients} patients x {base.dataset.slices_per_patient} "
          f"slices at {base.dataset.image_size} px, model {base.model.name}, K = "
          f"{base.local_steps} local {base.local_optimizer.name} steps (lr "
          f"{base.local_optimizer.learning_rate:g}) of batch {base.batch_size} per hospital and "
          f"round, S = {base.privacy.clip_norm:g}, σ = {base.privacy.noise_multiplier:g} unless "
          f"a variant sets it (the noise std σS is on the sum, divided by m_t: the fewer "
          f"hospitals, the more noise on the mean; and each hospital takes K steps, so fewer "
          f"hospitals also take fewer steps a round). Variants set: {', '.join(changed)}.")


def markdown(experiment: str, records: list[dict], seeds_asked: list[int],
             num_rounds: int = 0, config_path: str = "") -> str:
  default_config, question, variants = EXPERIMENTS[experiment]
  config_path = config_path or default_config
  rounds_flag = (f" --num_rounds={num_rounds}" if num_rounds else "") + (
      f" --config={config_path}" if config_path != default_config else "")
  delta = load_config_file(REPO / config_path).privacy.delta
  lines = [f"# {question.split('?')[0].split(' (')[0]}", "",
           f"Question: {question}.", "",
           f"Made by `python tools/paper_experiments.py --experiment={experiment} "
           f"--seeds={','.join(map(str, seeds_asked))}{rounds_flag}` from `{config_path}` "
           f"({num_rounds or 'the config' + chr(39) + 's'} rounds; phantom CT, "
           "held-out test patients); mean ± sd over the n seeds that finished. Curves: "
           f"`results/{experiment}.png`; per run and round: `results/{experiment}.json`.", "",
           setup_line(config_path, variants), "",
           f"| variant | n | final accuracy | accuracy, mean of the last {LAST_ROUNDS} rounds | "
           f"final AUC | sensitivity | specificity | rounds to 0.9 accuracy | ε (δ {delta:g}) | "
           "wall time (s) | median round (s), compile excluded |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for variant in variants:
    rows = [r for r in records if r["variant"] == variant.label]
    if not rows:
      continue
    last = [statistics.mean(r["accuracy"][-LAST_ROUNDS:]) for r in rows]
    reach = [_rounds_to(r["accuracy"], 0.9) for r in rows]
    eps = {("inf" if r["epsilon"] is None else f"{r['epsilon']:.4g}") for r in rows}
    lines.append(
        f"| {variant.label} | {len(rows)} | "
        + " | ".join([mean_sd([r["final"]["accuracy"] for r in rows]), mean_sd(last),
                      mean_sd([r["final"]["auc"] for r in rows]),
                      mean_sd([r["final"]["sensitivity"] for r in rows]),
                      mean_sd([r["final"]["specificity"] for r in rows]),
                      ", ".join("never" if x is None else str(x) for x in reach),
                      ", ".join(sorted(eps)),
                      mean_sd([r["wall_seconds"] for r in rows], 0),
                      _median_round(rows)]) + " |")
  return "\n".join(lines + _gaps(experiment, records, variants)) + "\n"


def _median_round(rows) -> str:
  """Median seconds of a round after the first (which compiles), mean ± sd over seeds;
  '-' for records made before round times were kept."""
  medians = [statistics.median(r["round_seconds"][1:]) for r in rows
             if len(r.get("round_seconds", ())) > 1]
  return mean_sd(medians, 3) if len(medians) == len(rows) else "-"


def _last_rounds_mean(rows) -> float:
  return statistics.mean(statistics.mean(r["accuracy"][-LAST_ROUNDS:]) for r in rows)


def _gaps(experiment: str, records: list[dict], variants) -> list[str]:
  """Lines comparing each variant's last-rounds accuracy with the experiment's reference."""
  reference = [r for r in records if r["variant"] == REFERENCE.get(experiment)]
  if not reference:
    return []
  lines = ["", f"Accuracy (mean of the last {LAST_ROUNDS} rounds, over seeds) against "
           f"{REFERENCE[experiment]}, {_last_rounds_mean(reference):.3f}:"]
  for variant in variants:
    rows = [r for r in records if r["variant"] == variant.label]
    if rows and variant.label != REFERENCE[experiment]:
      gap = 100 * (_last_rounds_mean(reference) - _last_rounds_mean(rows))
      epsilon = "inf" if rows[0]["epsilon"] is None else f"{rows[0]['epsilon']:.3g}"
      lines.append(f"- {variant.label}: {_last_rounds_mean(rows):.3f}, a gap of {gap:.1f} "
                   f"points (n = {len(rows)} seeds; ε {epsilon})")
  return lines


def plot(experiment: str, records: list[dict], path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  _, question, variants = EXPERIMENTS[experiment]
  figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=150)
  for variant in variants:
    rows = [r for r in records if r["variant"] == variant.label]
    if not rows:
      continue
    for axis, key in zip(axes, ("accuracy", "loss")):
      curves = np.array([r[key] for r in rows], dtype=float)
      rounds = np.arange(1, curves.shape[1] + 1)
      line, = axis.plot(rounds, curves.mean(0), marker="o", markersize=2.5,
                        label=f"{variant.label} (n={len(rows)})")
      axis.fill_between(rounds, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.15)
  axes[0].set_ylabel("test accuracy (held-out patients)")
  axes[1].set_ylabel("mean local training loss")
  for axis in axes:
    axis.set_xlabel("round")
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.grid(alpha=0.3)
  axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
  figure.suptitle(question.split(" (")[0], fontsize=10)
  figure.tight_layout()
  figure.savefig(path)
  plt.close(figure)


def main(argv):
  del argv
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  python_logging.getLogger("ccfl_jax").setLevel(python_logging.INFO)
  seeds = [int(s) for s in f.seeds]
  runs_dir = (REPO / f.runs_dir).resolve()
  runs_dir.mkdir(parents=True, exist_ok=True)
  out = REPO / f.out_dir / f.experiment
  out.parent.mkdir(parents=True, exist_ok=True)
  config_path = f.config or EXPERIMENTS[f.experiment][0]
  records = []
  for variant in EXPERIMENTS[f.experiment][2]:
    for seed in seeds:
      if f.report_only and not (runs_dir / run_name_of(f.experiment, variant, seed)
                                / "summary.json").exists():
        continue
      records.append(run_one(f.experiment, variant, seed, runs_dir, f.num_rounds, config_path))
      out.with_suffix(".json").write_text(json.dumps(records, indent=1) + "\n")
      out.with_suffix(".md").write_text(markdown(f.experiment, records, seeds, f.num_rounds,
                                                 config_path))
      plot(f.experiment, records, out.with_suffix(".png"))
      print(f"{variant.label} seed {seed}: final accuracy "
            f"{records[-1]['final']['accuracy']:.3f}", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
