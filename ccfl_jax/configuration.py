"""The configuration schema: every field a run understands, with its default.

Config files under `configs/` start from `default_config()` and change what they need, so
a misspelt field fails where it is written. `validate` checks values before anything is
built and raises `ConfigError` naming the field and what was expected.
"""
import difflib

import ml_collections


class ConfigError(ValueError):
  """A config field holds something a run cannot use."""


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.run_name = "default"
  c.results_dir = "results"
  c.seed = 0

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "phantom"      # phantom | dicom | image_folder | cc19
  c.dataset.path = ""             # folder of a real dataset (not used by phantom)
  c.dataset.image_size = 64       # slices are resized to image_size x image_size
  c.dataset.window_level = -600.0  # lung window, Hounsfield units
  c.dataset.window_width = 1500.0
  c.dataset.on_bad_file = "error"  # error | skip (skipped files are counted in the summary)
  c.dataset.cache_dir = ""        # preprocessed-array cache; "" = the user's cache dir
  c.dataset.num_patients = 180    # phantom only
  c.dataset.slices_per_patient = 8  # phantom only
  c.dataset.covid_fraction = 0.5  # phantom only

  c.partition = ml_collections.ConfigDict()
  c.partition.kind = "iid"        # iid | dirichlet | by_site
  c.partition.alpha = 0.5         # dirichlet concentration (smaller = more label skew)
  c.partition.test_fraction = 0.2  # patients held out for evaluation
  c.partition.use_official_split = True  # real data with a split column: train -> hospitals

  c.model = ml_collections.ConfigDict()
  c.model.name = "small_cnn"

  c.num_hospitals = 9             # H
  c.hospitals_per_round = 9       # m_t, sampled without replacement each round
  c.num_rounds = 40
  c.local_steps = 5               # K local optimizer steps per round
  c.batch_size = 32

  c.local_optimizer = ml_collections.ConfigDict()
  c.local_optimizer.name = "sgd"  # any optax optimizer taking learning_rate
  c.local_optimizer.learning_rate = 0.1
  c.local_optimizer.momentum = 0.9  # sgd only

  c.server_optimizer = ml_collections.ConfigDict()
  c.server_optimizer.name = "fedavg"  # fedavg (= sgd, lr 1) | sgd | adam | ...
  c.server_optimizer.learning_rate = 1.0

  c.privacy = ml_collections.ConfigDict()
  c.privacy.clip_norm = 1.0       # S
  c.privacy.noise_multiplier = 0.1  # sigma: noise std on the sum is sigma * S
  c.privacy.delta = 1e-5

  c.engine = ml_collections.ConfigDict()
  c.engine.kind = "compiled"      # compiled | sequential
  c.engine.hospital_axis = "auto"  # auto | vmap | unroll (within one device)
  c.engine.unroll_local_steps = "auto"  # auto | true | false
  c.engine.num_devices = 0        # 0 = all local devices

  c.eval_batch_size = 256
  c.checkpoint_every = 5
  c.max_checkpoints_to_keep = 3
  return c
