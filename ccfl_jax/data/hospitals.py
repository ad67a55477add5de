"""Hospitals as a leading array axis: each hospital's slices padded to a common length."""
from typing import NamedTuple

import numpy as np

from ccfl_jax.data.slices import CTSlices


class HospitalData(NamedTuple):
  """images (H, N, h, w, 1), labels (H, N), counts (H,): hospital h owns the first counts[h]."""
  images: np.ndarray
  labels: np.ndarray
  counts: np.ndarray


def stack_hospitals(slices: CTSlices, hospital_indices) -> HospitalData:
  """Pads every hospital to the largest one's slice count (padding is never sampled)."""
  longest = max(len(index) for index in hospital_indices)
  images = np.zeros((len(hospital_indices), longest) + slices.images.shape[1:], np.float32)
  labels = np.zeros((len(hospital_indices), longest), np.int32)
  for h, index in enumerate(hospital_indices):
    images[h, :len(index)] = slices.images[index]
    labels[h, :len(index)] = slices.labels[index]
  counts = np.asarray([len(index) for index in hospital_indices], np.int32)
  return HospitalData(images, labels, counts)
