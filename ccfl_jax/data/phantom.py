"""Synthetic chest CT: the embedded default dataset, so the main command needs no download.

Axial slices are drawn in Hounsfield units (HU) at a native 128 x 128 grid: air (-1000)
around an elliptical body of soft tissue (20-60 HU) with a fat rim, two lungs of
parenchyma (about -850 HU) crossed by vessels, a mediastinum and heart, a vertebral body
and ribs (+700 HU and up). Outside the scanner's circular field of view pixels carry the
padding value a scanner writes there (-2048) and are set to air by the same
preprocessing real CT goes through. Each patient has their own anatomy (body and lung
size, position, vessel tree) and several slices from apex to base.

COVID-19 patients show bilateral, peripheral ground-glass opacities (-700 to -300 HU),
and some of them consolidation (-100 to 40 HU) inside the opacities. Non-COVID patients
are normal or show other findings: a solitary nodule, a central (perihilar) lesion, or
emphysema-like low-attenuation areas, so the task is not trivially "any opacity".
Everything is a pure function of the seed.
"""
import numpy as np

from ccfl_jax.data import cache
from ccfl_jax.data.errors import DataError
from ccfl_jax.data.preprocessing import AIR_HU, field_of_view_mask, preprocess_hu
from ccfl_jax.data.slices import CTSlices

NATIVE_SIZE = 128
# Phantoms this large (about 50 ms a slice to make on a 2-core CPU: minutes) are cached; the
# smaller ones take seconds and are made afresh. Bump PHANTOM_VERSION when the phantom's
# code changes what it makes for the same parameters (old cache entries are then unused).
CACHE_FROM_SLICES = 2000
PHANTOM_VERSION = 1
PADDING_HU = -2048.0  # what scanners write outside the reconstructed field of view


def _grid(size: int):
  axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
  return np.meshgrid(axis, axis, indexing="xy")  # x to the patient's left, y posterior


def _ellipse(x, y, cx, cy, rx, ry, angle=0.0):
  c, s = np.cos(angle), np.sin(angle)
  u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
  return (u / rx) ** 2 + (v / ry) ** 2


def _blob(x, y, cx, cy, radius):
  """A soft round lesion profile in [0, 1]."""
  return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * radius ** 2))


def _patient_anatomy(rng):
  return dict(
      body_rx=rng.uniform(0.78, 0.9), body_ry=rng.uniform(0.55, 0.66),
      body_cy=rng.uniform(-0.04, 0.04), lung_rx=rng.uniform(0.27, 0.33),
      lung_ry=rng.uniform(0.36, 0.44), lung_dx=rng.uniform(0.36, 0.42),
      lung_hu=rng.uniform(-880.0, -820.0), tissue_hu=rng.uniform(25.0, 55.0),
      vessels=rng.uniform(-1.0, 1.0, size=(40, 2)), vessel_r=rng.uniform(0.008, 0.025, size=40))


def _lung_masks(x, y, a, z):
  """Left and right lung masks; lungs grow from apex (z = 0) to base (z = 1)."""
  scale = 0.65 + 0.35 * np.sin(np.pi * (0.25 + 0.6 * z))
  rx, ry = a["lung_rx"] * scale, a["lung_ry"] * scale
  cy = a["body_cy"] - 0.02
  right = _ellipse(x, y, -a["lung_dx"], cy, rx, ry, 0.15) <= 1.0
  left = _ellipse(x, y, a["lung_dx"] + 0.02, cy, rx * 0.92, ry, -0.15) <= 1.0
  return left, right, (rx, ry, cy)


def _anatomy_slice(x, y, a, z, rng):
  """A normal slice in HU and its lung mask."""
  body = _ellipse(x, y, 0.0, a["body_cy"], a["body_rx"], a["body_ry"])
  hu = np.full(x.shape, AIR_HU, np.float32)
  hu[body <= 1.0] = -100.0  # subcutaneous fat
  hu[body <= 0.86] = a["tissue_hu"]
  for angle in np.deg2rad([-150, -125, -100, -80, -55, -30, 30, 55, 125, 150]):  # ribs
    rib_x = 0.9 * a["body_rx"] * np.cos(angle)
    rib_y = a["body_cy"] + 0.88 * a["body_ry"] * np.sin(angle)
    hu[_ellipse(x, y, rib_x, rib_y, 0.035, 0.022, angle) <= 1.0] = 750.0
  left, right, (_, ry, cy) = _lung_masks(x, y, a, z)
  lungs = left | right
  hu[lungs] = a["lung_hu"]
  hu[_ellipse(x, y, 0.06, cy - 0.08, 0.18, 0.16) <= 1.0] = a["tissue_hu"] + 5.0  # heart
  vertebra = _ellipse(x, y, 0.0, a["body_cy"] + a["body_ry"] * 0.72, 0.11, 0.09)
  hu[vertebra <= 1.0] = 900.0
  hu[vertebra <= 0.45] = 350.0  # cancellous bone inside the cortex
  vessel_hu = np.zeros_like(hu)
  for (vx, vy), r in zip(a["vessels"], a["vessel_r"]):
    vx = np.sign(vx) * (0.15 + 0.55 * abs(vx)) * a["lung_dx"] * 1.6
    vessel_hu = np.maximum(vessel_hu, _blob(x, y, vx, cy + vy * ry * 0.8, r * (1.2 - 0.4 * z)))
  hu = np.where(lungs, hu + vessel_hu * (40.0 - a["lung_hu"]), hu)
  return hu, left, right


def _peripheral_point(rng, mask, x, y, centre_x, periphery):
  """A random lung pixel, favouring (periphery=True) or avoiding the lung's outer rim."""
  ys, xs = np.nonzero(mask)
  distance = np.abs(x[ys, xs] - centre_x) + 0.5 * np.abs(y[ys, xs])
  weights = np.exp((4.0 if periphery else -4.0) * distance / (distance.max() + 1e-6))
  i = rng.choice(len(ys), p=weights / weights.sum())
  return x[ys[i], xs[i]], y[ys[i], xs[i]]


def _covid_findings(hu, x, y, left, right, rng, consolidation):
  """Bilateral peripheral ground-glass opacities, some with consolidation."""
  lungs = left | right
  for mask, sign in ((left, 1.0), (right, -1.0)):
    if not mask.any():
      continue
    for _ in range(rng.integers(2, 5)):
      cx, cy = _peripheral_point(rng, mask, x, y, 0.0, periphery=True)
      profile = _blob(x, y, cx + sign * 0.03, cy, rng.uniform(0.06, 0.12))
      target = rng.uniform(-700.0, -300.0)
      hu = np.where(lungs, hu + profile * np.maximum(target - hu, 0.0), hu)
      if consolidation and rng.random() < 0.6:
        core = _blob(x, y, cx + sign * 0.03, cy, rng.uniform(0.025, 0.05))
        hu = np.where(lungs & (core > 0.5), rng.uniform(-100.0, 40.0), hu)
  return hu


def _other_findings(hu, x, y, left, right, rng, kind):
  """Non-COVID findings: 'nodule', 'central' (perihilar lesion) or 'emphysema'."""
  lungs = left | right
  mask = left if rng.random() < 0.5 else right
  if not mask.any() or kind == "normal":
    return hu
  if kind == "nodule":
    cx, cy = _peripheral_point(rng, mask, x, y, 0.0, periphery=False)
    return np.where(lungs & (_blob(x, y, cx, cy, rng.uniform(0.015, 0.03)) > 0.4), 30.0, hu)
  if kind == "central":
    cx = 0.18 * np.sign(rng.uniform(-1, 1))
    profile = _blob(x, y, cx, rng.uniform(-0.15, 0.1), rng.uniform(0.05, 0.08))
    return np.where(lungs, hu + profile * np.maximum(-20.0 - hu, 0.0), hu)
  cx, cy = _peripheral_point(rng, mask, x, y, 0.0, periphery=False)  # emphysema
  return np.where(lungs & (_blob(x, y, cx, cy, rng.uniform(0.05, 0.09)) > 0.5), -970.0, hu)


def patient_volume(seed: int, patient: int, covid: bool, num_slices: int,
                   size: int = NATIVE_SIZE) -> np.ndarray:
  """(num_slices, size, size) HU slices of one synthetic patient, apex to base."""
  rng = np.random.default_rng([seed, patient])
  anatomy = _patient_anatomy(rng)
  consolidation = covid and rng.random() < 0.5
  other = rng.choice(["normal", "nodule", "central", "emphysema"], p=[0.4, 0.2, 0.25, 0.15])
  x, y = _grid(size)
  fov = field_of_view_mask(size, size)
  slices = []
  for z in np.linspace(0.15, 0.9, num_slices):
    hu, left, right = _anatomy_slice(x, y, anatomy, z, rng)
    if covid:
      hu = _covid_findings(hu, x, y, left, right, rng, consolidation)
    else:
      hu = _other_findings(hu, x, y, left, right, rng, other)
    hu = hu + rng.normal(0.0, 15.0, hu.shape)  # quantum noise
    slices.append(np.where(fov, hu, PADDING_HU).astype(np.float32))
  return np.stack(slices)


def to_air_outside_field_of_view(hu: np.ndarray) -> np.ndarray:
  """Scanner padding (outside the circular field of view) becomes air."""
  fov = field_of_view_mask(*hu.shape[-2:])
  return np.where(fov, hu, AIR_HU).astype(np.float32)


def make_phantom(seed: int, num_patients: int, slices_per_patient: int, covid_fraction: float,
                 image_size: int, window_level: float, window_width: float) -> CTSlices:
  """The synthetic dataset: every patient's slices, preprocessed like real CT."""
  num_covid = int(round(covid_fraction * num_patients))
  covid = np.random.default_rng([seed, 2**31]).permutation(
      np.arange(num_patients) < num_covid)
  images, labels, patient_ids = [], [], []
  for patient in range(num_patients):
    volume = to_air_outside_field_of_view(
        patient_volume(seed, patient, bool(covid[patient]), slices_per_patient))
    images += [preprocess_hu(hu, image_size, window_level, window_width) for hu in volume]
    labels += [int(covid[patient])] * slices_per_patient
    patient_ids += [f"phantom-{patient:04d}"] * slices_per_patient
  return CTSlices(np.stack(images), np.asarray(labels, np.int32), np.asarray(patient_ids))


def _arrays(slices: CTSlices) -> dict:
  return dict(images=slices.images, labels=slices.labels,
              patient_ids=np.asarray(slices.patient_ids, str))


def load(dataset_config, seed: int) -> CTSlices:
  """The phantom of the config's dataset block; one of CACHE_FROM_SLICES slices or more is
  made once and then read from the preprocessed-array cache (data/cache.py)."""
  c = dataset_config
  for field in ("num_patients", "slices_per_patient"):
    if int(c[field]) < 1:
      raise DataError("phantom", f"config.dataset.{field} = {c[field]}: expected an integer "
                      ">= 1 (the phantom makes no patients or slices otherwise)")
  params = dict(seed=int(seed), num_patients=int(c.num_patients),
                slices_per_patient=int(c.slices_per_patient),
                covid_fraction=float(c.covid_fraction), image_size=int(c.image_size),
                window_level=float(c.window_level), window_width=float(c.window_width))
  make = lambda: make_phantom(seed, c.num_patients, c.slices_per_patient, c.covid_fraction,
                              c.image_size, c.window_level, c.window_width)
  if params["num_patients"] * params["slices_per_patient"] < CACHE_FROM_SLICES:
    return make()
  arrays = cache.cached_arrays("phantom", {**params, "version": PHANTOM_VERSION}, c.cache_dir,
                               lambda: _arrays(make()))
  return CTSlices(arrays["images"], arrays["labels"], arrays["patient_ids"])
