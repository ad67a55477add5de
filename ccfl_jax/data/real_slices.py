"""`RealSlices`: `CTSlices` plus where each slice came from, which files were skipped, and the
loader's data-quality warnings (`ccfl_jax.data.image_checks`)."""
import dataclasses

import numpy as np

from ccfl_jax.data.errors import SkippedFile
from ccfl_jax.data.slices import CTSlices


@dataclasses.dataclass(frozen=True)
class RealSlices(CTSlices):
  """Slices read from files, with per-slice provenance.

  Attributes (beyond `CTSlices`):
    source_paths: (N,) str file each slice was read from.
    slice_positions: (N,) float32 position along the slice normal in mm (NaN for 2-D images).
    slice_thickness: (N,) float32 mm (NaN where unknown).
    skipped: files left out under `on_bad_file='skip'`, each with its problem. Every run
      summary should report `len(skipped)`.
    warnings: the loader's data-quality warnings, one line each (tiny images, mixed slice
      sizes in a series); the caller logs them with the partition's warnings.
  """
  source_paths: np.ndarray | None = None
  slice_positions: np.ndarray | None = None
  slice_thickness: np.ndarray | None = None
  skipped: tuple[SkippedFile, ...] = ()
  warnings: tuple[str, ...] = ()

  def take(self, index) -> "RealSlices":
    """The slices at `index`, keeping the provenance (the skipped record and warnings are the
    whole load's)."""
    pick = lambda a: None if a is None else a[index]
    return RealSlices(
        self.images[index], self.labels[index], self.patient_ids[index], pick(self.split),
        pick(self.site), pick(self.source_paths), pick(self.slice_positions),
        pick(self.slice_thickness), self.skipped, self.warnings)


def skipped_files(slices: CTSlices) -> tuple[SkippedFile, ...]:
  """Files a loader left out (empty for synthetic data)."""
  return getattr(slices, "skipped", ())


def loader_warnings(slices: CTSlices) -> tuple[str, ...]:
  """The loader's data-quality warnings (empty for synthetic data)."""
  return getattr(slices, "warnings", ())
