"""The factory layer: a run config -> the objects a round needs (no loop, no I/O).

`config.model` -> models.from_config; `config.*_optimizer` -> server.masked_optimizer
(restricted to the model's trainable parameters) and
`config.local_schedule` -> server.schedule_from_config; the global model before round 1 ->
server.initial_state. Here: the round's settings (with its augmentation), the consensus
rule, attack and aggregation rule it runs with, the device mesh and the engine that maps
hospitals.
"""
from ccfl_jax import configuration, models
from ccfl_jax.data import augment as augment_lib
from ccfl_jax.federated import aggregation, attacks, engine, mesh as mesh_lib, server
from ccfl_jax.ledger.consensus import ConsensusRule


def consensus_rule(config) -> ConsensusRule | None:
  """The MAE vote the ledger records (eqs. 14-15); None without a ledger: every update counts."""
  if not config.ledger.enabled:
    return None
  return ConsensusRule(**config.ledger.consensus.to_dict())


def attack(config) -> attacks.Attack:
  """config.attack, every field (the block's fields are attacks.Attack's)."""
  return attacks.Attack(**config.attack.to_dict())


def aggregation_rule(config) -> aggregation.AggregationRule:
  """config.aggregation: how the server combines the accepted updates (mean = eq. 5)."""
  a = config.aggregation
  return aggregation.AggregationRule(a.rule, beta=a.beta, f=a.f, norm_bound=a.norm_bound)


def augment_settings(config) -> augment_lib.AugmentSettings:
  return augment_lib.AugmentSettings.from_dict(config.augment)


def round_settings(config, model: models.ModelSpec) -> engine.RoundSettings:
  unroll = config.engine.unroll_local_steps
  trainable = server.trainable_mask(config, model)  # traces the model's init once
  return engine.RoundSettings(
      model=model,
      local_optimizer=server.masked_optimizer(config.local_optimizer, trainable),
      server_optimizer=server.masked_optimizer(config.server_optimizer, trainable),
      local_steps=config.local_steps, batch_size=config.batch_size,
      clip_norm=config.privacy.clip_norm, noise_multiplier=config.privacy.noise_multiplier,
      unroll_local_steps=(mesh_lib.default_unroll_local_steps() if unroll == "auto"
                          else configuration.as_bool(unroll)),
      consensus=consensus_rule(config), validation_size=config.ledger.validation_size,
      attack=attack(config), return_updates=config.ledger.enabled,
      trainable=trainable, augment=augment_settings(config),
      aggregation=aggregation_rule(config),
      schedule=server.schedule_from_config(config.local_schedule,
                                           config.num_rounds * config.local_steps),
      mechanism=config.privacy.mechanism, laplace_epsilon=config.privacy.laplace_epsilon,
      compute_dtype=config.engine.compute_dtype)


def hospital_axis(config, model: models.ModelSpec) -> str:
  """config.engine.hospital_axis, with 'auto' resolved for this backend and model."""
  if config.engine.hospital_axis != "auto":
    return config.engine.hospital_axis
  return mesh_lib.default_hospital_axis(models.uses_convolutions(model, config.dataset.image_size))


def build_round(config, model: models.ModelSpec, mesh):
  """run_round(state, data, sampled, key, verifiers) of the engine config.engine.kind names."""
  settings = round_settings(config, model)
  if config.engine.kind == "sequential":
    return engine.sequential_round(settings)
  return engine.compiled_round(settings, mesh, hospital_axis(config, model),
                               config.engine.data_placement)
