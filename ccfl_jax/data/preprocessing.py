"""CT preprocessing shared by synthetic and real data: HU -> lung window -> resize."""
import numpy as np
from PIL import Image

AIR_HU = -1000.0


def lung_window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
  """Maps Hounsfield units to [0, 1] through the window [level - width/2, level + width/2]."""
  low = level - width / 2.0
  return np.clip((np.asarray(hu, np.float32) - low) / width, 0.0, 1.0).astype(np.float32)


def field_of_view_mask(height: int, width: int, radius_fraction: float = 1.0) -> np.ndarray:
  """Boolean mask of the scanner's circular field of view inscribed in the slice."""
  y, x = np.mgrid[:height, :width]
  cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
  radius = radius_fraction * min(height, width) / 2.0
  return (y - cy) ** 2 + (x - cx) ** 2 <= radius ** 2


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes a 2-D float image to size x size (area-averaging when shrinking)."""
  image = np.asarray(image, np.float32)
  if image.shape == (size, size):
    return image
  resample = Image.BOX if min(image.shape) >= size else Image.BILINEAR
  return np.asarray(Image.fromarray(image, mode="F").resize((size, size), resample), np.float32)


def preprocess_hu(hu: np.ndarray, size: int, level: float, width: float) -> np.ndarray:
  """One HU slice -> (size, size, 1) float32 in [0, 1]."""
  return lung_window(resize(hu, size), level, width)[..., None]


def outside_field_of_view_to_air(hu: np.ndarray) -> np.ndarray:
  """Sets pixels outside the scanner's circular field of view to air (`AIR_HU`).

  Scanners store arbitrary padding there (e.g. -2000 or -3024), which would otherwise
  show up as a bright or dark ring after windowing.
  """
  hu = np.asarray(hu, np.float32)
  return np.where(field_of_view_mask(*hu.shape), hu, np.float32(AIR_HU))


def resize_and_pad(image: np.ndarray, size: int, fill: float = 0.0) -> np.ndarray:
  """Resizes a 2-D image so its longer side is `size` (keeping the aspect ratio), then pads
  the shorter side equally on both sides with `fill` to size x size."""
  image = np.asarray(image, np.float32)
  height, width = image.shape
  scale = size / max(height, width)
  new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
  if (new_h, new_w) != (height, width):
    resample = Image.BOX if scale < 1 else Image.BILINEAR
    image = np.asarray(Image.fromarray(image, mode="F").resize((new_w, new_h), resample), np.float32)
  top, left = (size - new_h) // 2, (size - new_w) // 2
  padded = np.full((size, size), fill, np.float32)
  padded[top:top + new_h, left:left + new_w] = image
  return padded
