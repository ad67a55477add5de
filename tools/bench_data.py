r"""Data-loading speed: cold decoding vs. the preprocessing cache, on the real data in ../shared/data.

  python tools/bench_data.py [--shared=../shared/data] [--image_size=64] [--out=results/bench_data.md]

Cold: decode + HU + window + resize + write the cache entry, starting from an empty cache.
Cached: the same `load` call again (source digests from the size/mtime memo, then one .npz read).
Cached, rehash: a hit whose digest memo was deleted, so every source byte is hashed again (the
cost of a hit after the files were touched). Every cache lives in a temporary folder.
"""
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings

import ml_collections
from absl import app, flags, logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from ccfl_jax.data import dicom, image_folder  # noqa: E402

_ROOT = pathlib.Path(__file__).resolve().parents[1]
flags.DEFINE_string("shared", str(_ROOT.parent / "shared" / "data"),
                    "Folder holding covid_ct_md/ (DICOM) and ucsd_covid_ct/ (PNG/JPG).")
flags.DEFINE_integer("image_size", 64, "Slices are resized to image_size x image_size.")
flags.DEFINE_integer("cold_repeats", 2, "Cold loads per dataset, each into a fresh empty cache.")
flags.DEFINE_integer("cached_repeats", 5,
                     "Cached loads (and cached-with-rehash loads) after each cold one.")
flags.DEFINE_string("out", str(_ROOT / "results" / "bench_data.md"), "Markdown report to write.")


def dataset_config(name: str, path: pathlib.Path, image_size: int, cache_dir: str):
  return ml_collections.ConfigDict(dict(
      name=name, path=str(path), image_size=image_size, window_level=-600.0, window_width=1500.0,
      on_bad_file="error", cache_dir=cache_dir))


def timed(function) -> tuple[float, object]:
  start = time.perf_counter()
  result = function()
  return time.perf_counter() - start, result


def bench(loader, name: str, path: pathlib.Path, image_size: int, cold_repeats: int,
          cached_repeats: int) -> dict:
  """Median seconds of cold, cached and cached-with-rehash loads of one dataset."""
  cold, cached, rehash = [], [], []
  for _ in range(cold_repeats):
    cache_dir = tempfile.mkdtemp(prefix="ccfl_bench_")
    try:
      config = dataset_config(name, path, image_size, cache_dir)
      seconds, slices = timed(lambda: loader.load(config, 0))
      cold.append(seconds)
      for _ in range(cached_repeats):
        cached.append(timed(lambda: loader.load(config, 0))[0])
      for _ in range(cached_repeats):
        shutil.rmtree(pathlib.Path(cache_dir) / "file_digests")
        rehash.append(timed(lambda: loader.load(config, 0))[0])
    finally:
      shutil.rmtree(cache_dir, ignore_errors=True)
  return dict(name=name, path=path, slices=len(slices), cold=statistics.median(cold),
              cached=statistics.median(cached), rehash=statistics.median(rehash))


def markdown(rows: list[dict], image_size: int, command: str) -> str:
  cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
              if line.startswith("model name")), platform.processor()) \
      if os.path.exists("/proc/cpuinfo") else platform.processor()
  lines = [
      "# Data loading: cold decoding vs. the preprocessing cache", "",
      f"`{command}` on {os.cpu_count()} CPU cores ({cpu}), shared with other jobs (load "
      f"average {os.getloadavg()[0]:.1f} at the end), "
      f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}. Slices resized to "
      f"{image_size}x{image_size}; medians; caches in a temporary folder.", "",
      "| data | slices | cold s | cold slices/s | cached s | cached slices/s | speed-up | "
      "cached, rehash s | speed-up |",
      "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['label']} | {r['slices']} | {r['cold']:.2f} | {r['slices'] / r['cold']:.0f} | "
        f"{r['cached']:.3f} | {r['slices'] / r['cached']:.0f} | {r['cold'] / r['cached']:.0f}x | "
        f"{r['rehash']:.3f} | {r['cold'] / r['rehash']:.0f}x |")
  lines += [
      "", "- cold: decode (JPEG Lossless via pylibjpeg for COVID-CT-MD; PNG/JPG via Pillow for "
      "UCSD), HU, field of view, lung window, resize, and write the cache entry.",
      "- cached: the same `load` again: a `stat` per source file (content digests remembered "
      "with size and mtime), the key, one `.npz` read.",
      "- cached, rehash: a hit after the digest memo is gone (e.g. files touched): every source "
      "byte is hashed (BLAKE2b) before the `.npz` read: slower than a memo hit, and for the "
      "small, quickly decoded UCSD images not 20x faster than decoding.", ""]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  args = flags.FLAGS
  warnings.filterwarnings("ignore", message="Invalid value for VR UI")
  shared = pathlib.Path(args.shared)
  cases = [(dicom, "dicom", shared / "covid_ct_md", "COVID-CT-MD, 2 DICOM volumes (JPEG Lossless, 512x512)"),
           (image_folder, "image_folder", shared / "ucsd_covid_ct", "UCSD COVID-CT, 543 PNG/JPG images")]
  rows = []
  for loader, name, path, label in cases:
    row = bench(loader, name, path, args.image_size, args.cold_repeats, args.cached_repeats)
    row["label"] = label
    print(f"{label}: {row['slices']} slices, cold {row['cold']:.2f} s, cached {row['cached']:.3f} s "
          f"({row['cold'] / row['cached']:.0f}x), rehash {row['rehash']:.3f} s", flush=True)
    rows.append(row)
  command = "python tools/bench_data.py" + "".join(f" {a}" for a in sys.argv[1:])
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.out).write_text(markdown(rows, args.image_size, command))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  app.run(main)
