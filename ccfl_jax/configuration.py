"""The configuration schema: every field a run understands, with its default.

Config files under `configs/` start from `default_config()` and change what they need, so
a misspelt field fails where it is written. `validate` checks values before anything is
built and raises `ConfigError` naming the field and what was expected.
"""
import difflib
import importlib.util
import inspect
import math
import pathlib
import re

import ml_collections


class ConfigError(ValueError):
  """A config field holds something a run cannot use."""


def load_config_file(path) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, e.g. one config built on another (configs/fed3.py)."""
  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.run_name = "default"          # the run folder: <results_dir>/<run_name>
  c.results_dir = "runs"          # where runs go (untracked; committed results: results/)
  c.seed = 0                      # data, partition, init, sampling, batches and noise
  c.resume_force = False          # resume a run folder made with another config (refused
  # otherwise); epsilon then charges each round at the sigma it ran with

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "phantom"      # phantom | dicom | image_folder | cc19
  c.dataset.path = ""             # folder of a real dataset (not used by phantom)
  c.dataset.image_size = 32       # slices are resized to image_size x image_size
  c.dataset.window_level = -600.0  # lung window, Hounsfield units
  c.dataset.window_width = 1500.0  # lung window width, Hounsfield units
  c.dataset.on_bad_file = "error"  # error | skip (skipped files are counted in the summary)
  c.dataset.cache_dir = ""        # preprocessed-array cache; "" = the user's cache dir
  c.dataset.tfds_data_dir = ""    # cc19: prepared tfds data; "" = <cache dir>/tensorflow_datasets
  c.dataset.num_patients = 180    # phantom only
  c.dataset.slices_per_patient = 8  # phantom only
  c.dataset.covid_fraction = 0.5  # phantom only

  c.partition = ml_collections.ConfigDict()
  c.partition.kind = "iid"        # iid | dirichlet | by_site
  c.partition.alpha = 0.5         # dirichlet concentration (smaller = more label skew)
  c.partition.test_fraction = 0.2  # patients held out for evaluation
  c.partition.use_official_split = True  # real data with a split column: train -> hospitals

  c.model = ml_collections.ConfigDict()
  c.model.name = "small_cnn"      # a registered model (`python -m ccfl_jax.main list`); the
  # block's other fields are its constructor's arguments

  # Training-time augmentation (data/augment.py), inside the compiled round, per hospital and
  # local step (keys: federated/engine.py); never in evaluation.
  c.augment = ml_collections.ConfigDict()
  c.augment.enabled = False       # off: hospitals train on the slices as stored
  c.augment.crop = True           # random resized crop
  c.augment.crop_scale = (0.5, 1.0)  # area fraction of the crop box
  c.augment.crop_ratio = (0.75, 4 / 3)  # crop box width / height
  c.augment.flip = True           # horizontal flip, probability 1/2
  c.augment.rotation_degrees = 10.0  # rotation by U(-r, r) degrees
  c.augment.brightness = 0.1      # + U(-b, b)
  c.augment.contrast = 0.1        # (x - mean) x U(1 - c, 1 + c) + mean

  c.num_hospitals = 9             # H
  c.hospitals_per_round = 9       # m_t, sampled without replacement each round
  c.num_rounds = 40               # federated rounds (a rerun with more extends the run)
  c.local_steps = 10              # K local optimizer steps per round
  c.batch_size = 32               # local batch size B

  c.local_optimizer = ml_collections.ConfigDict()
  c.local_optimizer.name = "adam"  # any optax optimizer taking learning_rate; reset each round
  c.local_optimizer.learning_rate = 0.003  # local learning rate
  c.local_optimizer.momentum = 0.9  # sgd only
  # The local learning rate across the whole run (num_rounds x local_steps local steps; the
  # optimizer's state still resets each round): local_optimizer.learning_rate x the schedule.
  c.local_schedule = ml_collections.ConfigDict()
  c.local_schedule.name = "constant"  # constant | cosine | one_cycle
  c.local_schedule.warmup_fraction = 0.3  # cosine, one_cycle: share of the steps spent warming up

  c.server_optimizer = ml_collections.ConfigDict()
  c.server_optimizer.name = "fedavg"  # fedavg (= sgd, lr 1) | sgd | adam | ...
  c.server_optimizer.learning_rate = 1.0  # server learning rate (ignored by fedavg)

  c.privacy = ml_collections.ConfigDict()
  # gaussian_central (eq. 5: hospitals clip in L2 to S, the server noises the sum; (eps,
  # delta)-DP of the aggregate) | laplace_local (eqs. 12-13: each hospital clips in L1 to
  # B = clip_norm and adds Laplace(2B / laplace_epsilon) itself; pure DP of every submission;
  # needs noise_multiplier = 0). federated/privacy.py says how the two differ.
  c.privacy.mechanism = "gaussian_central"
  c.privacy.clip_norm = 2.0       # S (L2) under gaussian_central; B (L1) under laplace_local
  c.privacy.noise_multiplier = 0.1  # sigma: noise std on the sum is sigma * S (gaussian_central)
  c.privacy.laplace_epsilon = 1.0  # laplace_local: epsilon of each hospital's submission per round
  c.privacy.delta = 1e-5          # epsilon at this delta (laplace_local: advanced composition's)

  c.engine = ml_collections.ConfigDict()
  c.engine.kind = "compiled"      # compiled | sequential
  c.engine.hospital_axis = "auto"  # auto | vmap | unroll (within one device)
  c.engine.unroll_local_steps = "auto"  # auto | true | false
  c.engine.num_devices = 0        # 0 = all local devices
  # host: the hospitals' slices stay in host memory, each round moves only what it reads
  # (device memory independent of H); device: all of them replicated on every device once
  # (compiled engine only). Same numbers (federated/round_data.py).
  c.engine.data_placement = "host"
  # Local training's forward and backward pass: float32 | bfloat16 (mixed precision: params,
  # optimizer state, updates, clipping, noise, the vote and evaluation stay float32).
  c.engine.compute_dtype = "float32"

  # Several processes (hosts), one global device mesh (federated/processes.py): every process
  # runs the same command with its own process_id; process 0 alone writes the run folder.
  c.distributed = ml_collections.ConfigDict()
  c.distributed.num_processes = 1  # 1 = this process only; > 1: coordinator_address needed
  c.distributed.process_id = 0     # 0 .. num_processes - 1; process 0 writes the run folder
  c.distributed.coordinator_address = ""  # host:port of process 0, e.g. "10.0.0.1:8476"
  c.distributed.auto_detect = False  # True: Slurm / Open MPI / TPU pod find the three above

  # The run's audit ledger (ccfl_jax/ledger) and the MAE-vote consensus it records (eqs. 14-15).
  c.ledger = ml_collections.ConfigDict()
  c.ledger.enabled = True         # False: no ledger, no vote, every sampled update aggregated
  c.ledger.key_source = "random"  # random (fresh keys; private keys in the keystore, only
  # public keys published) | derived (from the seed: reproducible, proves nothing) | pem
  c.ledger.keystore = ""          # keystore folder; "" = $CCFL_KEYSTORE or the user's data dir
  c.ledger.difficulty = 8         # proof-of-work bits per block
  c.ledger.num_verifiers = 3      # hospitals whose validation batches judge each update
  c.ledger.validation_size = 32   # slices per hospital validation batch, drawn each round
  c.ledger.consensus = ml_collections.ConfigDict()
  c.ledger.consensus.gamma = 0.5  # eq. 15's weight on the author's own validation MAE
  c.ledger.consensus.rule = "median_mad"  # median_mad | absolute
  c.ledger.consensus.k = 3.0      # median_mad: reject score > median + k * MAD
  c.ledger.consensus.absolute_threshold = 0.5  # absolute: reject score > threshold
  c.ledger.consensus.mad_floor = 1e-3  # smallest MAD median_mad divides by
  # Update checks beyond eqs. 14-15 (ledger/consensus.py), 0 = off: reject an update whose
  # cosine with the coordinate-wise median update is below both median - direction_k * MAD
  # and direction_cosine, or whose submitted norm exceeds max_norm_ratio * the round's median.
  c.ledger.consensus.direction_k = 0.0  # direction check: MADs below the median cosine
  c.ledger.consensus.direction_cosine = 0.2  # direction check: and below this cosine
  c.ledger.consensus.max_norm_ratio = 0.0  # magnitude check: norm over this x median

  # Simulated poisoning (federated/attacks.py): hospitals 0 .. num_malicious - 1 attack.
  c.attack = ml_collections.ConfigDict()
  # none | sign_flip | scale | gaussian_noise | label_flip (per hospital) | alie | ipm |
  # min_max | min_sum (colluding, crafted from the round's updates) | backdoor (trigger patch)
  c.attack.kind = "none"
  c.attack.num_malicious = 0      # hospitals 0 .. num_malicious - 1 attack
  c.attack.scale = 10.0           # scale attack: the factor on Δw before the server clips
  # alie/ipm/min_max/min_sum: the colluders know every benign update of the round (False:
  # only their own honest updates)
  c.attack.omniscient = False
  c.attack.alie_z = 0.0           # alie: mean - z * std; 0 = Baruch et al.'s z_max for n, f
  c.attack.epsilon = 0.1          # ipm: submit -epsilon x the known mean (Xie et al.: 0.1, 10)
  # min_max/min_sum: the perturbation direction, std | unit_vec | sign (-std, -mean/||mean||,
  # -sign(mean))
  c.attack.perturbation = "std"
  c.attack.target_label = 1       # backdoor: triggered slices' label (1 = COVID, 0 = non-COVID)
  # backdoor: probability that a malicious hospital's slice is poisoned, drawn each round
  c.attack.poison_fraction = 0.5
  c.attack.trigger_size = 4       # backdoor: side (pixels) of the bright bottom-right square

  # How the server combines the accepted updates (federated/aggregation.py); each rule's
  # noised total keeps eq. 5's sensitivity 2S (the module says why).
  c.aggregation = ml_collections.ConfigDict()
  # mean (eq. 5, today's rule) | median | trimmed_mean | krum | multi_krum | norm_bound
  c.aggregation.rule = "mean"
  c.aggregation.beta = 0.1        # trimmed_mean: fraction of each coordinate trimmed at each end
  c.aggregation.f = 0             # krum/multi_krum: Byzantine updates tolerated (multi: n - f kept)
  c.aggregation.norm_bound = 0.0  # norm_bound: L2 bound on each accepted update (> 0)

  c.eval_batch_size = 256         # slices per evaluation batch
  c.checkpoint_every = 5          # rounds between checkpoints (and always the last)
  c.max_checkpoints_to_keep = 3   # older checkpoints are deleted
  c.metrics_csv = True            # metrics.csv beside metrics.jsonl (one row per round)
  c.tensorboard = False           # TensorBoard event files in tensorboard/ (extra: tensorboard)
  return c


def field_docs() -> dict[str, str]:
  """config field -> its one-line documentation: the comment beside it in default_config."""
  docs, comment_above = {}, []
  for line in inspect.getsource(default_config).splitlines():
    stripped = line.strip()
    if stripped.startswith("#"):
      comment_above.append(stripped.lstrip("# "))
      continue
    match = re.match(r"c\.([\w.]+) = (.*?)(?:\s+#\s*(.*))?$", stripped)
    if match and not match.group(2).startswith("ml_collections.ConfigDict"):
      docs[match.group(1)] = match.group(3) or " ".join(comment_above)
    comment_above = [] if not stripped.startswith("#") else comment_above
  return docs


def describe_fields() -> list[tuple[str, object, str]]:
  """(field, default, doc) for every field of the schema, in schema order."""
  docs = field_docs()
  flat = []

  def walk(block, prefix):
    for key, value in block.items():
      if isinstance(value, ml_collections.ConfigDict):
        walk(value, f"{prefix}{key}.")
      else:
        flat.append((f"{prefix}{key}", value, docs.get(f"{prefix}{key}", "")))

  walk(default_config(), "")
  return flat


UNROLL_CHOICES = ("auto", "true", "false")


def choices() -> dict[str, tuple[str, ...]]:
  """Field -> its valid values, each list owned by the module that implements the choice."""
  # Late imports, deliberately: config files import this module for default_config(), and
  # should not pay for JAX and the models on import.
  from ccfl_jax.data import errors, partition
  from ccfl_jax.federated import (aggregation, attacks, client, engine, privacy, round_data,
                                  server)
  from ccfl_jax.ledger import consensus
  return {
      "partition.kind": partition.PARTITIONERS,
      "dataset.on_bad_file": errors.ON_BAD_FILE_CHOICES,
      "engine.kind": engine.ENGINES,
      "engine.hospital_axis": ("auto",) + engine.HOSPITAL_AXES,
      "engine.unroll_local_steps": UNROLL_CHOICES,
      "engine.data_placement": round_data.PLACEMENTS,
      "engine.compute_dtype": client.COMPUTE_DTYPES,
      "ledger.consensus.rule": consensus.RULES,
      "ledger.key_source": ("random", "derived", "pem"),
      "attack.kind": attacks.KINDS,
      "attack.perturbation": attacks.PERTURBATIONS,
      "aggregation.rule": aggregation.RULES,
      "local_schedule.name": server.SCHEDULES,
      "privacy.mechanism": privacy.MECHANISMS,
  }


FREE_FORM_BLOCKS = ("model", "local_optimizer", "server_optimizer")  # kwargs of what they build


def as_bool(value) -> bool:
  return value if isinstance(value, bool) else str(value).lower() == "true"


def _unknown_fields(config, schema, prefix=""):
  for key in config.keys():
    path = f"{prefix}{key}"
    if key not in schema:
      near = difflib.get_close_matches(key, list(schema.keys()), n=1)
      hint = f" (did you mean {prefix}{near[0]}?)" if near else ""
      yield (f"config.{path}: unknown field{hint}; valid fields here: "
             f"{', '.join(sorted(schema.keys()))}")
    elif isinstance(schema[key], ml_collections.ConfigDict) and key not in FREE_FORM_BLOCKS:
      yield from _unknown_fields(config[key], schema[key], path + ".")


def _get(config, path):
  for part in path.split("."):
    config = config[part]
  return config


def _check(condition: bool, field: str, expected: str, config) -> None:
  if not condition:
    raise ConfigError(f"config.{field} = {_get(config, field)!r}: expected {expected}")


def _validate_attack_and_aggregation(config) -> None:
  """config.attack and config.aggregation as their dataclasses check them, and the rule
  against DP (aggregation.check_privacy_compatible: a rule without eq. 5's sensitivity bound
  is refused with sigma > 0)."""
  from ccfl_jax import builders
  from ccfl_jax.federated import aggregation
  _check(config.attack.trigger_size <= config.dataset.image_size, "attack.trigger_size",
         f"a side <= dataset.image_size ({config.dataset.image_size})", config)
  try:
    builders.attack(config)
    rule = builders.aggregation_rule(config)
    aggregation.check_privacy_compatible(rule, config.privacy.noise_multiplier)
  except (TypeError, ValueError) as error:
    raise ConfigError(f"config.{error}") from None


def _validate_laplace_local(config) -> None:
  """privacy.mechanism = laplace_local against what cannot go with it (federated/privacy.py,
  "In the round"): server noise, the vote's magnitude check, the norm_bound rule, the
  colluding attacks."""
  from ccfl_jax.federated import attacks
  if config.privacy.mechanism != "laplace_local":
    return
  _check(0 < config.privacy.laplace_epsilon < math.inf, "privacy.laplace_epsilon",
         "a finite per-round epsilon > 0", config)
  _check(config.privacy.noise_multiplier == 0, "privacy.noise_multiplier",
         "0 under privacy.mechanism=laplace_local (each hospital adds its own Laplace noise; "
         "the server adds none)", config)
  _check(not (config.ledger.enabled and config.ledger.consensus.max_norm_ratio > 0),
         "ledger.consensus.max_norm_ratio",
         "0 under privacy.mechanism=laplace_local (the magnitude check publishes each "
         "hospital's un-noised update norm, outside its local guarantee; a noised "
         "submission's norm is the noise's)", config)
  _check(config.aggregation.rule != "norm_bound", "aggregation.rule",
         "a rule other than norm_bound under privacy.mechanism=laplace_local (every noised "
         "submission's L2 norm is the noise's, so the bound rescales honest updates alike and "
         "bounds nothing)", config)
  _check(config.attack.kind not in attacks.COLLUDING, "attack.kind",
         f"an attack outside {', '.join(attacks.COLLUDING)} under "
         "privacy.mechanism=laplace_local (the colluding attacks are simulated against the "
         "central mechanism only)", config)


def validate(config) -> None:
  """Raises ConfigError naming the first field a run cannot use and what it expects."""
  # Late imports, deliberately (see `choices`): the registries import JAX and the models.
  import optax
  from ccfl_jax import models
  from ccfl_jax.data import datasets
  from ccfl_jax.data.augment import AugmentSettings
  from ccfl_jax.federated import server

  for message in _unknown_fields(config, default_config()):
    raise ConfigError(message)
  for field, valid in choices().items():
    value = _get(config, field)
    value = str(value).lower() if isinstance(value, bool) else value
    _check(value in valid, field, f"one of {', '.join(valid)}", config)
  _check(config.model.name in models.model_names(), "model.name",
         f"one of {', '.join(models.model_names())}", config)
  _check(config.dataset.name in datasets.dataset_names(), "dataset.name",
         f"one of {', '.join(datasets.dataset_names())}", config)
  for block in ("local_optimizer", "server_optimizer"):
    name = _get(config, f"{block}.name")
    valid = name == "fedavg" if block == "server_optimizer" else False
    _check(valid or callable(getattr(optax, str(name), None)), f"{block}.name",
           "an optax optimizer such as sgd, adam, adamw, momentum" +
           (" or fedavg" if block == "server_optimizer" else ""), config)
    _check(_get(config, f"{block}.learning_rate") > 0, f"{block}.learning_rate", "> 0", config)
    try:
      server.optimizer_from_config(_get(config, block))
    except TypeError as error:
      raise ConfigError(f"config.{block}: {_get(config, block).to_dict()} is not a valid "
                        f"optax.{name} ({error})") from None
  _check(0 <= config.local_schedule.warmup_fraction < 1, "local_schedule.warmup_fraction",
         "a share of the run's local steps in [0, 1)", config)
  _check(not config.tensorboard or importlib.util.find_spec("tensorboardX") is not None,
         "tensorboard", 'tensorboardX installed: pip install -e ".[tensorboard]" (or false)',
         config)
  _check(config.num_hospitals >= 1, "num_hospitals", "an integer >= 1", config)
  _check(1 <= config.hospitals_per_round <= config.num_hospitals, "hospitals_per_round",
         f"1 <= m_t <= num_hospitals ({config.num_hospitals})", config)
  _check(0 < config.privacy.clip_norm < math.inf, "privacy.clip_norm", "a finite S > 0", config)
  _check(0 <= config.privacy.noise_multiplier < math.inf, "privacy.noise_multiplier",
         "a finite sigma >= 0", config)
  run_name = str(config.run_name)
  _check(run_name not in ("", ".", "..") and pathlib.PurePath(run_name).name == run_name
         and "\\" not in run_name, "run_name",
         "a folder name inside results_dir (no '/', '..' or absolute path)", config)
  _check(0 < config.privacy.delta < 1, "privacy.delta", "0 < delta < 1", config)
  for field in ("num_rounds", "local_steps", "batch_size", "eval_batch_size",
                "checkpoint_every", "max_checkpoints_to_keep"):
    _check(_get(config, field) >= 1, field, "an integer >= 1", config)
  _check(config.dataset.image_size >= 8, "dataset.image_size", "an integer >= 8", config)
  _check(config.dataset.window_width > 0, "dataset.window_width", "> 0 (HU)", config)
  _check(0 <= config.partition.test_fraction < 1, "partition.test_fraction", "in [0, 1)", config)
  _check(config.partition.alpha > 0, "partition.alpha", "> 0", config)
  _check(0 <= config.dataset.covid_fraction <= 1, "dataset.covid_fraction", "in [0, 1]", config)
  _check(config.engine.num_devices >= 0, "engine.num_devices", ">= 0 (0 = all devices)", config)
  _check(config.engine.kind == "compiled" or config.engine.data_placement == "host",
         "engine.data_placement", "host under engine.kind = sequential (its loop hands each "
         "hospital its slices from host memory)", config)
  d = config.distributed
  _check(d.num_processes >= 1, "distributed.num_processes", ">= 1", config)
  _check(0 <= d.process_id < d.num_processes, "distributed.process_id",
         f"in [0, distributed.num_processes = {d.num_processes})", config)
  _check(d.num_processes == 1 or d.auto_detect or bool(d.coordinator_address),
         "distributed.coordinator_address", "host:port of process 0 when num_processes > 1 "
         "(or distributed.auto_detect = True)", config)
  _check(isinstance(config.ledger.enabled, bool), "ledger.enabled", "True or False", config)
  _check(0 <= config.ledger.difficulty <= 24, "ledger.difficulty", "proof-of-work bits in [0, 24]",
         config)
  for field in ("ledger.num_verifiers", "ledger.validation_size"):
    _check(_get(config, field) >= 1, field, "an integer >= 1", config)
  _check(config.ledger.consensus.k > 0, "ledger.consensus.k", "> 0", config)
  _check(config.ledger.consensus.gamma >= 0, "ledger.consensus.gamma", ">= 0", config)
  _check(config.ledger.consensus.direction_k >= 0, "ledger.consensus.direction_k",
         ">= 0 (0 = no direction check)", config)
  _check(-1 <= config.ledger.consensus.direction_cosine <= 1,
         "ledger.consensus.direction_cosine", "a cosine in [-1, 1]", config)
  _check(config.ledger.consensus.max_norm_ratio == 0 or config.ledger.consensus.max_norm_ratio > 1,
         "ledger.consensus.max_norm_ratio", "0 (no magnitude check) or > 1", config)
  _check(config.ledger.consensus.mad_floor >= 0, "ledger.consensus.mad_floor", ">= 0", config)
  _check(0 <= config.attack.num_malicious <= config.num_hospitals, "attack.num_malicious",
         f"0 <= count <= num_hospitals ({config.num_hospitals})", config)
  _validate_attack_and_aggregation(config)
  _validate_laplace_local(config)
  _check(config.dataset.name == "phantom" or bool(config.dataset.path), "dataset.path",
         f"the folder of the {config.dataset.name!r} dataset", config)
  try:
    AugmentSettings.from_dict(config.augment)
  except (TypeError, ValueError) as error:
    message = str(error).removeprefix("config.")
    message = message if message.startswith("augment.") else f"augment: {message}"
    raise ConfigError(f"config.{message}") from None
  try:
    models.from_config(config)
  except TypeError as error:
    raise ConfigError(f"config.model: {error}") from None
