"""CC-19 (Kumar et al., Sec. IV-A) as a tensorflow-datasets builder (`config.dataset.name = 'cc19'`).

CC-19 (89 subjects, 34,006 slices of DICOM CT) cannot be downloaded automatically, so the user
places it in a manual folder, `config.dataset.path`. The builder reads it with the DICOM reader
(`ccfl_jax.data.dicom`: HU, field of view, lung window, resize) and writes preprocessed slices in
the `array_record` format, read back with `tfds.data_source` -- no TensorFlow needed.

Each preprocessing setting (image size, window, on_bad_file) and each version of the manual
folder's content is its own builder config, so a change rebuilds instead of serving stale
slices. The prepared data's metadata records the reader's skipped files and data-quality
warnings, so every later read reports them. Prepared data lives in `config.dataset.tfds_data_dir`, or when that is '' in
`<preprocessing cache>/tensorflow_datasets` (see `ccfl_jax.data.cache`); delete it to clear.

tensorflow-datasets is the optional extra `cc19` (`pip install -e ".[cc19]"`): this module
imports it only when a CC-19 builder is first needed, so the package imports without it, and
choosing `cc19` without it stops with one line naming the extra (`require_tfds`).
"""
import functools

from etils import epath
import numpy as np

from ccfl_jax.configuration import ConfigError
from ccfl_jax.data import cache, dicom
from ccfl_jax.data.errors import DataError, SkippedFile
from ccfl_jax.data.real_slices import RealSlices

_DESCRIPTION = """CC-19: lung CT of 89 subjects (68 COVID-19 positive, 21 negative), 34,006 slices,
collected from hospitals in Chengdu (Kumar et al., "Blockchain-Federated-Learning and Deep
Learning Models for COVID-19 detection using CT Imaging"). Stored lung-windowed and resized."""

_CITATION = """@article{kumar2021blockchain,
  title={Blockchain-Federated-Learning and Deep Learning Models for COVID-19 Detection Using CT Imaging},
  author={Kumar, Rajesh and Khan, Abdullah Aman and Kumar, Jay and Zakria and Golilarz, Noorbakhsh Amiri
          and Zhang, Simin and Ting, Yang and Zheng, Chengyu and Wang, Wenyong},
  journal={IEEE Sensors Journal}, year={2021}}"""


CC19_EXTRA = 'pip install -e ".[cc19]"'


def require_tfds():
  """tensorflow_datasets, or a one-line ConfigError naming the `cc19` extra when absent."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConfigError("the cc19 dataset needs tensorflow-datasets, the optional extra `cc19`: "
                      f"{CC19_EXTRA}") from None
  return tfds


MANUAL_DOWNLOAD_INSTRUCTIONS = """
  CC-19 cannot be downloaded automatically. Download the DICOM files ("DCM Files") linked from
  https://github.com/abdkhanstd/COVID-19 (the archive password is given there), extract them,
  and pass the extracted folder as the manual dir (config.dataset.path). It must hold either
    * labels.csv with columns path,label[,patient_id][,split][,site], where path (relative to the
      folder) is a patient's series folder or a single DICOM file and label is 1 = COVID-19,
      0 = not; split (e.g. train/test from the official split lists) becomes the tfds split; or
    * class folders: covid/ (or positive/) and non-covid/ (or negative/, normal/), each with one
      folder per patient holding that patient's DICOM series.
  """


@functools.cache
def builder_classes():
  """(Cc19Config, Cc19), defined (and registered with tfds as 'cc19') on first use."""
  tfds = require_tfds()

  class Cc19Config(tfds.core.BuilderConfig):
    """The preprocessing a prepared copy of CC-19 was made with."""

    def __init__(self, *, image_size: int = 64, window_level: float = -600.0,
                 window_width: float = 1500.0, on_bad_file: str = "error", **kwargs):
      super().__init__(**kwargs)
      self.image_size = image_size
      self.window_level = window_level
      self.window_width = window_width
      self.on_bad_file = on_bad_file

    def preprocessing_params(self) -> dict:
      return {"image_size": int(self.image_size), "window_level": float(self.window_level),
              "window_width": float(self.window_width), "on_bad_file": str(self.on_bad_file)}

  class Cc19(tfds.core.GeneratorBasedBuilder):
    """CC-19 lung CT slices with patient ids, labels and (when given) the official split."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: lung-windowed slices from the DICOM series.",
                     "1.1.0": "Records the DICOM reader's data-quality warnings."}
    BUILDER_CONFIGS = [Cc19Config(name="default", description="64x64, lung window -600/1500 HU")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
      # tfds's own lookup of this file touches `importlib_resources`, which tensorflow-datasets
      # 4.9.10 does not install; the answer is simply this module.
      return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
      size = self.builder_config.image_size
      return tfds.core.DatasetInfo(
          builder=self,
          description=_DESCRIPTION,
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Tensor(shape=(size, size, 1), dtype=np.float32),
              "label": tfds.features.ClassLabel(names=["non_covid", "covid"]),
              "patient_id": tfds.features.Tensor(shape=(), dtype=np.str_),
              "site": tfds.features.Tensor(shape=(), dtype=np.str_),
              "source_path": tfds.features.Tensor(shape=(), dtype=np.str_),
              "slice_position": tfds.features.Tensor(shape=(), dtype=np.float32),
              "slice_thickness": tfds.features.Tensor(shape=(), dtype=np.float32),
          }),
          supervised_keys=("image", "label"),
          homepage="https://github.com/abdkhanstd/COVID-19",
          citation=_CITATION,
          metadata=tfds.core.MetadataDict(),
      )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
      slices = dicom.read_labelled_tree(dl_manager.manual_dir,
                                        self.builder_config.preprocessing_params())
      # Recorded in the prepared dataset so a later read still reports what was left out.
      self.info.metadata["skipped"] = [[s.path, s.problem] for s in slices.skipped]
      self.info.metadata["warnings"] = list(slices.warnings)
      self.info.metadata["has_official_split"] = slices.split is not None
      split_names = slices.split if slices.split is not None else np.full(len(slices), "train")
      split_names = np.asarray([name or "train" for name in split_names])
      return {name: self._generate_examples(slices, np.flatnonzero(split_names == name))
              for name in sorted(set(split_names))}

    def _generate_examples(self, slices: RealSlices, indices: np.ndarray):
      for i in indices:
        yield int(i), {
            "image": slices.images[i],
            "label": int(slices.labels[i]),
            "patient_id": str(slices.patient_ids[i]),
            "site": "" if slices.site is None else str(slices.site[i]),
            "source_path": str(slices.source_paths[i]),
            "slice_position": np.float32(slices.slice_positions[i]),
            "slice_thickness": np.float32(slices.slice_thickness[i]),
        }

  return Cc19Config, Cc19


def __getattr__(name: str):
  """`cc19.Cc19` and `cc19.Cc19Config`, built on first access (see builder_classes)."""
  if name in ("Cc19Config", "Cc19"):
    return dict(zip(("Cc19Config", "Cc19"), builder_classes()))[name]
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def builder_config(dataset_config, source_digest: str):
  """The builder config of this preprocessing and this content of the manual folder."""
  params = dicom.preprocessing_params(dataset_config)
  level = f"{params['window_level']:g}".replace("-", "m").replace(".", "p")
  width = f"{params['window_width']:g}".replace(".", "p")
  name = (f"s{params['image_size']}_l{level}_w{width}_{params['on_bad_file']}_"
          f"{source_digest[:12]}")
  config_class, _ = builder_classes()
  return config_class(name=name, description="preprocessing and content of the manual folder",
                      **params)


def prepared_builder(dataset_config):
  """The CC-19 builder for this config, prepared (built on first use) in the array_record format."""
  tfds = require_tfds()
  _, builder_class = builder_classes()
  manual_dir = dicom.check_folder(dataset_config.path)
  cache_dir = dataset_config.get("cache_dir", "")
  data_dir = dataset_config.get("tfds_data_dir", "") or (
      cache.cache_root(cache_dir) / "tensorflow_datasets")
  digest = cache.sources_digest(manual_dir, cache.files_under(manual_dir), cache_dir)
  builder = builder_class(config=builder_config(dataset_config, digest), data_dir=str(data_dir),
                          file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def read_split(source) -> dict[str, np.ndarray]:
  """All records of one tfds data source, as column arrays."""
  records = [source[i] for i in range(len(source))]
  column = lambda key, dtype: np.asarray([r[key] for r in records], dtype)
  as_text = lambda key: np.asarray([r[key].decode() if isinstance(r[key], bytes) else str(r[key])
                                    for r in records], str)
  return {"images": np.stack([r["image"] for r in records]).astype(np.float32),
          "labels": column("label", np.int32), "patient_ids": as_text("patient_id"),
          "site": as_text("site"), "source_paths": as_text("source_path"),
          "slice_positions": column("slice_position", np.float32),
          "slice_thickness": column("slice_thickness", np.float32)}


def load(dataset_config, seed: int) -> RealSlices:
  """The `cc19` dataset: every split of the prepared builder, with the official split column."""
  del seed  # reading is deterministic; shuffling and splitting happen downstream
  builder = prepared_builder(dataset_config)
  sources = builder.as_data_source()
  parts = {name: read_split(source) for name, source in sorted(sources.items()) if len(source)}
  if not parts:
    raise DataError(dataset_config.path, "the prepared CC-19 dataset has no slices")
  joined = {key: np.concatenate([p[key] for p in parts.values()]) for key in
            next(iter(parts.values()))}
  split = np.concatenate([np.full(len(p["labels"]), name) for name, p in parts.items()])
  metadata = builder.info.metadata or {}
  skipped = tuple(SkippedFile(path, problem) for path, problem in metadata.get("skipped", []))
  warnings = tuple(metadata.get("warnings", []))
  # array_record files are shuffled: restore patient, then slice order for readable output.
  order = np.lexsort((joined["slice_positions"], joined["patient_ids"]))
  joined = {key: value[order] for key, value in joined.items()}
  split = split[order]
  has_site = bool(np.any(joined["site"] != ""))
  return RealSlices(
      joined["images"], joined["labels"], joined["patient_ids"],
      split.astype(str) if metadata.get("has_official_split") else None,
      joined["site"] if has_site else None, joined["source_paths"],
      joined["slice_positions"], joined["slice_thickness"], skipped, warnings)

