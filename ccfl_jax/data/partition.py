"""Patient-level splits: a held-out test set and H hospitals, never one patient in two places.

All partitioners are pure functions of (patients, labels, seed). The unit of every split is
the patient: all slices of a patient go to the same hospital (or to the test set).
"""
import dataclasses

import numpy as np

from ccfl_jax.data.slices import CTSlices

PARTITIONERS = ("iid", "dirichlet", "by_site")
EVALUATION_SPLITS = ("val", "valid", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Partition:
  """Slice indices of each hospital and of the held-out test set."""
  hospitals: tuple[np.ndarray, ...]
  test: np.ndarray


def patient_labels(slices: CTSlices) -> tuple[np.ndarray, np.ndarray]:
  """Sorted patient ids and each patient's label (COVID if any of their slices is)."""
  patients, inverse = np.unique(slices.patient_ids, return_inverse=True)
  labels = np.zeros(len(patients), np.int32)
  np.maximum.at(labels, inverse, slices.labels)
  return patients, labels


def _stratified_test_patients(labels, test_fraction, rng) -> np.ndarray:
  """Boolean mask of test patients: test_fraction of each class."""
  is_test = np.zeros(len(labels), bool)
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    is_test[members[:int(round(test_fraction * len(members)))]] = True
  return is_test


def iid_assignment(labels: np.ndarray, num_hospitals: int, seed: int) -> np.ndarray:
  """Hospital of each patient: shuffled within each class, dealt round-robin."""
  rng = np.random.default_rng([seed, 1])
  order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)])
  hospital = np.empty(len(labels), np.int64)
  hospital[order] = np.arange(len(order)) % num_hospitals
  return hospital


def dirichlet_assignment(labels: np.ndarray, num_hospitals: int, alpha: float,
                         seed: int) -> np.ndarray:
  """Label-skewed hospitals: each class spread over hospitals by Dirichlet(alpha) shares.

  Every hospital gets at least one patient (taken from the largest hospital if needed).
  """
  rng = np.random.default_rng([seed, 2])
  hospital = np.empty(len(labels), np.int64)
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    shares = rng.dirichlet(np.full(num_hospitals, alpha))
    cuts = np.round(np.cumsum(shares)[:-1] * len(members)).astype(int)
    for h, part in enumerate(np.split(members, cuts)):
      hospital[part] = h
  for h in range(num_hospitals):
    if not np.any(hospital == h):
      counts = np.bincount(hospital, minlength=num_hospitals)
      donor = np.flatnonzero(hospital == np.argmax(counts))
      hospital[donor[rng.integers(len(donor))]] = h
  return hospital


def site_assignment(sites: np.ndarray, num_hospitals: int) -> np.ndarray:
  names = np.unique(sites)
  if len(names) != num_hospitals:
    raise ValueError(f"config.num_hospitals: partition 'by_site' needs one hospital per site; "
                     f"the data has {len(names)} sites ({', '.join(map(str, names))}), "
                     f"num_hospitals is {num_hospitals}")
  return np.searchsorted(names, sites)


def partition(slices: CTSlices, num_hospitals: int, kind: str, seed: int,
              test_fraction: float = 0.2, alpha: float = 0.5,
              use_official_split: bool = True) -> Partition:
  """Splits `slices` by patient into a test set and `num_hospitals` hospitals.

  With `use_official_split` and a `split` column, slices of the 'train' split go to the
  hospitals and those of an evaluation split (val/test) to the test set; otherwise
  `test_fraction` of each class's patients are held out.
  """
  if kind not in PARTITIONERS:
    raise ValueError(f"config.partition.kind: unknown partitioner {kind!r}; "
                     f"choose one of {', '.join(PARTITIONERS)}")
  patients, labels = patient_labels(slices)
  slice_patient = np.searchsorted(patients, slices.patient_ids)
  if use_official_split and slices.split is not None:
    split = np.char.lower(slices.split.astype(str))
    test_slices = np.isin(split, EVALUATION_SPLITS)
    is_test = np.zeros(len(patients), bool)
    is_test[slice_patient[test_slices]] = True
    if np.any(is_test[slice_patient[~test_slices]]):
      raise ValueError("dataset split column: a patient has slices in both the train and an "
                       "evaluation split")
  else:
    is_test = _stratified_test_patients(labels, test_fraction, np.random.default_rng([seed, 0]))
  pool = np.flatnonzero(~is_test)
  if len(pool) < num_hospitals:
    raise ValueError(f"config.num_hospitals: {num_hospitals} hospitals but only {len(pool)} "
                     "training patients")
  if kind == "iid":
    hospital_of_pool = iid_assignment(labels[pool], num_hospitals, seed)
  elif kind == "dirichlet":
    hospital_of_pool = dirichlet_assignment(labels[pool], num_hospitals, alpha, seed)
  else:
    if slices.site is None:
      raise ValueError("config.partition.kind: 'by_site' needs a dataset with a site column")
    patient_site = np.empty(len(patients), object)
    patient_site[slice_patient] = slices.site
    hospital_of_pool = site_assignment(patient_site[pool].astype(str), num_hospitals)
  hospital = np.full(len(patients), -1)
  hospital[pool] = hospital_of_pool
  slice_hospital = hospital[slice_patient]
  return Partition(
      hospitals=tuple(np.flatnonzero(slice_hospital == h) for h in range(num_hospitals)),
      test=np.flatnonzero(is_test[slice_patient]))


def describe(slices: CTSlices, part: Partition) -> list[dict]:
  """Patients, slices and positive slices per hospital, then the test set."""
  rows = []
  for name, index in [(f"hospital {h}", idx) for h, idx in enumerate(part.hospitals)] + [
      ("test", part.test)]:
    rows.append(dict(name=name, patients=int(len(np.unique(slices.patient_ids[index]))),
                     slices=int(len(index)), positive_slices=int(slices.labels[index].sum())))
  return rows
