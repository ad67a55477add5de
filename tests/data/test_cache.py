"""Preprocessing cache: a hit skips decoding; a changed parameter or source file misses."""
import pathlib
import subprocess
import sys

import ml_collections
from PIL import Image

from ccfl_jax.data import cache, image_folder


def make_folder(root):
  root.mkdir()
  Image.new("L", (20, 20), 200).save(root / "a.png")
  (root / "labels.csv").write_text("path,label,patient_id\na.png,1,p1\n")


def config(root, tmp_path, image_size=8):
  return ml_collections.ConfigDict(dict(name="image_folder", path=str(root), image_size=image_size,
                                        on_bad_file="error", cache_dir=str(tmp_path / "cache")))


def count_decodes(monkeypatch):
  calls = []
  original = image_folder.read_grey
  monkeypatch.setattr(image_folder, "read_grey",
                      lambda *a, **k: calls.append(a[0]) or original(*a, **k))
  return calls


def test_second_load_does_not_decode(tmp_path, monkeypatch):
  make_folder(tmp_path / "d")
  calls = count_decodes(monkeypatch)
  first = image_folder.load(config(tmp_path / "d", tmp_path), 0)
  second = image_folder.load(config(tmp_path / "d", tmp_path), 0)
  assert len(calls) == 1
  assert (first.images == second.images).all() and list(second.patient_ids) == ["p1"]


def test_parameter_or_content_change_invalidates(tmp_path, monkeypatch):
  make_folder(tmp_path / "d")
  calls = count_decodes(monkeypatch)
  image_folder.load(config(tmp_path / "d", tmp_path), 0)
  assert image_folder.load(config(tmp_path / "d", tmp_path, image_size=16), 0).images.shape[1] == 16
  Image.new("L", (20, 20), 10).save(tmp_path / "d" / "a.png")  # same size, new content
  changed = image_folder.load(config(tmp_path / "d", tmp_path), 0)
  assert len(calls) == 3 and changed.images.max() < 0.1


def test_cache_location_and_clear(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert cache.cache_root("") == tmp_path / "xdg" / "ccfl_jax"
  make_folder(tmp_path / "d")
  image_folder.load(config(tmp_path / "d", tmp_path), 0)
  assert list((tmp_path / "cache" / "slices").glob("image_folder-*.npz"))
  done = subprocess.run([sys.executable, "-m", "ccfl_jax.data.cache",
                         f"--cache_dir={tmp_path / 'cache'}", "--clear"],
                        cwd=pathlib.Path(__file__).resolve().parents[2], capture_output=True,
                        text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert not (tmp_path / "cache" / "slices").exists()


def test_warnings_survive_a_cache_hit(tmp_path, monkeypatch):
  make_folder(tmp_path / "d")  # a.png is 20x20: a tiny image
  calls = count_decodes(monkeypatch)
  first = image_folder.load(config(tmp_path / "d", tmp_path), 0)
  second = image_folder.load(config(tmp_path / "d", tmp_path), 0)
  assert len(calls) == 1
  assert len(first.warnings) == 1 and "a.png, 20x20" in first.warnings[0]
  assert second.warnings == first.warnings
