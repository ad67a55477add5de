"""Image-folder reader: the real UCSD collection, every image mode, and bad input."""
import contextlib
import warnings

import ml_collections
import numpy as np
import pytest
from PIL import Image

from ccfl_jax.data import image_folder
from ccfl_jax.data.errors import DataError


def dataset_config(path, tmp_path, on_bad_file="error", image_size=32):
  return ml_collections.ConfigDict(dict(
      name="image_folder", path=str(path), image_size=image_size, window_level=-600.0,
      window_width=1500.0, on_bad_file=on_bad_file, cache_dir=str(tmp_path / "cache")))


def write_folder(root, rows, header="path,label,patient_id,split"):
  """Writes a white-square image per row (unless the path is absent) and labels.csv."""
  root.mkdir(parents=True, exist_ok=True)
  for row in rows:
    path = root / row.split(",")[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (40, 20), 255).save(path)
  (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n")


def test_ucsd_loads_with_patients_and_official_split(ucsd_dir, tmp_path):
  slices = image_folder.load(dataset_config(ucsd_dir, tmp_path), 0)
  assert slices.images.shape == (543, 32, 32, 1)
  assert slices.images.min() >= 0.0 and slices.images.max() <= 1.0
  assert {s: int((slices.split == s).sum()) for s in ("train", "val")} == {"train": 425, "val": 118}
  assert int(slices.labels[slices.split == "train"].sum()) == 191
  assert int(slices.labels[slices.split == "val"].sum()) == 60
  train = set(slices.patient_ids[slices.split == "train"])
  assert not train & set(slices.patient_ids[slices.split == "val"])
  assert slices.skipped == () and slices.warnings == ()


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "LA"])
def test_any_mode_to_one_channel(tmp_path, mode):
  if mode == "I;16":
    image = Image.fromarray(np.full((60, 30), 65535, np.uint16))
  else:
    image = Image.new("RGB", (30, 60), (255, 255, 255)).convert(mode)
  image.save(tmp_path / "x.png")
  grey = image_folder.read_image(tmp_path / "x.png", 16)
  assert grey.shape == (16, 16, 1) and grey.dtype == np.float32
  assert grey.max() == pytest.approx(1.0, abs=0.01)


def test_aspect_preserving_resize_and_pad(tmp_path):
  Image.new("RGB", (80, 40), (255, 255, 255)).save(tmp_path / "wide.jpg")
  grey = image_folder.read_image(tmp_path / "wide.jpg", 16)[..., 0]
  assert np.all(grey[4:12] > 0.9)  # the image, 16 wide x 8 high, centred
  assert np.all(grey[:4] == 0) and np.all(grey[12:] == 0)  # black padding above and below


def test_transparent_pixels_become_black(tmp_path):
  Image.new("RGBA", (20, 20), (255, 255, 255, 0)).save(tmp_path / "clear.png")
  assert image_folder.read_image(tmp_path / "clear.png", 8).max() == 0.0


def expect_error(root, tmp_path, file_name, problem):
  with pytest.raises(DataError, match=problem) as info:
    image_folder.load(dataset_config(root, tmp_path), 0)
  assert file_name in str(info.value)


def test_row_naming_missing_file(tmp_path):
  write_folder(tmp_path / "d", ["a.png,1,p1,train"])
  with open(tmp_path / "d" / "labels.csv", "a") as f:
    f.write("gone.png,0,p2,train\n")
  expect_error(tmp_path / "d", tmp_path, "gone.png", "missing")


def test_label_not_zero_or_one(tmp_path):
  write_folder(tmp_path / "d", ["a.png,yes,p1,train"])
  expect_error(tmp_path / "d", tmp_path, "labels.csv line 2", "not 0 or 1")


def test_duplicate_paths(tmp_path):
  write_folder(tmp_path / "d", ["a.png,1,p1,train", "a.png,1,p1,train"])
  expect_error(tmp_path / "d", tmp_path, "labels.csv line 3", "duplicate path")


@pytest.mark.parametrize("outside", ["../outside.png", "sub/../../outside.png", "/abs/x.png"])
def test_paths_outside_the_dataset_folder_are_refused(tmp_path, outside):
  write_folder(tmp_path / "d", ["a.png,1,p1,train"])
  Image.new("L", (40, 20), 255).save(tmp_path / "outside.png")  # exists, and is not read
  with open(tmp_path / "d" / "labels.csv", "a") as f:
    f.write(f"{outside},0,p2,train\n")
  expect_error(tmp_path / "d", tmp_path, "labels.csv line 3", "leaves the dataset folder")


def test_missing_column(tmp_path):
  write_folder(tmp_path / "d", ["a.png,1"], header="path,label")
  expect_error(tmp_path / "d", tmp_path, "labels.csv", "missing column.*patient_id")


def test_empty_folder(tmp_path):
  (tmp_path / "d").mkdir()
  expect_error(tmp_path / "d", tmp_path, "d", "no labels.csv")


def test_labels_without_rows(tmp_path):
  write_folder(tmp_path / "d", [])
  expect_error(tmp_path / "d", tmp_path, "labels.csv", "no rows")


def test_unreadable_and_truncated_images(tmp_path):
  write_folder(tmp_path / "d", ["a.png,1,p1,train", "b.png,0,p2,train"])
  (tmp_path / "d" / "b.png").write_bytes(b"not an image")
  expect_error(tmp_path / "d", tmp_path, "b.png", "unreadable image")
  Image.new("RGB", (200, 200), (9, 9, 9)).save(tmp_path / "d" / "b.png")
  data = (tmp_path / "d" / "b.png").read_bytes()
  (tmp_path / "d" / "b.png").write_bytes(data[:len(data) // 2])
  expect_error(tmp_path / "d", tmp_path, "b.png", "unreadable image")


def test_skip_counts_every_bad_file(tmp_path):
  write_folder(tmp_path / "d", ["a.png,1,p1,train", "b.png,0,p2,val", "c.png,0,p3,val"])
  (tmp_path / "d" / "b.png").write_bytes(b"junk")
  (tmp_path / "d" / "c.png").unlink()
  slices = image_folder.load(dataset_config(tmp_path / "d", tmp_path, on_bad_file="skip"), 0)
  assert list(slices.patient_ids) == ["p1"] and list(slices.split) == ["train"]
  assert sorted(s.path.split("/")[-1] for s in slices.skipped) == ["b.png", "c.png"]


# --- data-quality checks: tiny images warned, decompression bombs refused -------------------

def write_images(root, sizes: dict):
  """One white image per name -> (width, height), all of patient p<i>, label 1 then 0 ..."""
  root.mkdir(parents=True, exist_ok=True)
  rows = []
  for i, (name, size) in enumerate(sizes.items()):
    Image.new("L", size, 255).save(root / name)
    rows.append(f"{name},{i % 2},p{i},train")
  (root / "labels.csv").write_text("\n".join(["path,label,patient_id,split", *rows]) + "\n")
  return root


def test_clean_folder_of_mixed_sizes_gives_no_warning(tmp_path):
  root = write_images(tmp_path / "d", {"a.png": (40, 40), "b.png": (64, 32), "c.png": (512, 512)})
  assert image_folder.load(dataset_config(root, tmp_path), 0).warnings == ()


def test_tiny_images_give_one_warning_with_count_and_first_file(tmp_path):
  root = write_images(tmp_path / "d", {"a.png": (40, 40), "b.png": (16, 12), "c.png": (40, 31)})
  slices = image_folder.load(dataset_config(root, tmp_path), 0)
  assert len(slices) == 3
  (warning,) = slices.warnings
  assert warning.startswith(f"2 image(s) smaller than 32 pixels on a side (first: {root / 'b.png'}"
                            ", 16x12)")


BOMB_LIMIT = 2000  # pixels; PIL warns above this, and raises above twice this


@contextlib.contextmanager
def no_bomb_warning():
  """Fails the test if PIL's DecompressionBombWarning escapes the reader."""
  with warnings.catch_warnings():
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    yield


@pytest.fixture
def small_bomb_limit(monkeypatch):
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)


@pytest.mark.parametrize("name,size,claimed", [
    ("warned.png", (50, 50), "50x50 image (2,500 pixels)"),      # 1x-2x: PIL only warns
    ("refused.png", (70, 70), "image of 4,900 pixels"),          # > 2x: PIL raises
])
def test_decompression_bomb_is_a_data_error_naming_the_file(tmp_path, small_bomb_limit, name,
                                                             size, claimed):
  root = write_images(tmp_path / "d", {"a.png": (40, 40), name: size})
  with no_bomb_warning():
    with pytest.raises(DataError) as info:
      image_folder.load(dataset_config(root, tmp_path), 0)
  assert str(info.value) == (
      f"{root / name}: {claimed} exceeds PIL.Image.MAX_IMAGE_PIXELS (2,000 pixels): refused as "
      "a possible decompression bomb; expected a CT slice image (typically 512x512)")


def test_decompression_bombs_are_skipped_with_the_reason(tmp_path, small_bomb_limit):
  root = write_images(tmp_path / "d", {"a.png": (40, 40), "b.png": (50, 50), "c.png": (70, 70)})
  with no_bomb_warning():
    slices = image_folder.load(dataset_config(root, tmp_path, on_bad_file="skip"), 0)
  assert list(slices.patient_ids) == ["p0"]
  problems = {s.path.split("/")[-1]: s.problem for s in slices.skipped}
  assert set(problems) == {"b.png", "c.png"}
  assert all("possible decompression bomb" in p for p in problems.values())
