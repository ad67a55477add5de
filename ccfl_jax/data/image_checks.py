"""Data-quality checks on the images a loader decodes: warned or refused, never silent.

Warned (strings the loader returns as `RealSlices.warnings`; training logs them):
  * Tiny images: a slice or image whose shorter side is below `MIN_IMAGE_SIDE` (32) pixels, at
    its size in the file (before resizing to `image_size`). One line per load: the count and the
    first such file, so a folder of thousands of thumbnails gives one line, not thousands.
  * Mixed slice sizes in one DICOM series (same SeriesInstanceUID, or the same folder when the
    files have none): one line per series, naming the sizes (the most common first; a tie goes
    to the size seen first) and the first slice, in slice order, of another size. Image folders mix sizes across
    patients as a matter of course, so they are not checked.
Refused (the problem of a `DataError` naming the file, handled per `on_bad_file`):
  * Decompression bombs: an image file claiming more than `PIL.Image.MAX_IMAGE_PIXELS` pixels.
    PIL only warns (`DecompressionBombWarning`) between 1x and 2x that limit and raises
    `DecompressionBombError` above 2x; both are refused the same way here, since no CT slice
    comes near either (512x512 is 0.3% of PIL's default limit).
  * Non-finite pixels: a float image (a TIFF in mode F) or a DICOM slice whose values after
    RescaleSlope/RescaleIntercept hold NaN or +-Inf inside the field of view (float pixel data,
    a NaN slope, a float32 overflow). One NaN pixel makes every prediction on the slice NaN,
    and in a verifier's data every vote score.
  * DICOM files whose header claims more than `MAX_DICOM_FRAME_PIXELS` (2**28) pixels per frame
    (Rows x Columns, e.g. above 16384x16384) or `MAX_DICOM_FILE_PIXELS` (2**31) in all frames:
    refused before any pixel data is decoded.

Sizes are written width x height (DICOM: Columns x Rows).
"""
import collections
import re
from typing import Iterable

import numpy as np

MIN_IMAGE_SIDE = 32
MAX_DICOM_FRAME_PIXELS = 2**28
MAX_DICOM_FILE_PIXELS = 2**31
EXPECTED_IMAGE = "expected a CT slice image (typically 512x512)"


def size_text(shape) -> str:
  """(rows, columns) -> 'WIDTHxHEIGHT'."""
  rows, columns = shape[:2]
  return f"{columns}x{rows}"


def _listed(items: list[str]) -> str:
  """'a', 'a and b', 'a, b and c'."""
  return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def tiny_images_warning(sized: Iterable[tuple[str, tuple]], noun: str = "image",
                        min_side: int = MIN_IMAGE_SIDE) -> str | None:
  """One warning for every (path, (rows, columns)) whose shorter side is below `min_side`."""
  tiny = [(path, shape) for path, shape in sized if min(shape[:2]) < min_side]
  if not tiny:
    return None
  first_path, first_shape = tiny[0]
  return (f"{len(tiny)} {noun}(s) smaller than {min_side} pixels on a side (first: "
          f"{first_path}, {size_text(first_shape)}): upscaled to image_size, they carry little "
          "detail; check they are CT slices, not thumbnails")


def mixed_sizes_warning(series: str, ordered: list[tuple[str, tuple]]) -> str | None:
  """The warning for one series' (path, (rows, columns)) in slice order, if sizes differ."""
  counts = collections.Counter(size_text(shape) for _, shape in ordered)
  if len(counts) < 2:
    return None
  usual = counts.most_common(1)[0][0]  # ties: the size seen first
  odd_path = next(path for path, shape in ordered if size_text(shape) != usual)
  sizes = [usual] + [size for size in counts if size != usual]
  return (f"series {series} mixes slice sizes {_listed(sizes)} "
          f"(first odd one: {odd_path})")


def mixed_series_sizes_warnings(slices: Iterable[tuple[str, str, tuple]]) -> list[str]:
  """One warning per series mixing sizes, from (series name, path, (rows, columns)) in
  slice order within each series."""
  by_series = {}
  for series, path, shape in slices:
    by_series.setdefault(series, []).append((path, shape))
  warnings = (mixed_sizes_warning(name, members) for name, members in by_series.items())
  return [w for w in warnings if w]


def _limit_text(limit: int) -> str:
  return f"PIL.Image.MAX_IMAGE_PIXELS ({limit:,} pixels)"


def image_bomb_problem(width: int, height: int, limit: int) -> str:
  """Why an image of `width` x `height` pixels, above PIL's limit, is refused."""
  return (f"{width}x{height} image ({width * height:,} pixels) exceeds {_limit_text(limit)}: "
          f"refused as a possible decompression bomb; {EXPECTED_IMAGE}")


def pil_bomb_problem(error: Exception, limit: int) -> str:
  """Why PIL refused an image (`DecompressionBombError`, above twice the limit: no size given
  but the pixel count in its message)."""
  found = re.search(r"\((\d+) pixels\)", str(error))
  claimed = f"image of {int(found.group(1)):,} pixels" if found else f"image ({error})"
  return (f"{claimed} exceeds {_limit_text(limit)}: refused as a possible decompression bomb; "
          f"{EXPECTED_IMAGE}")


def is_image_bomb(width: int, height: int, limit: int | None) -> bool:
  """PIL's rule (its warning and its error alike): more than `limit` pixels; None = no limit."""
  return limit is not None and max(1, width) * max(1, height) > limit


def non_finite_problem(values: np.ndarray, what: str = "pixel values") -> str | None:
  """Why an image holding NaN or +-Inf is refused, or None when every value is finite."""
  finite = np.isfinite(values)
  if finite.all():
    return None
  bad = values[~finite]
  kinds = [name for name, present in (("NaN", np.isnan(bad).any()),
                                      ("+Inf", (bad == np.inf).any()),
                                      ("-Inf", (bad == -np.inf).any())) if present]
  return (f"{bad.size:,} of {values.size:,} {what} are not finite ({', '.join(kinds)}); "
          f"{EXPECTED_IMAGE} with finite values")


def dicom_claimed_size_problem(rows, columns, frames) -> str | None:
  """Why a DICOM header's claimed size is refused before decoding, or None (also None when
  the header's numbers are missing or not numbers: decoding then reports the problem)."""
  try:
    rows, columns, frames = int(rows), int(columns), int(frames or 1)
  except (TypeError, ValueError):
    return None
  per_frame = rows * columns
  if per_frame > MAX_DICOM_FRAME_PIXELS:
    return (f"header claims {columns}x{rows} pixels per frame ({per_frame:,}), above the limit "
            f"of {MAX_DICOM_FRAME_PIXELS:,} (2**28): refused before decoding; {EXPECTED_IMAGE}")
  if per_frame * frames > MAX_DICOM_FILE_PIXELS:
    return (f"header claims {frames:,} frames of {columns}x{rows} ({per_frame * frames:,} "
            f"pixels), above the limit of {MAX_DICOM_FILE_PIXELS:,} (2**31): refused before "
            f"decoding; {EXPECTED_IMAGE}")
  return None
