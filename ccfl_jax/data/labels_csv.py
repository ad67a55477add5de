"""`labels.csv`: the table that labels a real dataset, one row per file (or series folder).

Columns: `path,label,patient_id` and optionally `split` (or `official_split`) and `site` (or
`hospital`); extra columns are ignored. `path` is relative to the folder holding labels.csv;
`label` is 1 = COVID-19, 0 = not COVID-19.
"""
import csv
import dataclasses
import pathlib

from ccfl_jax.data.errors import DataError

LABELS_FILE = "labels.csv"
SPLIT_COLUMNS = ("split", "official_split")
SITE_COLUMNS = ("site", "hospital")


@dataclasses.dataclass(frozen=True)
class LabelRow:
  """One labels.csv row; `line` is its line number in the file (for error messages)."""
  path: str
  label: int
  patient_id: str
  split: str | None
  site: str | None
  line: int


def _first_present(row: dict, columns: tuple[str, ...]) -> str | None:
  for column in columns:
    if column in row and row[column] is not None:
      return row[column].strip()
  return None


def check_inside_folder(path: str, where: str) -> None:
  """DataError unless `path` is relative and stays inside the folder holding labels.csv: a
  dataset reads (and its cache key covers) only files of its own folder."""
  pure = pathlib.PurePosixPath(path.replace("\\", "/"))
  if pure.is_absolute() or pathlib.PureWindowsPath(path).drive or ".." in pure.parts:
    raise DataError(where, f"path {path!r} leaves the dataset folder (expected a path "
                    "relative to the folder of labels.csv, without '..')")


def parse_label(text: str, where: str) -> int:
  """'0'/'1' (also '0.0'/'1.0') -> int, else a `DataError` naming the row."""
  value = (text or "").strip()
  if value in ("0", "1", "0.0", "1.0"):
    return int(float(value))
  raise DataError(where, f"label {value!r} is not 0 or 1")


def read_labels_csv(csv_path, required=("path", "label", "patient_id")) -> list[LabelRow]:
  """Reads and checks labels.csv: required columns, 0/1 labels, no duplicate paths.

  Raises `DataError` naming the file (and row) for every problem; a table problem is never
  skippable because it would silently change which files are used.
  """
  csv_path = pathlib.Path(csv_path)
  try:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      columns = [c.strip() for c in (reader.fieldnames or [])]
      reader.fieldnames = columns
      missing = [c for c in required if c not in columns]
      if missing:
        raise DataError(csv_path, f"missing column(s) {', '.join(missing)}; "
                        f"found {', '.join(columns) or 'no header'}")
      rows, first_line_of = [], {}
      for row in reader:
        line = reader.line_num
        where = f"{csv_path} line {line}"
        path = (row.get("path") or "").strip()
        if "path" in required and not path:
          raise DataError(where, "empty path")
        if path:
          check_inside_folder(path, where)
        if path and path in first_line_of:
          raise DataError(where, f"duplicate path {path!r} (first on line {first_line_of[path]})")
        first_line_of[path] = line
        patient_id = (row.get("patient_id") or "").strip()
        if "patient_id" in required and not patient_id:
          raise DataError(where, "empty patient_id")
        rows.append(LabelRow(path, parse_label(row.get("label"), where), patient_id,
                             _first_present(row, SPLIT_COLUMNS) or None,
                             _first_present(row, SITE_COLUMNS) or None, line))
  except (OSError, UnicodeDecodeError, csv.Error) as error:
    raise DataError(csv_path, f"cannot read labels table ({error})") from error
  if not rows:
    raise DataError(csv_path, "labels table has no rows")
  return rows


def column_or_none(values: list[str | None]):
  """A per-slice column, or None when no row has a value (so CTSlices.split stays None)."""
  if all(v is None for v in values):
    return None
  return [v or "" for v in values]
