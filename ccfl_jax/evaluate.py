r"""Metrics of a trained run's global model on any labelled dataset.

  ccfl-evaluate --run=runs/fed9 --data=image_folder:../shared/data/ucsd_covid_ct \
      [--split=val] [--round=N] [--threshold=0.5] [--bootstrap=1000] [--bootstrap_seed=0] \
      [--out=metrics.json]

`--data=<kind>:<path>`, kind one of the dataset registry's names (dicom, image_folder, cc19,
phantom). The data is preprocessed as the run was trained (`config.dataset` of the run: image
size, lung window); only the dataset's name and path change. Prints and writes (JSON; default
`<run>/evaluations/<kind>-<folder>[-<split>]-round<N>.json`) precision, sensitivity,
specificity, accuracy, F1, AUC and the confusion matrix, per slice and per patient (the patient
score is `inference.patient_score`; a patient is positive when any of its slices is); with each,
a 95% interval for AUC from `--bootstrap` resamples of the patients (a patient's slices go
together; seeded by `--bootstrap_seed`; 0 resamples = none) and the specificity at sensitivity
0.95 with its threshold (`metrics.bootstrap_auc`, `metrics.specificity_at_sensitivity`).
"""
import dataclasses
import pathlib
import sys

import numpy as np
from absl import app, flags, logging

from ccfl_jax import audited, command_line, inference, metrics, models, reporting
from ccfl_jax.data import datasets
from ccfl_jax.data.errors import ON_BAD_FILE_CHOICES, DataError
from ccfl_jax.data.real_slices import loader_warnings, skipped_files
from ccfl_jax.files import write_atomically

METRIC_ORDER = ("precision", "sensitivity", "specificity", "accuracy", "f1", "auc")


def parse_data_spec(spec: str) -> tuple[str, str]:
  """'kind:path' -> (kind, path); the path may itself contain ':'."""
  kind, sep, path = spec.partition(":")
  if not sep or kind not in datasets.dataset_names():
    raise ValueError(f"--data={spec!r}: expected <kind>:<path> with kind one of "
                     f"{', '.join(datasets.dataset_names())}")
  return kind, path


def evaluation_dataset_config(run_config, kind: str, path: str, on_bad_file: str,
                              cache_dir: str = ""):
  """The run's dataset block with another dataset's name and path (same preprocessing).

  Never the run's cache folders: a cache entry planted beside a run would otherwise decide
  what an auditor measures on their own data. The evaluator's own (`cache_dir`, "" = the
  user's default) is used."""
  dataset_config = run_config.dataset.copy_and_resolve_references()
  with dataset_config.unlocked():
    dataset_config.name = kind
    dataset_config.path = path
    dataset_config.on_bad_file = on_bad_file
    dataset_config.cache_dir = cache_dir
    dataset_config.tfds_data_dir = ""
  return dataset_config


def evaluate_run(run_dir, data_spec: str, round_=None, split: str = "", threshold: float = 0.5,
                 on_bad_file: str = "error",
                 top_fraction: float = inference.DEFAULT_TOP_FRACTION, verify: bool = True,
                 cache_dir: str = "", bootstrap: metrics.Bootstrap = metrics.Bootstrap()) -> dict:
  """Loads the run's model (verified against its ledger unless verify=False) and the dataset;
  returns the report (also what is written)."""
  kind, path = parse_data_spec(data_spec)
  inference.check_decision_rule(threshold, top_fraction)
  config, params, rounds_done = audited.load_run(run_dir, round_, verify)
  slices = datasets.load_dataset(
      evaluation_dataset_config(config, kind, path, on_bad_file, cache_dir), config.seed)
  skipped = skipped_files(slices)
  if split:
    if slices.split is None:
      raise DataError(path, f"--split={split}: this dataset has no split column")
    slices = slices.take(np.char.lower(slices.split.astype(str)) == split.lower())
    if not len(slices):
      raise DataError(path, f"--split={split}: no slices in this split")
  probabilities = inference.covid_probabilities(models.from_config(config), params,
                                                slices.images, config.eval_batch_size)
  patients, patient_labels, patient_scores = inference.patient_level(
      slices.patient_ids, slices.labels, probabilities, top_fraction)
  return dict(
      run=str(run_dir), round=rounds_done, model=config.model.name,
      trained_on=inference.trained_on(config), checkpoint=audited.verification(verify),
      data=data_spec,
      split=split or "all", threshold=threshold,
      preprocessing={k: config.dataset[k] for k in ("image_size", "window_level", "window_width")},
      slices=len(slices), patients=len(patient_labels),
      slice_metrics={**metrics.classification_metrics(slices.labels, probabilities, threshold),
                     **metrics.screening_metrics(slices.labels, probabilities, slices.patient_ids,
                                                 bootstrap)},
      patient_metrics={**metrics.classification_metrics(patient_labels, patient_scores, threshold),
                       **metrics.screening_metrics(patient_labels, patient_scores, patients,
                                                   bootstrap)},
      bootstrap=dict(dataclasses.asdict(bootstrap), resampled="patients",
                     interval="percentiles 2.5, 97.5"),
      patient_rule=inference.patient_rule(top_fraction),
      skipped=[dataclasses.asdict(s) for s in skipped], warnings=list(loader_warnings(slices)))


def default_output_path(run_dir, report: dict) -> pathlib.Path:
  kind, path = parse_data_spec(report["data"])
  name = pathlib.Path(path).resolve().name or kind
  split = "" if report["split"] == "all" else f"-{report['split']}"
  return pathlib.Path(run_dir) / "evaluations" / f"{kind}-{name}{split}-round{report['round']}.json"


def screening_line(level_metrics: dict, bootstrap: dict) -> str:
  """AUC's bootstrap interval and the specificity at sensitivity 0.95, in one line."""
  interval = level_metrics["auc_ci95"]
  used = (f"{level_metrics['auc_ci95_resamples']}/{bootstrap['resamples']} patient resamples "
          f"with both classes, seed {bootstrap['seed']}")
  auc = ("AUC 95% CI none (--bootstrap=0)" if not bootstrap["resamples"] else
         f"AUC 95% CI none ({used})" if interval is None else
         f"AUC 95% CI [{interval[0]:.4f}, {interval[1]:.4f}] ({used})")
  return (f"{auc}; specificity {level_metrics['specificity_at_sensitivity_95']:.4f} at "
          f"sensitivity >= 0.95 (threshold {level_metrics['threshold_at_sensitivity_95']:.4f})")


def format_report(report: dict) -> str:
  """A small table of the slice and patient metrics."""
  lines = [f"run {report['run']} round {report['round']}: {report['trained_on']}",
           inference.NOTICE, report["checkpoint"],
           f"evaluated on {report['data']} [{report['split']}]: {report['slices']} slices, "
           f"{report['patients']} patients",
           f"{'':10}" + "".join(f"{m:>13}" for m in METRIC_ORDER) + "   confusion [[TN, FP], [FN, TP]]"]
  for level in ("slice", "patient"):
    m = report[f"{level}_metrics"]
    lines.append(f"{level:10}" + "".join(f"{m[k]:13.4f}" for k in METRIC_ORDER) +
                 f"   {m['confusion_matrix']}")
  lines += [f"{level:10}{screening_line(report[f'{level}_metrics'], report['bootstrap'])}"
            for level in ("slice", "patient")]
  lines += [f"warning: {w}" for w in report["warnings"]]
  if report["skipped"]:
    lines.append(f"skipped {len(report['skipped'])} bad file(s): " +
                 "; ".join(f"{s['path']}: {s['problem']}" for s in report["skipped"]))
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  f = flags.FLAGS
  try:
    report = evaluate_run(f.run, f.data, f.round, f.split, f.threshold, f.on_bad_file,
                          verify=not f.no_verify, cache_dir=f.cache_dir,
                          bootstrap=metrics.Bootstrap(f.bootstrap, f.bootstrap_seed))
  except (DataError, ValueError, FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  print(format_report(report))
  out = pathlib.Path(f.out) if f.out else default_output_path(f.run, report)
  write_atomically(out, reporting.json_text(report, indent=2))
  print(f"wrote {out}")


def cli():
  flags.DEFINE_string("run", None, "Run folder (runs/<run>, or results/<run> for a committed "
                      "one).", required=True)
  flags.DEFINE_string("data", None, "<kind>:<path> of a labelled dataset.", required=True)
  flags.DEFINE_integer("round", None, "Checkpoint round (default: the latest).")
  flags.DEFINE_string("split", "", "Evaluate only this split of the dataset (e.g. val).")
  flags.DEFINE_float("threshold", 0.5, "Decision threshold on P(COVID-19).")
  flags.DEFINE_enum("on_bad_file", "error", ON_BAD_FILE_CHOICES,
                    "Bad input: stop, or skip and list.")
  flags.DEFINE_integer("bootstrap", metrics.Bootstrap.resamples, "Patient resamples for the "
                       "AUC 95% interval (0 = none).")
  flags.DEFINE_integer("bootstrap_seed", metrics.Bootstrap.seed, "Seed of the bootstrap's "
                       "numpy Generator (the same seed, the same interval).")
  flags.DEFINE_string("out", "", "Where to write the JSON report.")
  flags.DEFINE_bool("no_verify", False, "Load the checkpoint without checking it and "
                    "config.json against the run's ledger (a run kept without a ledger).")
  flags.DEFINE_string("cache_dir", "", "Preprocessing cache for the evaluation data; '' = "
                      "$XDG_CACHE_HOME/ccfl_jax (never the run's own).")
  command_line.describe_as_main(__name__)
  command_line.run(main)


if __name__ == "__main__":
  cli()
