"""`CTSlices`: the one in-memory form of every dataset, synthetic or real."""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class CTSlices:
  """Preprocessed CT slices with the patient each belongs to.

  Attributes:
    images: (N, H, W, 1) float32 in [0, 1] (lung-windowed, resized).
    labels: (N,) int32, 1 = COVID-19, 0 = not COVID-19.
    patient_ids: (N,) str; the unit of every split (no patient in two places).
    split: (N,) str official split ('train', 'val', 'test', ...) or None.
    site: (N,) str acquiring site/hospital, or None (for the `by_site` partitioner).
  """
  images: np.ndarray
  labels: np.ndarray
  patient_ids: np.ndarray
  split: np.ndarray | None = None
  site: np.ndarray | None = None

  def __post_init__(self):
    n = len(self.labels)
    for name in ("images", "patient_ids", "split", "site"):
      value = getattr(self, name)
      if value is not None and len(value) != n:
        raise ValueError(f"CTSlices.{name} has {len(value)} entries, labels has {n}")

  def __len__(self):
    return len(self.labels)

  def take(self, index) -> "CTSlices":
    """The slices at `index` (an integer array or boolean mask)."""
    pick = lambda a: None if a is None else a[index]
    return CTSlices(self.images[index], self.labels[index], self.patient_ids[index],
                    pick(self.split), pick(self.site))

  def patients(self) -> np.ndarray:
    """Sorted unique patient ids."""
    return np.unique(self.patient_ids)
