"""Data-quality rules on decoded image sizes: the pure functions behind the loaders' warnings."""
from ccfl_jax.data import image_checks


def test_tiny_images_warning_counts_and_names_only_the_first():
  sized = [("ok.png", (32, 32))] + [(f"t{i}.png", (8, 40)) for i in range(10_000)]
  warning = image_checks.tiny_images_warning(sized)
  assert warning.startswith("10000 image(s) smaller than 32 pixels on a side (first: t0.png, "
                            "40x8)")
  assert image_checks.tiny_images_warning([("ok.png", (32, 512))]) is None


def test_mixed_sizes_most_common_first_and_first_odd_one():
  ordered = [("a", (256, 256)), ("b", (512, 512)), ("c", (512, 512)), ("d", (128, 64))]
  assert image_checks.mixed_sizes_warning("S", ordered) == (
      "series S mixes slice sizes 512x512, 256x256 and 64x128 (first odd one: a)")
  assert image_checks.mixed_sizes_warning("S", ordered[1:3]) is None


def test_series_are_checked_separately():
  slices = [("S1", "a", (512, 512)), ("S2", "b", (256, 256)), ("S1", "c", (512, 512))]
  assert image_checks.mixed_series_sizes_warnings(slices) == []


def test_dicom_claimed_size_limits():
  assert image_checks.dicom_claimed_size_problem(512, 512, 4000) is None
  assert "per frame" in image_checks.dicom_claimed_size_problem(16385, 16384, None)
  assert "9,000 frames" in image_checks.dicom_claimed_size_problem(512, 512, 9000)
  assert image_checks.dicom_claimed_size_problem(None, 512, 1) is None
