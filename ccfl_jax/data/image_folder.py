"""A folder of PNG/JPG slices labelled by labels.csv (`config.dataset.name = 'image_folder'`).

`<path>/labels.csv` has `path,label,patient_id` and optionally `split`/`official_split` and
`site`/`hospital` (see `labels_csv`). Images may be any mode (L, RGB, RGBA, P, 16-bit) and size:
each becomes one channel in [0, 1], is resized keeping its aspect ratio so the longer side is
`image_size`, and is padded with black (air) to a square. Such images are already display-
windowed (they are not Hounsfield units), so the lung window is not applied.

Data-quality rules (`ccfl_jax.data.image_checks`): an image above `PIL.Image.MAX_IMAGE_PIXELS`
(a possible decompression bomb, whether PIL would warn or refuse) or a float image with NaN or
Inf pixels is a bad file, handled per `on_bad_file`; images below 32 pixels on a side give
one warning per load (count and first file), returned as `RealSlices.warnings`. Sizes mixed
across images are normal here and not warned about.
"""
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from ccfl_jax import progress
from ccfl_jax.data import cache, image_checks
from ccfl_jax.data.dicom import check_folder
from ccfl_jax.data.errors import BadFilePolicy, DataError
from ccfl_jax.data.labels_csv import LABELS_FILE, column_or_none, read_labels_csv
from ccfl_jax.data.preprocessing import resize_and_pad
from ccfl_jax.data.real_slices import RealSlices


def to_grey(image: Image.Image) -> np.ndarray:
  """A PIL image of any mode -> (H, W) float32 in [0, 1].

  Transparent pixels become black, the colour of air in a CT figure, rather than whatever
  colour the transparent pixels happen to store.
  """
  if image.mode.startswith("I;16"):
    return np.asarray(image, np.float32) / 65535.0
  if image.mode in ("I", "F"):
    values = np.asarray(image, np.float32)
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)
  if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
    rgba = image.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    image = Image.alpha_composite(black, rgba)
  return np.asarray(image.convert("L"), np.float32) / 255.0


def read_grey(path) -> np.ndarray:
  """One image file -> (H, W) float32 in [0, 1] at its own size; `DataError` if unreadable, a
  possible decompression bomb (more than `PIL.Image.MAX_IMAGE_PIXELS` pixels) or holding NaN
  or Inf pixels."""
  limit = Image.MAX_IMAGE_PIXELS
  try:
    with warnings.catch_warnings():
      # Between 1x and 2x the limit PIL only warns; the size is checked below instead.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      image = Image.open(path)
    with image:
      if image_checks.is_image_bomb(image.width, image.height, limit):
        raise DataError(path, image_checks.image_bomb_problem(image.width, image.height, limit))
      image.load()  # decode now, so a truncated file fails here and names itself
      if image.mode == "F":  # float pixels: NaN/Inf would survive to_grey's scaling
        problem = image_checks.non_finite_problem(np.asarray(image))
        if problem:
          raise DataError(path, problem)
      grey = to_grey(image)
  except DataError:
    raise  # the bomb check above (a ValueError, so not to be rewrapped below)
  except FileNotFoundError:
    raise DataError(path, "image file is missing") from None
  except Image.DecompressionBombError as error:
    raise DataError(path, image_checks.pil_bomb_problem(error, limit)) from None
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
    raise DataError(path, f"unreadable image ({type(error).__name__}: {error})") from error
  if grey.ndim != 2 or min(grey.shape) == 0:
    raise DataError(path, f"unexpected image shape {grey.shape}")
  return grey


def fit_to_size(grey: np.ndarray, image_size: int) -> np.ndarray:
  """(H, W) in [0, 1] -> (image_size, image_size, 1), aspect kept, padded with black."""
  return np.clip(resize_and_pad(grey, image_size), 0.0, 1.0)[..., None]


def read_image(path, image_size: int) -> np.ndarray:
  """One image file -> (image_size, image_size, 1) float32 in [0, 1]; `DataError` if unreadable."""
  return fit_to_size(read_grey(path), image_size)


def read_labelled_folder(root, image_size: int, on_bad_file: str = "error") -> RealSlices:
  """Every image labels.csv names, in its row order; bad files per `on_bad_file`; tiny images
  warned about in `RealSlices.warnings`."""
  root = check_folder(root)
  if not (root / LABELS_FILE).exists():
    raise DataError(root, f"no {LABELS_FILE} in this folder (an empty folder, or not an image "
                    "folder dataset); expected columns path,label,patient_id[,split]")
  policy = BadFilePolicy(on_bad_file)
  images, kept, sizes = [], [], []
  for row in progress.bar(read_labels_csv(root / LABELS_FILE), f"decoding {root.name}"):
    path = root / row.path
    if not path.is_file():
      policy.reject(path, f"named on {LABELS_FILE} line {row.line} but missing")
      continue
    try:
      grey = read_grey(path)
    except DataError as error:
      policy.reject(error.path, error.problem)
      continue
    images.append(fit_to_size(grey, image_size))
    sizes.append((str(path), grey.shape))
    kept.append(row)
  if not kept:
    raise DataError(root, f"no readable images among the rows of {LABELS_FILE}")
  as_array = lambda v: None if v is None else np.asarray(v, str)
  tiny = image_checks.tiny_images_warning(sizes, noun="image")
  return RealSlices(
      np.stack(images).astype(np.float32), np.asarray([r.label for r in kept], np.int32),
      np.asarray([r.patient_id for r in kept], str),
      as_array(column_or_none([r.split for r in kept])),
      as_array(column_or_none([r.site for r in kept])),
      np.asarray([str(root / r.path) for r in kept], str),
      np.full(len(kept), np.nan, np.float32), np.full(len(kept), np.nan, np.float32),
      tuple(policy.skipped), (tiny,) if tiny else ())


def preprocessing_params(dataset_config) -> dict:
  """Everything that changes the preprocessed arrays (the cache key and the predict contract)."""
  return {"image_size": int(dataset_config.image_size),
          "on_bad_file": str(dataset_config.get("on_bad_file", "error"))}


def load(dataset_config, seed: int) -> RealSlices:
  """The `image_folder` dataset: decoded and resized once, then served from the cache."""
  del seed  # reading is deterministic; shuffling and splitting happen downstream
  root = check_folder(dataset_config.path)
  params = preprocessing_params(dataset_config)
  return cache.cached_slices(
      "image_folder", root, params, dataset_config.get("cache_dir", ""),
      lambda: read_labelled_folder(root, params["image_size"], params["on_bad_file"]))
