r"""The strongest known poisoning attacks against the vote and the standard robust aggregators.

  python tools/robustness.py                       # the default grid, 1 seed, sigma 0
  python tools/robustness.py --seeds 0,1,2 --sigma 0.1 --out results/robustness_dp.md
  python tools/robustness.py --attacks none,alie --defences vote_checks,krum --rounds 20

Grid: attack (rows) x defence (columns), every cell one run of configs/attack9.py made small
(`small_config`: 16x16 phantom slices, fewer rounds, 5 local steps) with hospitals 0 and 1 of
9 malicious, all 9 sampled each round. Attacks (federated/attacks.py; the colluding ones
know only their own honest updates, attack.omniscient = False): none, sign_flip, alie
(Baruch et al.'s z_max), ipm with epsilon 0.1 and 10, min_max and min_sum (-std
perturbation), backdoor (a 3x3 trigger on half the attackers' slices, relabelled COVID).
Defences: `none` (the mean, no vote), `vote` (the paper's eq. 15 MAE vote alone, the ledger
on), `vote_checks` (configs/attack9.py's vote with its direction and magnitude checks), and
the robust rules of federated/aggregation.py without the vote: median, trimmed_mean (beta
0.25: 2 of 9 trimmed at each end), krum and multi_krum (f = 2), norm_bound (the bound
NORM_BOUND, below the clip norm S).

The no-attack row runs attack.kind = backdoor with 0 malicious hospitals: training is the
no-attack one (nobody poisons), and it measures how often a clean model calls a triggered
non-COVID test slice COVID (the backdoor's base rate).

Per cell: test accuracy and AUC averaged over the last LAST_ROUNDS rounds (one round's
accuracy at threshold 0.5 swings by points), the malicious and honest updates excluded
(rejected by the vote, or not selected by krum / multi_krum; the coordinate-wise rules and
the mean exclude no update as a whole: "-"), and, for the backdoor, its success rate (last
rounds' mean). Writes <out>.md, <out>.json and a heat map <out>.png; run folders go to
<run_root>/<attack>/<defence>/seed<seed>/ (deleted first).

Speed, all of it bookkeeping that leaves the numbers alone: on a 2-core CPU a run's time is
mostly compiling its round (every cell traces a different one), so the grid maps hospitals
with `vmap` (engine.hospital_axis: about half the compile time of `unroll` at 16 px, and a
similar round time), and generates each seed's phantom once per process (data/phantom.py is
deterministic in the seed; 10-15 s a run otherwise), checking at the end that no run changed
the shared copy.
"""
import hashlib
import json
import logging
import pathlib
import platform
import shutil
import time

import jax
import numpy as np
from absl import app, flags

from ccfl_jax import configuration, training
from ccfl_jax.data import datasets

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MALICIOUS = 2  # configs/attack9.py: hospitals 0 and 1
LAST_ROUNDS = training.LAST_ROUNDS
NORM_BOUND = 1.0  # norm_bound defence: about the honest updates' median norm here (measured
# 0.8-1.4 over the rounds of a 16 px run), half the clip norm S = 2
TRIGGER_SIZE = 3  # of 16 pixels

ATTACKS = {  # name: config.attack overrides
    "none": dict(kind="backdoor", num_malicious=0, trigger_size=TRIGGER_SIZE),
    "sign_flip": dict(kind="sign_flip"),
    "alie": dict(kind="alie"),
    "ipm_0.1": dict(kind="ipm", epsilon=0.1),
    "ipm_10": dict(kind="ipm", epsilon=10.0),
    "min_max": dict(kind="min_max"),
    "min_sum": dict(kind="min_sum"),
    "backdoor": dict(kind="backdoor", trigger_size=TRIGGER_SIZE),
    # Not in the default grid: the colluders know every benign update of the round.
    "alie_omniscient": dict(kind="alie", omniscient=True),
    "ipm_10_omniscient": dict(kind="ipm", epsilon=10.0, omniscient=True),
    "min_max_omniscient": dict(kind="min_max", omniscient=True),
    "min_sum_omniscient": dict(kind="min_sum", omniscient=True),
}
DEFAULT_ATTACKS = ("none", "sign_flip", "alie", "ipm_0.1", "ipm_10", "min_max", "min_sum",
                   "backdoor")  # the grid
DEFENCES = {  # name: (ledger and vote on, update checks on, config.aggregation overrides)
    "none": (False, False, dict(rule="mean")),
    "vote": (True, False, dict(rule="mean")),
    "vote_checks": (True, True, dict(rule="mean")),
    "median": (False, False, dict(rule="median")),
    "trimmed_mean": (False, False, dict(rule="trimmed_mean", beta=0.25)),
    "krum": (False, False, dict(rule="krum", f=MALICIOUS)),
    "multi_krum": (False, False, dict(rule="multi_krum", f=MALICIOUS)),
    "norm_bound": (False, False, dict(rule="norm_bound", norm_bound=NORM_BOUND)),
}

flags.DEFINE_string("attacks", ",".join(DEFAULT_ATTACKS),
                    f"Comma-separated rows; any of {', '.join(ATTACKS)}.")
flags.DEFINE_string("defences", ",".join(DEFENCES),
                    f"Comma-separated columns; any of {', '.join(DEFENCES)}.")
flags.DEFINE_string("seeds", "0", "Comma-separated seeds; every cell is repeated for each.")
flags.DEFINE_float("sigma", 0.0, "privacy.noise_multiplier of every run (attack9/fed9: 0.1).")
flags.DEFINE_integer("rounds", 15, "Federated rounds per run.")
flags.DEFINE_integer("image_size", 16, "Phantom slice side in pixels (attack9: 32).")
flags.DEFINE_integer("local_steps", 5, "Local optimizer steps per round (attack9: 10).")
flags.DEFINE_string("hospital_axis", "vmap", "engine.hospital_axis of every run (see above).")
flags.DEFINE_string("out", str(REPO_ROOT / "results" / "robustness.md"),
                    "Markdown report; .json and .png beside it.")
flags.DEFINE_string("from_json", "", "Render <out>.md and .png from this saved .json; no runs.")
flags.DEFINE_string("run_root", str(REPO_ROOT / "runs" / "robustness"),
                    "Run folders: <run_root>/<attack>/<defence>/seed<seed>/ (deleted first).")


def small_config(attack: str, defence: str, seed: int, sigma: float, rounds: int,
                 image_size: int, local_steps: int, hospital_axis: str = "vmap"):
  """configs/attack9.py, small, under one attack and one defence."""
  c = configuration.load_config_file(REPO_ROOT / "configs" / "attack9.py")
  c.run_name = f"{attack}-{defence}"
  c.seed, c.num_rounds, c.local_steps = seed, rounds, local_steps
  c.engine.hospital_axis = hospital_axis
  c.dataset.image_size = image_size
  c.privacy.noise_multiplier = sigma
  c.checkpoint_every = rounds
  c.metrics_csv = False
  c.attack.num_malicious = MALICIOUS
  for key, value in ATTACKS[attack].items():
    c.attack[key] = value
  vote, checks, rule = DEFENCES[defence]
  c.ledger.enabled = vote
  if not checks:
    c.ledger.consensus.direction_k = 0.0
    c.ledger.consensus.max_norm_ratio = 0.0
  for key, value in rule.items():
    c.aggregation[key] = value
  return c


_LOAD_DATASET = datasets.load_dataset
_DATASETS = {}  # (dataset block JSON, seed) -> (CTSlices, sha256 of its arrays when made)


def _digest(slices) -> str:
  digest = hashlib.sha256()
  for array in (slices.images, slices.labels):
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


def load_dataset_once(dataset_config, seed: int):
  """datasets.load_dataset, memoised per (dataset block, seed) for this process."""
  key = (dataset_config.to_json(sort_keys=True), seed)
  if key not in _DATASETS:
    slices = _LOAD_DATASET(dataset_config, seed)
    _DATASETS[key] = (slices, _digest(slices))
  return _DATASETS[key][0]


def check_datasets_unchanged() -> None:
  for slices, digest in _DATASETS.values():
    if _digest(slices) != digest:
      raise RuntimeError("a run changed the shared phantom: rerun without the cache")


def run_cell(run_dir: pathlib.Path, config) -> dict:
  """One run -> its cell: last rounds' accuracy / AUC, excluded updates, backdoor success."""
  shutil.rmtree(run_dir, ignore_errors=True)  # a leftover run folder would be resumed
  started = time.time()
  summary = training.train_and_evaluate(config, run_dir)
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  last = records[-LAST_ROUNDS:]
  malicious = [r["malicious_accepted"] + r["malicious_rejected"] for r in records]
  honest = [len(r["sampled"]) - m for r, m in zip(records, malicious)]
  cell = dict(accuracy=float(np.mean([r["accuracy"] for r in last])),
              auc=float(np.mean([r["auc"] for r in last])),
              final_accuracy=records[-1]["accuracy"], malicious_updates=sum(malicious),
              honest_updates=sum(honest), seconds=time.time() - started,
              epsilon=summary["privacy"]["epsilon"])
  vote, rule = config.ledger.enabled, config.aggregation.rule
  if vote or rule in ("krum", "multi_krum"):
    if rule in ("krum", "multi_krum"):  # excluded = not aggregated (the vote is off here)
      cell["malicious_excluded"] = cell["malicious_updates"] - sum(
          r["malicious_aggregated"] for r in records)
      cell["honest_excluded"] = cell["honest_updates"] - sum(r["honest_aggregated"]
                                                             for r in records)
    else:
      cell["malicious_excluded"] = sum(r["malicious_rejected"] for r in records)
      cell["honest_excluded"] = sum(r["honest_rejected"] for r in records)
  if "backdoor_success" in records[-1]:
    cell["backdoor_success"] = float(np.mean([r["backdoor_success"] for r in last]))
  return cell


def combine(cells: list[dict]) -> dict:
  """One grid cell over seeds: counts summed, metrics averaged, per-seed kept."""
  out = dict(seeds=len(cells), per_seed=cells,
             **{k: float(np.mean([c[k] for c in cells]))
                for k in ("accuracy", "auc", "final_accuracy", "seconds")})
  for k in ("malicious_updates", "honest_updates", "malicious_excluded", "honest_excluded"):
    if k in cells[0]:
      out[k] = sum(c[k] for c in cells)
  for kind in ("malicious", "honest"):
    if f"{kind}_excluded" in out and out[f"{kind}_updates"]:
      out[f"{kind}_excluded_rate"] = out[f"{kind}_excluded"] / out[f"{kind}_updates"]
  if "backdoor_success" in cells[0]:
    out["backdoor_success"] = float(np.mean([c["backdoor_success"] for c in cells]))
  return out


def _pct(rate) -> str:
  return "-" if rate is None else f"{100 * rate:.1f}%"


def grid_table(grid: dict, attacks, defences, text) -> list[str]:
  lines = ["| attack \\ defence | " + " | ".join(defences) + " |",
           "|---|" + "---|" * len(defences)]
  for a in attacks:
    lines.append(f"| {a} | " + " | ".join(text(grid[a][d], a, d) if d in grid[a] else "n/a"
                                          for d in defences) + " |")
  return lines


def _misses(cell: dict, attack: str, base: float) -> list[str]:
  """The issue's targets this cell misses, each with by how much ([] = all met)."""
  misses = []
  if cell["accuracy"] < base - 0.02:
    misses.append(f"accuracy {100 * (cell['accuracy'] - base):+.1f} pt")
  if cell.get("honest_excluded_rate", 0.0) > 0.05:
    misses.append(f"honest excluded {_pct(cell['honest_excluded_rate'])}")
  if attack.startswith("backdoor") and cell["backdoor_success"] > 0.10:
    misses.append(f"backdoor success {_pct(cell['backdoor_success'])}")
  return misses


def targets(grid: dict, attacks, defences) -> list[str]:
  """Per attack, and per defence over all attacks, against the issue's targets.

  Baseline: no attack, no defence (the mean without the vote). A cell meets the accuracy
  target if it stays within 2 points of it (last rounds' mean), the honest target if it
  excludes <= 5% of honest updates (trivially so where it excludes none as a whole), the
  backdoor target if the backdoor succeeds on <= 10% of triggered non-COVID slices.
  """
  if "none" not in grid or "none" not in grid["none"]:
    return ["- (no `none` x `none` baseline in this grid: targets not evaluated)"]
  base = grid["none"]["none"]["accuracy"]
  attacked = [a for a in attacks if a != "none"]
  lines = [f"Baseline (no attack, no defence): accuracy {base:.3f} (last {LAST_ROUNDS} rounds' "
           f"mean).", "", "Per attack:", ""]
  for a in attacked:
    present = [d for d in defences if d in grid[a]]
    met = [d for d in present if not _misses(grid[a][d], a, base)]
    best = max(present, key=lambda d: grid[a][d]["accuracy"])
    c = grid[a][best]
    detail = (f"best accuracy under `{best}`: {c['accuracy']:.3f} "
              f"({100 * (c['accuracy'] - base):+.1f} pt vs. baseline), honest excluded "
              f"{_pct(c.get('honest_excluded_rate'))}")
    if a.startswith("backdoor"):
      detail += f", backdoor success {_pct(c['backdoor_success'])}"
    if met:
      lines.append(f"- {a}: MET by {', '.join(f'`{d}`' for d in met)}; {detail}.")
    else:
      lines.append(f"- {a}: MISSED by every defence; {detail}.")
  lines += ["", "Per defence, over the attacks (one defence for every attack is what a "
            "hospital network would deploy):", ""]
  for d in defences:
    cells = [(a, _misses(grid[a][d], a, base)) for a in attacked if d in grid[a]]
    met = [a for a, misses in cells if not misses]
    missed = [f"{a} ({', '.join(misses)})" for a, misses in cells if misses]
    lines.append(f"- `{d}`: meets {len(met)} of {len(cells)}"
                 + (f" ({', '.join(met)})" if met else "")
                 + (f"; misses {'; '.join(missed)}" if missed else "") + ".")
  return lines


def heat_map(path: pathlib.Path, grid: dict, attacks, defences, title: str) -> None:
  """Accuracy change vs. the no-attack, no-defence run (left) and the backdoor's success and
  malicious updates excluded (right), one cell per (attack, defence)."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  base = grid.get("none", {}).get("none", {}).get("accuracy")
  fig = Figure(figsize=(15, 0.55 * len(attacks) + 2.2), layout="constrained")
  left, right = fig.subplots(1, 2)
  delta = np.array([[100 * (grid[a][d]["accuracy"] - base) if d in grid[a] and base is not None
                     else np.nan for d in defences] for a in attacks])
  image = left.imshow(delta, cmap="RdBu", vmin=-20, vmax=20, aspect="auto")
  fig.colorbar(image, ax=left, label="accuracy vs. no attack, no defence (points)")
  excluded = np.array([[grid[a][d].get("backdoor_success" if a in ("backdoor", "none")
                                       else "malicious_excluded_rate", np.nan)
                        if d in grid[a] else np.nan for d in defences] for a in attacks])
  image = right.imshow(100 * excluded, cmap="viridis", vmin=0, vmax=100, aspect="auto")
  fig.colorbar(image, ax=right, label="% malicious excluded (backdoor / none rows: % success)")
  for ax, values, spec in ((left, delta, "{:+.1f}"), (right, 100 * excluded, "{:.0f}")):
    ax.set_xticks(range(len(defences)), defences, rotation=30, ha="right")
    ax.set_yticks(range(len(attacks)), attacks)
    ax.set_xlabel("defence")
    for i in range(len(attacks)):
      for j in range(len(defences)):
        if np.isfinite(values[i, j]):
          ax.text(j, i, spec.format(values[i, j]), ha="center", va="center", fontsize=8)
  left.set_ylabel("attack")
  left.set_title("accuracy change (last rounds' mean)")
  right.set_title("malicious updates excluded / backdoor success")
  fig.suptitle(title)
  fig.savefig(path, dpi=120)


def markdown(grid, attacks, defences, settings: dict, out: pathlib.Path, config, seconds,
             not_run) -> str:
  c = config
  base = grid.get("none", {}).get("none", {}).get("accuracy")

  def accuracy(cell, a, d):
    vs = "" if base is None or (a, d) == ("none", "none") else \
        f" ({100 * (cell['accuracy'] - base):+.1f})"
    return f"{cell['accuracy']:.3f}{vs}"

  def exclusion(cell, a, d):
    if "malicious_excluded_rate" not in cell and "honest_excluded_rate" not in cell:
      return "-"
    return f"{_pct(cell.get('malicious_excluded_rate'))} / {_pct(cell.get('honest_excluded_rate'))}"

  def backdoor(cell, a, d):
    return _pct(cell.get("backdoor_success")) if "backdoor_success" in cell else "-"

  seeds = ", ".join(str(seed) for seed in settings["seeds"])
  return "\n".join([
      "# Poisoning that fights back: attacks x defences (tools/robustness.py)", "",
      f"Command: `python tools/robustness.py --attacks {','.join(attacks)} --defences "
      f"{','.join(defences)} --seeds {','.join(str(x) for x in settings['seeds'])} --sigma "
      f"{settings['sigma']:g} --rounds {settings['rounds']} --image_size "
      f"{settings['image_size']} --local_steps {settings['local_steps']} --hospital_axis "
      f"{settings['hospital_axis']}`; heat map: [{out.with_suffix('.png').name}]"
      f"({out.with_suffix('.png').name}), numbers: {out.with_suffix('.json').name}.", "",
      f"Setting: configs/attack9.py made small: {c.num_hospitals} hospitals, all sampled each "
      f"round, {c.num_rounds} rounds, phantom CT {c.dataset.image_size}x{c.dataset.image_size} "
      f"({c.dataset.num_patients} patients), {c.model.name}, {c.local_steps} local steps, clip "
      f"S = {c.privacy.clip_norm}, sigma = {c.privacy.noise_multiplier:g}; hospitals 0 and 1 "
      f"malicious (2 of 9); seed(s) {seeds}. Vote (`vote`, `vote_checks`): "
      f"{c.ledger.num_verifiers} verifiers, {c.ledger.validation_size} validation slices, "
      f"gamma 0, k 4; `vote_checks` adds attack9's direction (2.5 MAD, cosine 0.2) and "
      f"magnitude (3x median norm) checks. Robust rules run without the vote. Colluding "
      f"attacks know only their own honest updates, but for the `_omniscient` rows (every "
      f"benign update of the round). Backdoor: a {TRIGGER_SIZE}x{TRIGGER_SIZE} trigger on "
      f"{c.attack.poison_fraction:g} of the attackers' slices, relabelled COVID.", "",
      f"## Test accuracy, mean of the last {LAST_ROUNDS} rounds (points vs. no attack, no "
      "defence)", "",
      *grid_table(grid, attacks, defences, accuracy), "",
      f"## AUC, mean of the last {LAST_ROUNDS} rounds", "",
      *grid_table(grid, attacks, defences, lambda cell, a, d: f"{cell['auc']:.3f}"), "",
      "## Updates excluded: malicious / honest (rejected by the vote or not selected by "
      "krum / multi_krum; - where a rule excludes no update as a whole)", "",
      *grid_table(grid, attacks, defences, exclusion), "",
      f"## Backdoor success (triggered non-COVID test slices called COVID, last {LAST_ROUNDS} "
      "rounds' mean; the `none` row is a clean model's base rate)", "",
      *grid_table(grid, [a for a in attacks if a in ("none", "backdoor")], defences, backdoor),
      "",
      "## The issue's targets", "",
      "Per attack, within 2 points of no attack (last rounds' mean), honest exclusions <= 5%, "
      "backdoor success <= 10%:", "",
      *targets(grid, attacks, defences), "",
      "## Not run here", "", *not_run, "",
      f"Total {seconds:.0f} s on {platform.node()} ({jax.device_count()} "
      f"{jax.default_backend()} device(s), shared); mean "
      f"{np.mean([grid[a][d]['seconds'] for a in grid for d in grid[a]]):.0f} s per run "
      "including compilation.", ""])


NOT_RUN = [
    "- 1 seed only where the issue asks 3: one seed's last-rounds accuracy moves by several "
    "points (results/attacks.md), so differences under ~3 points here are not resolved.",
    "- sigma at fed9's value (0.1) not run: rerun with `--sigma 0.1`.",
    "- UCSD (real CT) not run: only the phantom.",
    "- 3 of 9 malicious not run: only 2 of 9.",
    "- omniscient colluders not run (attack.omniscient = true); min_max / min_sum only with "
    "the -std perturbation.",
    "- fed9's full scale (32x32, 40 rounds, 10 local steps) not run: the grid is small so "
    "that it fits the 2-core machine.",
]


def run_grid(attacks, defences, settings: dict, run_root: pathlib.Path) -> tuple[dict, float]:
  sizes = [settings[k] for k in ("sigma", "rounds", "image_size", "local_steps",
                                 "hospital_axis")]
  datasets.load_dataset = load_dataset_once  # training.prepare_data calls it through the module
  started, grid = time.time(), {}
  for a in attacks:
    grid[a] = {}
    for d in defences:
      cells = [run_cell(run_root / a / d / f"seed{seed}", small_config(a, d, seed, *sizes))
               for seed in settings["seeds"]]
      grid[a][d] = cell = combine(cells)
      print(f"{a:10s} {d:13s} acc {cell['accuracy']:.3f} auc {cell['auc']:.3f} "
            f"excluded {_pct(cell.get('malicious_excluded_rate'))} / "
            f"{_pct(cell.get('honest_excluded_rate'))} backdoor "
            f"{_pct(cell.get('backdoor_success'))} {cell['seconds']:.0f} s "
            f"(total {time.time() - started:.0f} s)", flush=True)
  check_datasets_unchanged()
  return grid, time.time() - started


def not_run_lines(attacks, defences, settings: dict) -> list[str]:
  lines = list(NOT_RUN)
  if settings["sigma"] > 0:
    lines = [n for n in lines if "sigma at fed9" not in n]
  if len(settings["seeds"]) >= 3:
    lines = [n for n in lines if "1 seed only" not in n]
  if any(a.endswith("_omniscient") for a in attacks):
    lines = [n for n in lines if "omniscient colluders not run" not in n]
  for kind, chosen, every in (("defences", defences, DEFENCES),
                              ("attacks", attacks, DEFAULT_ATTACKS)):
    missing = [f"`{name}`" for name in every if name not in chosen]
    if missing:
      lines.insert(0, f"- {kind} of the issue's grid left out here (time): {', '.join(missing)}.")
  return lines


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  args = flags.FLAGS
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", force=True)
  out = pathlib.Path(args.out)
  if args.from_json:
    saved = json.loads(pathlib.Path(args.from_json).read_text())
    grid, settings, seconds = saved["grid"], saved["settings"], saved["seconds"]
    attacks, defences = list(grid), list(next(iter(grid.values())))
  else:
    attacks, defences = args.attacks.split(","), args.defences.split(",")
    unknown = [a for a in attacks if a not in ATTACKS] + [d for d in defences
                                                          if d not in DEFENCES]
    if unknown:
      raise app.UsageError(f"unknown attack or defence: {', '.join(unknown)}")
    settings = dict(seeds=[int(s) for s in args.seeds.split(",")], sigma=args.sigma,
                    rounds=args.rounds, image_size=args.image_size,
                    local_steps=args.local_steps, hospital_axis=args.hospital_axis)
    grid, seconds = run_grid(attacks, defences, settings, pathlib.Path(args.run_root))
    out.with_suffix(".json").write_text(json.dumps(dict(grid=grid, settings=settings,
                                                        seconds=seconds), indent=1))
  config = small_config("none", "vote_checks", settings["seeds"][0], settings["sigma"],
                        settings["rounds"], settings["image_size"], settings["local_steps"],
                        settings["hospital_axis"])
  out.write_text(markdown(grid, attacks, defences, settings, out, config, seconds,
                          not_run_lines(attacks, defences, settings)))
  heat_map(out.with_suffix(".png"), grid, attacks, defences,
           f"attacks x defences, 2 of 9 malicious, sigma {settings['sigma']:g}, seeds "
           f"{', '.join(str(x) for x in settings['seeds'])}")
  print(out.read_text())
  return 0


if __name__ == "__main__":
  app.run(main)
