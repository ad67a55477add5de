"""DICOM CT series -> Hounsfield units -> lung-windowed slices (`config.dataset.name = 'dicom'`).

`config.dataset.path` is a folder: one series, or a tree of per-patient series folders. A series
folder is any folder holding a DICOM-looking file (`.dcm`, `.dicom`, `.ima` or no suffix); every
other file in it is reported as bad input. Labels come from `<path>/labels.csv`
(`path,label[,patient_id][,split][,site]`, where `path` is a file or a folder: a folder row labels
every file under it), or, without labels.csv, from class folders named `covid`/`positive` and
`non-covid`/`negative`/`normal` on the way down. A slice's patient is the row's `patient_id`, else
the first folder below the root (class folders not counted).

Slices are ordered along the slice normal (ImagePositionPatient . normal of
ImageOrientationPatient), else by SliceLocation, else InstanceNumber: never by file name.
Pixels become Hounsfield units through RescaleSlope/RescaleIntercept, read from the top level or,
for Enhanced CT multi-frame files, from the per-frame or shared functional groups.

Data-quality rules (`ccfl_jax.data.image_checks`): a file whose header claims more than 2**28
pixels per frame (Rows x Columns) or 2**31 in all its frames is a bad file, refused before
decoding; so is a slice with NaN or Inf inside the field of view after RescaleSlope/Intercept
(float pixel data, a NaN slope, a float32 overflow). Warned, in `RealSlices.warnings`: a
series (same SeriesInstanceUID, or the same folder without one) whose slices differ in size,
once per series; slices below 32 pixels on a side, once per load (count and first file). Sizes are checked as stored, before resizing.
"""
import contextlib
import dataclasses
import logging
import math
import pathlib
import warnings
from typing import Callable

import numpy as np
import pydicom
import pydicom.errors
import pydicom.pixels

from ccfl_jax import progress
from ccfl_jax.data import cache, image_checks
from ccfl_jax.data.errors import BadFilePolicy, DataError
from ccfl_jax.data.labels_csv import LABELS_FILE, LabelRow, column_or_none, read_labels_csv
from ccfl_jax.data.preprocessing import outside_field_of_view_to_air, preprocess_hu
from ccfl_jax.data.real_slices import RealSlices

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", "")
NOT_SERIES_FILES = (LABELS_FILE, "DICOMDIR")
PIXEL_DATA_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
COVID_FOLDER_NAMES = ("covid", "covid19", "positive")
NON_COVID_FOLDER_NAMES = ("noncovid", "noncovid19", "negative", "normal")


@dataclasses.dataclass(frozen=True)
class DicomSlice:
  """One decoded slice (one frame of a file) with where it sits in the patient.

  `image` is the file's Hounsfield units with air outside the field of view, passed through
  the reader's `to_image` (preprocessing), so a whole dataset never sits in memory at 512x512.
  """
  image: np.ndarray
  path: str
  frame: int
  series_uid: str
  patient_tag: str
  position: float      # mm along the slice normal; NaN when the file does not say
  slice_location: float
  thickness: float
  instance: int
  pixel_shape: tuple[int, int]  # (Rows, Columns) as stored, before `to_image`


def _float_or_nan(value) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def _instance_number(dataset) -> int:
  value = _float_or_nan(dataset.get("InstanceNumber"))
  return 0 if math.isnan(value) else int(value)


def _item(dataset, sequence: str, attribute: str):
  """dataset.<sequence>[0].<attribute>, or None."""
  items = dataset.get(sequence)
  return items[0].get(attribute) if items else None


def _frame_groups(dataset, frame: int) -> list:
  """The functional groups that apply to `frame`, per-frame first (they override shared)."""
  groups = []
  if "PerFrameFunctionalGroupsSequence" in dataset:
    groups.append(dataset.PerFrameFunctionalGroupsSequence[frame])
  if "SharedFunctionalGroupsSequence" in dataset:
    groups.append(dataset.SharedFunctionalGroupsSequence[0])
  return groups


def _frame_attribute(dataset, frame: int, sequence: str, attribute: str):
  """A top-level attribute, else the one in the frame's functional groups, else None."""
  if attribute in dataset:
    return dataset.get(attribute)
  for group in _frame_groups(dataset, frame):
    value = _item(group, sequence, attribute)
    if value is not None:
      return value
  return None


def rescale(dataset, frame: int) -> tuple[float, float]:
  """(slope, intercept) mapping stored values of `frame` to Hounsfield units.

  Enhanced CT keeps them only in PixelValueTransformationSequence inside the functional
  groups, where `pydicom.pixels.apply_rescale` does not look.
  """
  slope = _frame_attribute(dataset, frame, "PixelValueTransformationSequence", "RescaleSlope")
  intercept = _frame_attribute(dataset, frame, "PixelValueTransformationSequence",
                               "RescaleIntercept")
  return (1.0 if slope is None else float(slope)), (0.0 if intercept is None else float(intercept))


def position_along_normal(dataset, frame: int) -> float:
  """ImagePositionPatient projected on the slice normal (mm), or NaN."""
  position = _frame_attribute(dataset, frame, "PlanePositionSequence", "ImagePositionPatient")
  orientation = _frame_attribute(dataset, frame, "PlaneOrientationSequence",
                                 "ImageOrientationPatient")
  if position is None or orientation is None or len(orientation) != 6:
    return math.nan
  normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
  return float(np.dot(normal, np.asarray(position, float)))


def _decoder_problem(dataset) -> str | None:
  """Why the pixel data of `dataset` cannot be decoded here, or None."""
  uid = dataset.file_meta.get("TransferSyntaxUID")
  if uid is None or not uid.is_compressed:
    return None
  try:
    decoder = pydicom.pixels.get_decoder(uid)
  except NotImplementedError:
    return f"no decoder exists in pydicom for transfer syntax {uid.name} ({uid})"
  if not decoder.is_available:
    needs = "; ".join(decoder.missing_dependencies)
    return f"no decoder installed for transfer syntax {uid.name} ({uid}); install one of: {needs}"
  return None


@contextlib.contextmanager
def _quiet_invalid_uid_warnings():
  """Silences pydicom's 'Invalid value for VR UI' (warning and log line) while reading.

  De-identified data often replaces UIDs with UUIDs (COVID-CT-MD does); pydicom reports it once
  per file, which would bury real problems under thousands of identical lines.
  """
  def keep(record):
    return "Invalid value for VR UI" not in record.getMessage()

  logger = logging.getLogger("pydicom")
  logger.addFilter(keep)
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message="Invalid value for VR UI")
      yield
  finally:
    logger.removeFilter(keep)


def _claimed_size_problem(dataset) -> str | None:
  """Why the header's Rows x Columns x NumberOfFrames is too large to decode, or None."""
  try:
    claimed = [dataset.get(name) for name in ("Rows", "Columns", "NumberOfFrames")]
  except (ValueError, TypeError, KeyError, AttributeError):
    return None  # an unparsable header value: decoding reports the file instead
  return image_checks.dicom_claimed_size_problem(*claimed)


def read_dataset(path) -> pydicom.Dataset:
  """Parses a DICOM file and checks it can give pixels; `DataError` names the problem."""
  try:
    with _quiet_invalid_uid_warnings():
      dataset = pydicom.dcmread(path)
      dataset.get("SeriesInstanceUID")  # UIDs are validated when first read
  except pydicom.errors.InvalidDicomError:
    raise DataError(path, "not a DICOM file (no DICM preamble)") from None
  except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as error:
    raise DataError(path, f"corrupt or truncated DICOM file ({type(error).__name__}: {error})") \
        from error
  if not any(name in dataset for name in PIXEL_DATA_ELEMENTS):
    raise DataError(path, "DICOM file has no pixel data (missing, or the file is truncated)")
  problem = _claimed_size_problem(dataset)
  if problem:
    raise DataError(path, problem)
  if "TransferSyntaxUID" not in getattr(dataset, "file_meta", {}):
    raise DataError(path, "DICOM file has no transfer syntax (missing file meta)")
  problem = _decoder_problem(dataset)
  if problem:
    raise DataError(path, problem)
  return dataset


def decode_frames(dataset, path) -> np.ndarray:
  """(frames, H, W) stored values; `DataError` when decoding fails (e.g. truncated data)."""
  try:
    pixels = dataset.pixel_array
  except Exception as error:  # decoders raise many types; all mean the same here
    raise DataError(path, f"cannot decode pixel data ({type(error).__name__}: {error})") from error
  if pixels.ndim == 3 and dataset.get("SamplesPerPixel", 1) > 1:
    raise DataError(path, "colour DICOM image; expected one-channel CT")
  frames = int(dataset.get("NumberOfFrames", 1) or 1)
  return pixels.reshape(frames, *pixels.shape[-2:])


def read_dicom_file(path, to_image: Callable[[np.ndarray], np.ndarray] = lambda hu: hu
                    ) -> list[DicomSlice]:
  """Every frame of one DICOM file, in Hounsfield units with air outside the field of view."""
  path = pathlib.Path(path)
  dataset = read_dataset(path)
  frames = decode_frames(dataset, path)
  slices = []
  for frame, stored in enumerate(frames):
    slope, intercept = rescale(dataset, frame)
    hu = outside_field_of_view_to_air(stored.astype(np.float32) * slope + intercept)
    problem = image_checks.non_finite_problem(
        hu, f"Hounsfield units of frame {frame} (stored x RescaleSlope {slope:g} + "
        f"RescaleIntercept {intercept:g})")
    if problem:
      raise DataError(path, problem)
    thickness = _frame_attribute(dataset, frame, "PixelMeasuresSequence", "SliceThickness")
    slices.append(DicomSlice(
        image=to_image(hu), path=str(path), frame=frame,
        series_uid=str(dataset.get("SeriesInstanceUID", "")),
        patient_tag=str(dataset.get("PatientID", "")),
        position=position_along_normal(dataset, frame),
        slice_location=_float_or_nan(dataset.get("SliceLocation")),
        thickness=_float_or_nan(thickness),
        instance=_instance_number(dataset),
        pixel_shape=(int(stored.shape[0]), int(stored.shape[1]))))
  return slices


def slice_order_key(s: DicomSlice):
  """Position along the normal, else SliceLocation, else InstanceNumber (then frame)."""
  position = s.position if not math.isnan(s.position) else s.slice_location
  return (math.isnan(position), 0.0 if math.isnan(position) else position, s.instance, s.frame)


def _is_dicom_candidate(path: pathlib.Path) -> bool:
  return path.suffix.lower() in DICOM_SUFFIXES and path.name not in NOT_SERIES_FILES


def _visible_files(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def find_series_folders(root) -> list[pathlib.Path]:
  """Folders under `root` (itself included) holding at least one DICOM-looking file."""
  root = pathlib.Path(root)
  folders = [root] + sorted(p for p in root.rglob("*") if p.is_dir() and not any(
      part.startswith(".") for part in p.relative_to(root).parts))
  return [f for f in folders if any(_is_dicom_candidate(p) for p in _visible_files(f))]


def series_files(folder, policy: BadFilePolicy) -> list[pathlib.Path]:
  """The DICOM-looking files of a series folder; reports every other file in it as bad."""
  files = []
  for path in _visible_files(pathlib.Path(folder)):
    if _is_dicom_candidate(path):
      files.append(path)
    elif path.name not in NOT_SERIES_FILES:
      policy.reject(path, "not a DICOM file (unexpected file in a DICOM series folder)")
  return files


def read_series(files, policy: BadFilePolicy,
                to_image: Callable[[np.ndarray], np.ndarray] = lambda hu: hu) -> list[DicomSlice]:
  """Reads the files of one series folder and orders their slices along the patient axis.

  Files of a second series in the same folder are bad input (a folder is one series): under
  'skip' the series with the most slices is kept and the others' files are skipped.
  """
  slices = []
  for path in files:
    try:
      slices.extend(read_dicom_file(path, to_image))
    except DataError as error:
      policy.reject(error.path, error.problem)
  by_series = {}
  for s in slices:
    by_series.setdefault(s.series_uid, []).append(s)
  if len(by_series) > 1:
    main_uid = max(by_series, key=lambda uid: (len(by_series[uid]), uid))
    counts = ", ".join(f"{uid or '(none)'}: {len(v)} slices" for uid, v in by_series.items())
    for uid, series in by_series.items():
      if uid != main_uid:
        for path in sorted({s.path for s in series}):
          policy.reject(path, f"mixed series in one folder ({counts}); this file is series "
                        f"{uid or '(none)'}, not the folder's main series {main_uid}")
    slices = by_series[main_uid]
  return sorted(slices, key=slice_order_key)


def read_series_folder(folder, on_bad_file: str = "error",
                       to_image: Callable[[np.ndarray], np.ndarray] = lambda hu: hu
                       ) -> list[DicomSlice]:
  """One series folder -> its ordered slices (Hounsfield units unless `to_image` says else)."""
  policy = BadFilePolicy(on_bad_file)
  slices = read_series(series_files(folder, policy), policy, to_image)
  if not slices:
    raise DataError(folder, "no readable DICOM slices in this folder")
  return slices


def _class_from_folder(name: str) -> int | None:
  key = "".join(c for c in name.lower() if c.isalnum())
  if key in COVID_FOLDER_NAMES:
    return 1
  if key in NON_COVID_FOLDER_NAMES:
    return 0
  return None


def _default_patient_id(series_folder: pathlib.Path, root: pathlib.Path) -> str:
  """The first folder below the root that is not a class folder, else the folder's name."""
  parts = [p for p in series_folder.relative_to(root).parts if _class_from_folder(p) is None]
  return parts[0] if parts else series_folder.name


@dataclasses.dataclass(frozen=True)
class _Labeller:
  """Finds the labels.csv row covering a file: its own row, else its nearest folder's row."""
  root: pathlib.Path
  rows_by_path: dict

  def row_for(self, path: pathlib.Path) -> LabelRow | None:
    relative = path.relative_to(self.root)
    for candidate in [relative, *relative.parents]:
      row = self.rows_by_path.get(candidate.as_posix())
      if row is not None:
        return row
    return None


def _labeller(root: pathlib.Path, policy: BadFilePolicy) -> _Labeller | None:
  """The labels.csv lookup (None without labels.csv); rows naming missing files are bad input."""
  if not (root / LABELS_FILE).exists():
    return None
  rows = read_labels_csv(root / LABELS_FILE, required=("path", "label"))
  by_path = {}
  for row in rows:
    normalized = pathlib.PurePosixPath(row.path).as_posix().rstrip("/") or "."
    if not (root / normalized).exists():
      policy.reject(root / normalized, f"named on {LABELS_FILE} line {row.line} but missing")
      continue
    by_path[normalized] = row
  return _Labeller(root, by_path)


def preprocessing_params(dataset_config) -> dict:
  """Everything that changes the preprocessed arrays (the cache key and the predict contract)."""
  return {"image_size": int(dataset_config.image_size),
          "window_level": float(dataset_config.window_level),
          "window_width": float(dataset_config.window_width),
          "on_bad_file": str(dataset_config.get("on_bad_file", "error"))}


def hu_to_image(params: dict) -> Callable[[np.ndarray], np.ndarray]:
  """HU slice -> (size, size, 1) float32 in [0, 1], as configured."""
  return lambda hu: preprocess_hu(hu, params["image_size"], params["window_level"],
                                  params["window_width"])


def check_folder(root) -> pathlib.Path:
  root = pathlib.Path(root)
  if not str(root) or not root.exists():
    raise DataError(root, "dataset path does not exist (set config.dataset.path)")
  if not root.is_dir():
    raise DataError(root, "dataset path is not a folder")
  return root


def size_warnings(sized: list[tuple[str, str, tuple]]) -> tuple[str, ...]:
  """The data-quality warnings on (series name, path, stored shape) of every kept slice."""
  tiny = image_checks.tiny_images_warning(((path, shape) for _, path, shape in sized),
                                          noun="slice")
  return tuple(image_checks.mixed_series_sizes_warnings(sized)) + ((tiny,) if tiny else ())


def read_labelled_tree(root, params: dict) -> RealSlices:
  """Every labelled DICOM slice under `root`, preprocessed; bad files per `on_bad_file`; tiny
  slices and series of mixed slice sizes warned about in `RealSlices.warnings`."""
  root = check_folder(root)
  policy = BadFilePolicy(params["on_bad_file"])
  labeller = _labeller(root, policy)
  to_image = hu_to_image(params)
  columns = {k: [] for k in ("images", "labels", "patients", "split", "site", "paths",
                             "positions", "thickness")}
  sized = []  # (series name, path, stored shape) of every kept slice, in slice order
  for folder in progress.bar(find_series_folders(root), f"decoding {root.name}", unit="series"):
    labelled = []
    for path in series_files(folder, policy):
      row = labeller.row_for(path) if labeller else None
      label = row.label if row else next(
          (c for c in map(_class_from_folder, path.relative_to(root).parts[:-1]) if c is not None),
          None)
      if label is None:
        policy.reject(path, f"no label: no {LABELS_FILE} row covers it and no covid/non-covid "
                      "class folder contains it")
        continue
      labelled.append((path, label, row))
    info = {path: (label, row) for path, label, row in labelled}
    for s in read_series([p for p, _, _ in labelled], policy, to_image):
      label, row = info[pathlib.Path(s.path)]
      columns["images"].append(s.image)
      columns["labels"].append(label)
      columns["patients"].append(row.patient_id if row and row.patient_id
                                 else _default_patient_id(folder, root))
      columns["split"].append(row.split if row else None)
      columns["site"].append(row.site if row else None)
      columns["paths"].append(s.path)
      columns["positions"].append(s.position if not math.isnan(s.position) else s.slice_location)
      columns["thickness"].append(s.thickness)
      sized.append((s.series_uid or str(folder), s.path, s.pixel_shape))
  if not columns["images"]:
    raise DataError(root, "no DICOM slices found (empty folder, or every file was bad)")
  as_array = lambda v: None if v is None else np.asarray(v, str)
  return RealSlices(
      np.stack(columns["images"]).astype(np.float32), np.asarray(columns["labels"], np.int32),
      np.asarray(columns["patients"], str), as_array(column_or_none(columns["split"])),
      as_array(column_or_none(columns["site"])), np.asarray(columns["paths"], str),
      np.asarray(columns["positions"], np.float32), np.asarray(columns["thickness"], np.float32),
      tuple(policy.skipped), size_warnings(sized))


def load(dataset_config, seed: int) -> RealSlices:
  """The `dicom` dataset: preprocessed once, then served from the cache."""
  del seed  # reading is deterministic; shuffling and splitting happen downstream
  root = check_folder(dataset_config.path)
  params = preprocessing_params(dataset_config)
  return cache.cached_slices("dicom", root, params, dataset_config.get("cache_dir", ""),
                             lambda: read_labelled_tree(root, params))
