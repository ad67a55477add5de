"""Dataset registry: `config.dataset.name` -> a loader returning `CTSlices`.

Every loader is `load(dataset_config, seed) -> CTSlices`, where `dataset_config` is the
config's `dataset` block (name, path, image_size, window_level, window_width, ...).
"""
import importlib

from ccfl_jax.data.slices import CTSlices

LOADERS = {
    "phantom": "ccfl_jax.data.phantom",
    "dicom": "ccfl_jax.data.dicom",
    "image_folder": "ccfl_jax.data.image_folder",
    "cc19": "ccfl_jax.data.cc19",
}


def dataset_names() -> tuple[str, ...]:
  return tuple(LOADERS)


def load_dataset(dataset_config, seed: int) -> CTSlices:
  name = dataset_config.name
  if name not in LOADERS:
    raise ValueError(f"config.dataset.name: unknown dataset {name!r}; "
                     f"choose one of {', '.join(LOADERS)}")
  return importlib.import_module(LOADERS[name]).load(dataset_config, seed)
