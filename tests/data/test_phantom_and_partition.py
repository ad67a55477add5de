from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from ccfl_jax.data import partition, phantom
from ccfl_jax.data.slices import CTSlices


def test_phantom_hounsfield_units_are_anatomical():
  volume = phantom.patient_volume(seed=0, patient=3, covid=False, num_slices=3)
  hu = phantom.to_air_outside_field_of_view(volume)
  assert volume.shape == (3, phantom.NATIVE_SIZE, phantom.NATIVE_SIZE)
  assert volume[0, 0, 0] == phantom.PADDING_HU  # outside the circular field of view
  assert abs(hu[0, 0, 0] - (-1000)) < 1e-6
  centre_row = hu[1, phantom.NATIVE_SIZE // 2]
  assert np.percentile(hu, 99.9) > 700  # bone
  assert np.any((centre_row > -900) & (centre_row < -780))  # lung parenchyma
  assert np.any((centre_row > 0) & (centre_row < 80))  # soft tissue


def test_covid_patients_have_ground_glass_opacities_in_the_lungs():
  def lung_fraction_in_ggo_range(covid):
    fractions = []
    for patient in range(6):
      hu = phantom.patient_volume(1, patient, covid, 4)
      fractions.append(np.mean((hu > -700) & (hu < -300)))
    return np.mean(fractions)
  assert lung_fraction_in_ggo_range(True) > 2 * lung_fraction_in_ggo_range(False)


def test_phantom_is_deterministic_and_windowed():
  a = phantom.make_phantom(5, 6, 2, 0.5, 32, -600, 1500)
  b = phantom.make_phantom(5, 6, 2, 0.5, 32, -600, 1500)
  np.testing.assert_array_equal(a.images, b.images)
  assert a.images.shape == (12, 32, 32, 1) and a.images.min() >= 0 and a.images.max() <= 1
  assert a.labels.sum() == 6 and len(a.patients()) == 6


def _slices(num_patients=60, per_patient=3, seed=0, split=None):
  rng = np.random.default_rng(seed)
  labels = np.repeat(rng.integers(0, 2, num_patients), per_patient).astype(np.int32)
  ids = np.repeat([f"p{i}" for i in range(num_patients)], per_patient)
  images = np.zeros((len(labels), 4, 4, 1), np.float32)
  return CTSlices(images, labels, ids, split=split)


@pytest.mark.parametrize("kind", ["iid", "dirichlet"])
def test_no_patient_in_two_places_and_all_assigned(kind):
  slices = _slices()
  part = partition.partition(slices, 7, kind, seed=1, test_fraction=0.2, alpha=0.3)
  places = [set(slices.patient_ids[i]) for i in part.hospitals] + [set(slices.patient_ids[part.test])]
  for i in range(len(places)):
    for j in range(i + 1, len(places)):
      assert not places[i] & places[j]
  assert set().union(*places) == set(slices.patient_ids)
  assert sorted(np.concatenate(part.hospitals + (part.test,))) == list(range(len(slices)))
  assert all(len(h) > 0 for h in part.hospitals)
  again = partition.partition(slices, 7, kind, seed=1, test_fraction=0.2, alpha=0.3)
  assert all(np.array_equal(a, b) for a, b in zip(part.hospitals, again.hospitals))


def test_dirichlet_skews_labels_more_than_iid():
  slices = _slices(num_patients=400, per_patient=1)
  def spread(kind):
    part = partition.partition(slices, 8, kind, seed=0, alpha=0.1)
    return np.std([slices.labels[h].mean() for h in part.hospitals])
  assert spread("dirichlet") > 3 * spread("iid")


def test_official_split_decides_the_test_set():
  split = np.repeat(np.where(np.arange(60) % 5 == 0, "val", "train"), 3)
  part = partition.partition(_slices(split=split), 4, "iid", seed=0)
  assert set(split[part.test]) == {"val"}
  assert all(set(split[h]) == {"train"} for h in part.hospitals)


def test_by_site_needs_one_hospital_per_site():
  slices = _slices(num_patients=12, per_patient=1)
  site = np.asarray(["a", "b", "c"] * 4)
  with_site = CTSlices(slices.images, slices.labels, slices.patient_ids, site=site)
  part = partition.partition(with_site, 3, "by_site", seed=0, test_fraction=0.25)
  assert all(len(set(site[h])) == 1 for h in part.hospitals)
  with pytest.raises(ValueError, match="num_hospitals.*3 sites"):
    partition.partition(with_site, 4, "by_site", seed=0)


@settings(max_examples=40, deadline=None)
@given(num_hospitals=st.integers(1, 12), alpha=st.floats(0.05, 100.0), seed=st.integers(0, 2**16),
       kind=st.sampled_from(["iid", "dirichlet"]), extra_patients=st.integers(0, 30))
def test_every_patient_is_assigned_exactly_once_for_any_h_alpha_and_seed(
    num_hospitals, alpha, seed, kind, extra_patients):
  num_patients = 2 * num_hospitals + 4 + extra_patients  # enough for one per hospital + test
  slices = _slices(num_patients=num_patients, per_patient=2, seed=seed)
  part = partition.partition(slices, num_hospitals, kind, seed=seed, test_fraction=0.2,
                             alpha=alpha)
  assert len(part.hospitals) == num_hospitals
  everything = np.concatenate(part.hospitals + (part.test,))
  assert sorted(everything) == list(range(len(slices)))  # every slice exactly once
  owner = {}
  for place, index in enumerate(part.hospitals + (part.test,)):
    for patient in set(slices.patient_ids[index]):
      assert owner.setdefault(patient, place) == place  # a patient never in two places


def test_a_large_phantom_is_made_once_then_read_from_the_cache(tmp_path, monkeypatch):
  from ccfl_jax.configuration import default_config
  block = default_config().dataset
  block.num_patients, block.slices_per_patient, block.image_size = 3, 2, 16
  block.cache_dir = str(tmp_path)
  monkeypatch.setattr(phantom, "CACHE_FROM_SLICES", 6)
  made = phantom.load(block, seed=5)
  entries = list((tmp_path / "slices").glob("phantom-*.npz"))
  assert len(entries) == 1
  calls = []
  monkeypatch.setattr(phantom, "make_phantom", lambda *a: calls.append(a))
  again = phantom.load(block, seed=5)
  assert calls == []  # read, not made
  np.testing.assert_array_equal(again.images, made.images)
  np.testing.assert_array_equal(again.labels, made.labels)
  assert list(again.patient_ids) == list(made.patient_ids)
  block.image_size = 8  # another parameter: another entry, made afresh
  monkeypatch.undo()
  monkeypatch.setattr(phantom, "CACHE_FROM_SLICES", 6)
  phantom.load(block, seed=5)
  assert len(list((tmp_path / "slices").glob("phantom-*.npz"))) == 2
  block.num_patients = 2  # 4 slices: under the threshold, not cached
  phantom.load(block, seed=5)
  assert len(list((tmp_path / "slices").glob("phantom-*.npz"))) == 2
