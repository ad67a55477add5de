"""Training-time image augmentation as pure JAX functions (jit- and vmap-friendly).

`augment(key, images, settings)` maps a batch (B, H, W, C) of [0, 1] images to a batch of
the same shape and dtype, clipped to [0, 1]. Everything is shape-static, so it runs inside
the compiled federated round, per hospital and local step, from the key it is given: the
same key gives the same images, bit for bit. Image b of the batch uses
`jax.random.split(key, B)[b]`; the caller derives `key` from its documented key scheme.

Per image, in this order:

  1. one resampling (bilinear, edges repeated) that composes
     * random resized crop (`crop`): a box of area fraction U(crop_scale) and aspect ratio
       log-U(crop_ratio) (width / height), clipped to the image, centred uniformly where it
       fits, stretched back to H x W (torchvision's RandomResizedCrop without its retries);
     * horizontal flip (`flip`), with probability 1/2;
     * rotation by U(-rotation_degrees, rotation_degrees) about the box centre;
  2. brightness: + U(-brightness, brightness);
  3. contrast: (x - mean) x U(1 - contrast, 1 + contrast) + mean, the image's own mean;
  4. clip to [0, 1].

A zero range or a False flag switches that step off; with every step off the images come
back unchanged. `enabled=False` (the default) returns the input itself: evaluation never
augments.
"""
import dataclasses
import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from jax.scipy import ndimage


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
  enabled: bool = False
  crop: bool = True
  crop_scale: tuple[float, float] = (0.5, 1.0)      # area fraction of the box
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # box width / height
  flip: bool = True
  rotation_degrees: float = 10.0
  brightness: float = 0.1
  contrast: float = 0.1

  def __post_init__(self):
    low, high = self.crop_scale
    if not 0 < low <= high <= 1:
      raise ValueError(f"augment.crop_scale {self.crop_scale}: need 0 < low <= high <= 1")
    low, high = self.crop_ratio
    if not 0 < low <= high:
      raise ValueError(f"augment.crop_ratio {self.crop_ratio}: need 0 < low <= high")
    for name in ("rotation_degrees", "brightness", "contrast"):
      if getattr(self, name) < 0:
        raise ValueError(f"augment.{name} {getattr(self, name)}: must be >= 0")
    if self.contrast > 1:
      raise ValueError(f"augment.contrast {self.contrast}: must be <= 1")

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "AugmentSettings":
    """From a config block (dict or ConfigDict); lists become tuples, unknown keys fail."""
    values = dict(values.items())
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"config.augment: unknown {', '.join(unknown)}; known: "
                       f"{', '.join(sorted(known))}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

  @property
  def geometric(self) -> bool:
    return self.crop or self.flip or self.rotation_degrees > 0


def crop_box(key: jax.Array, settings: AugmentSettings) -> tuple[jax.Array, ...]:
  """(centre y, centre x, height, width) of the crop box, as fractions of the image."""
  if not settings.crop:
    return jnp.float32(0.5), jnp.float32(0.5), jnp.float32(1.0), jnp.float32(1.0)
  k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
  area = jax.random.uniform(k_area, (), minval=settings.crop_scale[0],
                            maxval=settings.crop_scale[1])
  log_ratio = jax.random.uniform(k_ratio, (), minval=math.log(settings.crop_ratio[0]),
                                 maxval=math.log(settings.crop_ratio[1]))
  ratio = jnp.exp(log_ratio)
  height = jnp.minimum(jnp.sqrt(area / ratio), 1.0)
  width = jnp.minimum(jnp.sqrt(area * ratio), 1.0)
  centre_y = jax.random.uniform(k_y, (), minval=height / 2, maxval=1 - height / 2)
  centre_x = jax.random.uniform(k_x, (), minval=width / 2, maxval=1 - width / 2)
  return centre_y, centre_x, height, width


def sampling_grid(key: jax.Array, shape: tuple[int, int],
                  settings: AugmentSettings) -> jax.Array:
  """(2, H, W) source coordinates (row, column) of each output pixel."""
  k_crop, k_flip, k_rotation = jax.random.split(key, 3)
  rows, cols = shape
  centre_y, centre_x, height, width = crop_box(k_crop, settings)
  y, x = jnp.meshgrid(jnp.arange(rows, dtype=jnp.float32), jnp.arange(cols, dtype=jnp.float32),
                      indexing="ij")
  dy = (y - (rows - 1) / 2) * height
  dx = (x - (cols - 1) / 2) * width
  if settings.flip:
    dx = jnp.where(jax.random.bernoulli(k_flip), -dx, dx)
  if settings.rotation_degrees > 0:
    limit = math.radians(settings.rotation_degrees)
    angle = jax.random.uniform(k_rotation, (), minval=-limit, maxval=limit)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    dy, dx = cos * dy - sin * dx, sin * dy + cos * dx
  return jnp.stack([centre_y * rows - 0.5 + dy, centre_x * cols - 0.5 + dx])


def resample(image: jax.Array, grid: jax.Array) -> jax.Array:
  """(H, W, C) image sampled bilinearly at `grid` (2, H', W'), edges repeated."""
  def channel(plane):
    return ndimage.map_coordinates(plane, [grid[0], grid[1]], order=1, mode="nearest")
  return jax.vmap(channel, in_axes=-1, out_axes=-1)(image)


def augment_image(key: jax.Array, image: jax.Array, settings: AugmentSettings) -> jax.Array:
  """One (H, W, C) image, augmented as the module docstring lists."""
  k_geometry, k_brightness, k_contrast = jax.random.split(key, 3)
  x = image.astype(jnp.float32)
  if settings.geometric:
    x = resample(x, sampling_grid(k_geometry, image.shape[:2], settings))
  if settings.brightness > 0:
    x = x + jax.random.uniform(k_brightness, (), minval=-settings.brightness,
                               maxval=settings.brightness)
  if settings.contrast > 0:
    factor = jax.random.uniform(k_contrast, (), minval=1 - settings.contrast,
                                maxval=1 + settings.contrast)
    mean = jnp.mean(x)
    x = (x - mean) * factor + mean
  return jnp.clip(x, 0.0, 1.0).astype(image.dtype)


def augment(key: jax.Array, images: jax.Array, settings: AugmentSettings) -> jax.Array:
  """A batch (B, H, W, C) augmented image by image; `images` itself when not enabled."""
  if not settings.enabled:
    return images
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(functools.partial(augment_image, settings=settings))(keys, images)
