r"""COVID-19 probabilities from a trained run, per slice and per patient.

  python -m ccfl_jax.predict --run=runs/fed9 [--round=N] [--out=predictions.csv] PATH...

Each PATH is a DICOM series folder (or a folder of series folders: one patient per series
folder), a single DICOM file, or an image (PNG/JPG/...). The preprocessing is the run's own
(`config.dataset` in `<run>/config.json`: image size and lung window), never retyped here.

Per-patient verdict (`inference.patient_score`): the mean of the top-k slice probabilities,
with k = ceil(top_fraction x slices), top_fraction = 0.1 by default (the reasoning is in
ccfl_jax/inference.py). A single image is its own patient (k = 1). The verdict is COVID-19
when the score >= --threshold (0.5).

`--out` ending in .json writes {"slices": [...], "patients": [...]}; any other name writes the
slices as CSV there and the patients as CSV beside it (`<name>.patients.csv`).
"""
import csv
import dataclasses
import io
import math
import pathlib
import sys

import numpy as np
from absl import app, flags, logging

from ccfl_jax import audited, checkpointing, command_line, inference, models, reporting
from ccfl_jax.data import dicom, image_folder
from ccfl_jax.data.errors import ON_BAD_FILE_CHOICES, BadFilePolicy, DataError
from ccfl_jax.files import write_atomically

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")


@dataclasses.dataclass(frozen=True)
class SliceInput:
  """One preprocessed slice to predict, with where it came from."""
  image: np.ndarray  # (size, size, 1) float32 in [0, 1]
  patient: str
  path: str
  frame: int
  position: float


def _dicom_inputs(slices, patient: str) -> list[SliceInput]:
  return [SliceInput(s.image, patient, s.path, s.frame,
                     s.position if not math.isnan(s.position) else s.slice_location)
          for s in slices]


def read_inputs(path, params: dict, policy: BadFilePolicy) -> list[SliceInput]:
  """The slices of one PATH argument, preprocessed as the run was trained."""
  path = pathlib.Path(path)
  if not path.exists():
    raise DataError(path, "no such file or folder")
  if path.is_dir():
    folders = dicom.find_series_folders(path)
    if not folders:
      raise DataError(path, "no DICOM series in this folder")
    inputs = []
    for folder in folders:
      patient = folder.relative_to(path).as_posix() if folder != path else path.resolve().name
      files = dicom.series_files(folder, policy)
      inputs += _dicom_inputs(dicom.read_series(files, policy, dicom.hu_to_image(params)), patient)
    return inputs
  if path.suffix.lower() in IMAGE_SUFFIXES:
    image = image_folder.read_image(path, params["image_size"])
    return [SliceInput(image, path.stem, str(path), 0, math.nan)]
  slices = dicom.read_dicom_file(path, dicom.hu_to_image(params))
  return _dicom_inputs(sorted(slices, key=dicom.slice_order_key), path.stem)


def predictions(inputs: list[SliceInput], probabilities: np.ndarray, threshold: float,
                top_fraction: float) -> tuple[list[dict], list[dict]]:
  """(slice rows, patient rows) for the outputs."""
  slice_rows = [dict(patient=s.patient, path=s.path, frame=s.frame,
                     slice_position=None if math.isnan(s.position) else s.position,
                     prob_covid=float(p)) for s, p in zip(inputs, probabilities)]
  patient_rows = []
  for patient in dict.fromkeys(s.patient for s in inputs):  # first-seen order
    mine = [float(p) for s, p in zip(inputs, probabilities) if s.patient == patient]
    score = inference.patient_score(mine, top_fraction)
    patient_rows.append(dict(
        patient=patient, slices=len(mine), top_k=inference.top_k(len(mine), top_fraction),
        score=score, max_slice_prob=max(mine),
        verdict="COVID-19" if score >= threshold else "not COVID-19"))
  return slice_rows, patient_rows


def write_outputs(out, slice_rows: list[dict], patient_rows: list[dict], about: dict) -> list:
  """Writes JSON (one file) or CSV (slices + `<name>.patients.csv`); returns the paths."""
  out = pathlib.Path(out)
  if out.suffix.lower() == ".json":
    write_atomically(out, reporting.json_text(dict(about, slices=slice_rows,
                                                   patients=patient_rows), indent=2))
    return [out]
  patients_path = out.with_name(out.stem + ".patients.csv")
  for path, rows in ((out, slice_rows), (patients_path, patient_rows)):
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, text.getvalue())
  return [out, patients_path]


def run_predictions(run_dir, paths, round_=None, threshold: float = 0.5,
                    top_fraction: float = inference.DEFAULT_TOP_FRACTION,
                    on_bad_file: str = "error", verify: bool = True):
  """(slice rows, patient rows, about) for `paths` with the run's model and preprocessing
  (the checkpoint verified against the run's ledger unless verify=False)."""
  inference.check_decision_rule(threshold, top_fraction)
  # The inputs first (a mistyped path fails before the model is verified and restored),
  # preprocessed by the run's config.json, which load_run then checks against the ledger.
  preprocessing = dicom.preprocessing_params(checkpointing.read_config(run_dir).dataset)
  policy = BadFilePolicy(on_bad_file)
  inputs = [s for path in paths for s in read_inputs(path, preprocessing, policy)]
  if not inputs:
    raise DataError(", ".join(map(str, paths)), "no readable slices to predict")
  config, params, rounds_done = audited.load_run(run_dir, round_, verify)
  if dicom.preprocessing_params(config.dataset) != preprocessing:  # config.json just replaced
    raise DataError(run_dir, "config.json changed while predicting; run predict again")
  probabilities = inference.covid_probabilities(models.from_config(config), params,
                                                np.stack([s.image for s in inputs]),
                                                config.eval_batch_size)
  slice_rows, patient_rows = predictions(inputs, probabilities, threshold, top_fraction)
  about = dict(run=str(run_dir), round=rounds_done, model=config.model.name,
               trained_on=inference.trained_on(config), notice=inference.NOTICE,
               checkpoint=audited.verification(verify),
               preprocessing=preprocessing, threshold=threshold,
               patient_rule=inference.patient_rule(top_fraction),
               skipped=[dataclasses.asdict(s) for s in policy.skipped])
  return slice_rows, patient_rows, about


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  f = flags.FLAGS
  try:
    slice_rows, patient_rows, about = run_predictions(
        f.run, f.paths, f.round, f.threshold, f.top_fraction, f.on_bad_file,
        verify=not f.no_verify)
  except (DataError, ValueError, FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  print(f"run {about['run']} round {about['round']}: {about['trained_on']}")
  print(inference.NOTICE)
  print(about["checkpoint"])
  if f.slices:
    print(f"{'patient':<24} {'slice':>5}  {'position':>9}  prob_covid  path")
    for i, row in enumerate(slice_rows):
      position = "" if row["slice_position"] is None else f"{row['slice_position']:9.1f}"
      print(f"{row['patient']:<24} {i:>5}  {position:>9}  {row['prob_covid']:10.4f}  "
            f"{row['path']}")
  print(f"per patient ({about['patient_rule']}; verdict at score >= {about['threshold']}):")
  for row in patient_rows:
    print(f"  {row['patient']:<24} {row['slices']:>4} slices  score {row['score']:.4f}  "
          f"{row['verdict']}")
  if about["skipped"]:
    print(f"skipped {len(about['skipped'])} bad file(s):")
    for s in about["skipped"]:
      print(f"  {s['path']}: {s['problem']}")
  if f.out:
    written = write_outputs(f.out, slice_rows, patient_rows, about)
    print("wrote " + ", ".join(map(str, written)))


def define_flags():
  flags.DEFINE_string("run", None, "Run folder (runs/<run>, or results/<run> for a committed "
                      "one).", required=True)
  flags.DEFINE_integer("round", None, "Checkpoint round (default: the latest).")
  flags.DEFINE_float("threshold", 0.5, "Verdict threshold on the patient score.")
  flags.DEFINE_float("top_fraction", inference.DEFAULT_TOP_FRACTION,
                     "Patient score = mean of the top ceil(top_fraction x slices) slices.")
  flags.DEFINE_enum("on_bad_file", "error", ON_BAD_FILE_CHOICES,
                    "Bad input: stop, or skip and list.")
  flags.DEFINE_string("out", "", "Write predictions here (.json, or .csv + .patients.csv).")
  flags.DEFINE_multi_string("paths", [], "Inputs (also accepted as positional arguments).")
  flags.DEFINE_bool("slices", False, "Also print every slice's probability (default: patients).")
  flags.DEFINE_bool("no_verify", False, "Load the checkpoint without checking it and "
                    "config.json against the run's ledger (a run kept without a ledger).")


def cli():
  """`python -m ccfl_jax.predict`: flags, then PATH... as positional arguments."""
  define_flags()

  def with_positional_paths(argv):
    flags.FLAGS.paths = list(flags.FLAGS.paths) + list(argv[1:])
    if not flags.FLAGS.paths:
      raise app.UsageError("give at least one PATH (DICOM folder, DICOM file or image)")
    main(argv)

  command_line.describe_as_main(__name__)
  command_line.run(with_positional_paths)


if __name__ == "__main__":
  cli()
