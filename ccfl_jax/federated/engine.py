"""How hospitals are mapped: the compiled engine (one jitted round) and the sequential one.

Both return `run_round(state, data, sampled, key, verifiers=None, round_index=0) -> (state,
RoundOutput)` with the same numbers (same per-hospital keys); round_index (0-based) places
the round's K local steps on the run's learning-rate schedule (settings.schedule), and
nothing else. A round is

  1. every sampled hospital trains and submits its clipped update (client.py, attacks.py;
     a backdoor poisons the malicious hospitals' slices before they train; under
     settings.mechanism = laplace_local it clips in L1 and adds its own Laplace noise
     before submitting, so everything below reads the noised submissions); under a
     colluding attack (attacks.COLLUDING) the malicious hospitals' rows of the stacked
     clipped updates are then replaced by the crafted update (attacks.collude, from what the
     colluders know), which the server keeps on the trainable parameters and clips to S
     like any update it receives; its norm before that clip is the one reported;
  2. with a consensus rule: its local model, global params + clipped Δw, is evaluated on the
     validation batch of each of the round's verifiers and on its own (eq. 14,
     cross_evaluation.py), scored by eq. 15 and, with the rule's update checks, its submitted
     norm and its cosine with the coordinate-wise median update are measured; the update is
     accepted or rejected (ledger/consensus.py);
  3. the aggregation rule (aggregation.py; settings.aggregation) combines the accepted
     clipped updates alone (rejected ones weigh 0): the default, mean, sums them, noises the
     sum and divides by the number accepted (privacy.noisy_mean, eq. 5); a robust rule
     noises its own total (aggregation.aggregate: sensitivity 2S too) and divides by its
     own denominator. Under laplace_local the server adds no noise (the submissions carry
     it): the update is total / denominator. The server steps.
  4. the update statistics of eqs. 6-8 (update_stats.py): V_c and U_s of the ACCEPTED
     updates as the server holds them before its own noise, over the trainable coordinates:
     the clipped updates (gaussian_central; the server's noise is not in them) or the
     noised submissions (laplace_local; each hospital's Laplace noise, variance 2b² per
     coordinate, is). RoundOutput.v_c and .u_s; NaN when nothing was accepted.

What a round reads of the hospitals' slices (their K local batches, the vote's validation
batches) is drawn first, as indices, and gathered where the slices live (round_data.py):
from host memory by default, so only the sampled hospitals' m_t x K x B slices reach the
devices each round, sharded over the hospital axis; or from the devices, where
engine.data_placement = device replicated them once. Same numbers either way.

The compiled engine runs all of it inside ONE jitted function: hospitals sharded over a 1-D
device mesh with `shard_map` and mapped within a device by `vmap` or unrolled in the trace
(each device evaluates its own hospitals' models on every verifier's batch); the vote, on
the gathered [m, v] MAE matrix, and the weighted sum follow in the same jit. A colluding
attack splits the shard_map in two, training, then (after the crafted rows are in)
cross-evaluation, since the vote must judge what the colluders submit. The sequential
engine is the usual federated-learning loop, one dispatch per hospital, kept to check and
measure the first.

The PRNG key scheme, all of it (every key is a pure function of (seed, round, hospital), so
a resumed run, either engine and any device count draw the same numbers):

  base_key = key(config.seed); round_key = fold_in(base_key, round index)  (training.py)
  hospital_key(h) = fold_in(fold_in(round_key, 0), h)   h's local randomness (client.py):
      its local batches: hospital_key(h) itself (client.local_batches);
      a malicious h's poisoned update: fold_in(hospital_key(h), 1) (attacks.py);
      a backdoor hospital's poisoned slices: fold_in(hospital_key(h), 3), slot i of its
          padded slice array poisoned iff uniform(that, [capacity])[i] < poison_fraction
          (client.BACKDOOR_KEY, attacks.poison_batch);
      augmentation at local step k: fold_in(fold_in(hospital_key(h), 2), k), image b of the
          batch split(that, B)[b] (data/augment.py);
      a laplace_local hospital's own noise: fold_in(hospital_key(h), 4), split over the
          update's leaves (client.LAPLACE_KEY, privacy.laplace_noise_like);
  the server's DP noise: fold_in(round_key, 1) (privacy.noisy_mean; gaussian_central only);
  h's validation batch for the vote: fold_in(fold_in(round_key, 2), h) (cross_evaluation.py);
  the model's initial parameters: key(config.seed) (builders.initial_state); the data, the
  partition and the sampling draw from numpy generators seeded by config.seed (and the round).

None depends on the device count or the engine. The colluding attacks and the robust
aggregation rules draw no randomness.

Frozen parameters (`settings.trainable`, a pretrained backbone's frozen part): both
optimizers leave them alone (server.only_trainable), each hospital's submitted update is
zero there before clipping, so they take no share of the clipped norm S, and the server's
noise (a laplace_local hospital's own noise) is zero there: DP covers exactly the parameters
that train.
"""
import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ccfl_jax import tree_util
from ccfl_jax.data import augment as augment_lib
from ccfl_jax.federated import (aggregation as aggregation_lib, attacks, client, cross_evaluation,
                                mesh as mesh_lib, privacy, processes, round_data as round_data_lib,
                                server, update_stats)
from ccfl_jax.ledger import consensus as consensus_lib

H = mesh_lib.HOSPITAL_AXIS
ENGINES = ("compiled", "sequential")
HOSPITAL_AXES = ("vmap", "unroll")  # how the compiled engine maps hospitals within a device


class RoundOutput(NamedTuple):
  """Per sampled hospital, in `sampled` order (padded entries dropped).

  mae [m, v], self_mae, vote_scores are None without a consensus rule; cosines (with the
  coordinate-wise median update) None unless the rule's direction check is on; updates (the
  clipped submitted updates, leading axis m) are None unless settings.return_updates;
  aggregated (bool: the accepted updates the aggregation rule's result is made of, all of
  them but under krum / multi_krum) is None under the mean (every accepted update). v_c and
  u_s (scalars, not per hospital): eqs. 7 and 8 of the accepted updates (step 4 of the
  module docstring).
  """
  local_loss: Any
  update_norm: Any  # of the submitted update, before clipping
  accepted: Any
  malicious: Any
  mae: Any = None
  self_mae: Any = None
  vote_scores: Any = None
  updates: Any = None
  cosines: Any = None
  aggregated: Any = None
  v_c: Any = None
  u_s: Any = None


@dataclasses.dataclass(frozen=True)
class RoundSettings:
  model: Any
  local_optimizer: Any
  server_optimizer: Any
  local_steps: int
  batch_size: int
  clip_norm: float
  noise_multiplier: float
  unroll_local_steps: bool
  consensus: consensus_lib.ConsensusRule | None = None  # None: accept every update
  validation_size: int = 32
  attack: attacks.Attack = attacks.Attack()
  return_updates: bool = False
  trainable: Any = None  # params-shaped tree of Python bools (None: all train); models.trainable_mask
  augment: augment_lib.AugmentSettings = augment_lib.AugmentSettings()
  aggregation: aggregation_lib.AggregationRule = aggregation_lib.AggregationRule()
  schedule: Any = None  # local learning-rate factor by run step (server.schedule_from_config)
  mechanism: str = "gaussian_central"  # privacy.MECHANISMS
  laplace_epsilon: float = 1.0  # laplace_local: per-round epsilon of each submission
  compute_dtype: str = "float32"  # local training's forward/backward (client.COMPUTE_DTYPES)

  def __post_init__(self):
    if self.mechanism not in privacy.MECHANISMS:
      raise ValueError(f"privacy.mechanism {self.mechanism!r}: expected one of "
                       f"{privacy.MECHANISMS}")
    if self.mechanism == "laplace_local":
      if self.noise_multiplier != 0:
        raise ValueError("privacy.noise_multiplier must be 0 under laplace_local (the "
                         "hospitals add the noise, the server none)")
      if _colluding(self):
        raise ValueError(f"attack.kind {self.attack.kind!r}: colluding attacks are not "
                         "simulated under laplace_local")

  @property
  def local(self) -> client.LocalSettings:
    return client.LocalSettings(self.model, self.local_optimizer, self.local_steps,
                                self.batch_size, self.unroll_local_steps, self.clip_norm,
                                self.attack, self.trainable, self.augment, self.schedule,
                                self.mechanism, self.laplace_epsilon, self.compute_dtype)

  def first_step(self, round_index):
    """The run's local step the round starts at (its K steps follow), as an int32 array:
    traced, so the round compiles once for all rounds."""
    return jnp.asarray(round_index * self.local_steps, jnp.int32)


class RoundShared(NamedTuple):
  """What every hospital of the round reads: the global params, with a consensus rule the
  verifiers' validation batches ([v, size, ...] images, [v, size] labels), and the run's
  local step the round starts at (RoundSettings.first_step)."""
  params: Any
  verifier_batches: Any = None
  first_step: Any = 0


class HospitalInputs(NamedTuple):
  """One sampled hospital's inputs (stacked on a leading axis when mapped): its round's
  local batches (client.LocalBatches), key, malicious flag and, with a consensus rule, its
  own validation batch (images, labels)."""
  batches: client.LocalBatches
  key: Any
  malicious: Any
  own_batch: Any = None


class HospitalStats(NamedTuple):
  """What one hospital's part of the round reports beside its clipped update; mae [v] and
  self_mae only with a consensus rule."""
  update_norm: Any  # of the submitted update, before clipping
  local_loss: Any
  mae: Any = None
  self_mae: Any = None


hospital_keys = round_data_lib.hospital_keys


def _hospital_training(s: RoundSettings):
  """fn(RoundShared, HospitalInputs) -> (clipped update, HospitalStats without MAEs)."""
  update = client.make_batches_update(s.local)

  def fn(shared: RoundShared, hospital: HospitalInputs):
    delta, norm, loss = update(shared.params, hospital.batches, hospital.key,
                               hospital.malicious, shared.first_step)
    return delta, HospitalStats(norm, loss)

  return fn


def _hospital_evaluation(s: RoundSettings):
  """fn(RoundShared, (clipped update, own batch)) -> (mae [v], self_mae): eq. 14 for the
  local model global params + update."""

  def fn(shared: RoundShared, submitted):
    delta, own_batch = submitted
    return cross_evaluation.cross_evaluate(s.model, shared.params, delta, *own_batch,
                                           *shared.verifier_batches)

  return fn


def _hospital_round(s: RoundSettings):
  """fn(RoundShared, HospitalInputs) -> (clipped update, HospitalStats): one sampled
  hospital's part of the round, training and (with a consensus rule) cross-evaluation."""
  train, evaluate = _hospital_training(s), _hospital_evaluation(s)

  def fn(shared: RoundShared, hospital: HospitalInputs):
    delta, stats = train(shared, hospital)
    if s.consensus is None:
      return delta, stats
    mae, self_mae = evaluate(shared, (delta, hospital.own_batch))
    return delta, stats._replace(mae=mae, self_mae=self_mae)

  return fn


def _colluding(s: RoundSettings) -> bool:
  return s.attack.kind in attacks.COLLUDING


def _collude(deltas, stats: HospitalStats, malicious, weights, s: RoundSettings):
  """(deltas, stats) with the malicious real rows replaced by the colluders' crafted update
  (attacks.collude) as the server receives it: its trainable part clipped to S, the norm
  before that clip as the row's update_norm. Non-finite rows neither inform nor get it."""
  usable = jnp.where(jnp.isfinite(stats.update_norm), weights, 0.0)
  crafted = attacks.collude(s.attack, deltas, malicious, usable)
  clipped, norms = jax.vmap(
      lambda d: privacy.clip_update(tree_util.keep(d, s.trainable), s.clip_norm))(crafted)
  attacking = jnp.asarray(malicious, bool) & (usable > 0)
  rows = lambda leaf: attacking.reshape((-1,) + (1,) * (leaf.ndim - 1))
  deltas = jax.tree.map(lambda c, d: jnp.where(rows(d), c, d), clipped, deltas)
  return deltas, stats._replace(update_norm=jnp.where(attacking, norms, stats.update_norm))


def _map_hospitals(fn, hospital_axis: str, shared, per_hospital):
  """fn over the leading (hospital) axis of `per_hospital`; results stacked on that axis."""
  if hospital_axis == "vmap":
    return jax.vmap(fn, (None, 0))(shared, per_hospital)
  count = jax.tree.leaves(per_hospital)[0].shape[0]
  return tree_util.stack([fn(shared, tree_util.index(per_hospital, i))  # unrolled in the trace
                          for i in range(count)])


_weighted_sum = aggregation_lib.weighted_sum  # the mean's Σ w_i Δ_i, NaN-safe (eq. 5)


def _aggregate(deltas, weights, s: RoundSettings, mean_sum):
  """(total, denominator, aggregated) of the accepted updates (weights: 0 for padding and
  rejected ones). The mean: `mean_sum` (the compiled engine's sum under shard_map), None,
  None (it divides by the number accepted, every accepted update counts); a robust rule reads
  all the rows at once (aggregation.aggregate_with_selection)."""
  if s.aggregation.name == "mean":
    return mean_sum(deltas, weights), None, None
  total, denominator, used = aggregation_lib.aggregate_with_selection(s.aggregation, deltas,
                                                                      weights)
  return total, denominator, used


def _vote(deltas, stats, weights, rule: consensus_lib.ConsensusRule | None):
  """(accepted [n], eq. 15 scores [n] or None, cosines [n] or None); padding and non-finite
  updates never accepted.

  Padding scores, norms and cosines are NaN, which the rule ignores when it takes medians
  and MADs, so the decision on the real hospitals is the one the ledger recomputes from them
  alone.
  """
  real = (weights > 0) & jnp.isfinite(stats.update_norm)  # a NaN/Inf update is never accepted
  if rule is None:
    return real, None, None
  scores = jnp.where(real, consensus_lib.vote_scores(stats.mae, stats.self_mae, rule.gamma),
                     jnp.nan)
  cosines = (consensus_lib.median_cosines(deltas, real) if rule.direction_k > 0 else None)
  accepted = consensus_lib.decide(scores, jnp.where(real, stats.update_norm, jnp.nan), cosines,
                                  rule)
  return accepted & real, scores, cosines


def _finish_round(state, total, denominator, num_accepted, round_key, s: RoundSettings):
  """The server step on (total + noise) / denominator (None: num_accepted, eq. 5's mean of
  the clipped updates; laplace_local: no server noise); a round with no accepted update
  leaves the global model as it was (the loop then stops with an error rather than divide
  by zero)."""
  denominator = num_accepted if denominator is None else denominator
  if s.mechanism == "laplace_local":
    mean_update = jax.tree.map(lambda t: t / denominator, total)
  else:
    mean_update = privacy.noisy_mean(total, denominator, jax.random.fold_in(round_key, 1),
                                     s.noise_multiplier, s.clip_norm, s.trainable)
  stepped = server.apply_update(state, mean_update, s.server_optimizer)
  return jax.tree.map(lambda new, old: jnp.where(num_accepted > 0, new, old), stepped, state)


def _round_output(deltas, stats: HospitalStats, accepted, malicious, scores, cosines,
                  aggregated, s: RoundSettings) -> RoundOutput:
  """The per-hospital fields (v_c and u_s: None, see _with_update_statistics)."""
  return RoundOutput(stats.local_loss, stats.update_norm, accepted, malicious, stats.mae,
                     stats.self_mae, scores, deltas if s.return_updates else None, cosines,
                     aggregated)


def _trainable_leaves(deltas, trainable):
  """The stacked leaves of the parameters that train (all of them when trainable is None)."""
  if trainable is None:
    return deltas
  return [leaf for leaf, trains in zip(jax.tree.leaves(deltas), jax.tree.leaves(trainable))
          if trains]


def _with_update_statistics(out: RoundOutput, deltas, aggregate_weights,
                            s: RoundSettings) -> RoundOutput:
  """out with v_c, u_s (eqs. 7-8) of the accepted updates (weight > 0), as the server holds
  them before its own noise, over the trainable coordinates (module docstring, step 4)."""
  stats = update_stats.update_statistics(_trainable_leaves(deltas, s.trainable),
                                         aggregate_weights)
  return out._replace(v_c=stats["v_c"], u_s=stats["u_s"])


def _plan_function(s: RoundSettings, capacity: int):
  """round_data.round_plan with the round's settings bound: (ids, counts, malicious,
  verifiers, verifier_counts, round_key) -> RoundPlan."""
  return functools.partial(round_data_lib.round_plan, client.make_batch_plan(s.local),
                           None if s.consensus is None else s.validation_size, capacity)


def _device_round_data(data, ids, verifiers, malicious, round_key, s: RoundSettings):
  """Placement 'device', inside the jit: the round's slices gathered from the replicated data."""
  plan = _plan_function(s, data.images.shape[1])(ids, data.counts[ids], malicious, verifiers,
                                                 data.counts[verifiers], round_key)
  return round_data_lib.gather(data, ids, verifiers, plan)


def host_round_data(s: RoundSettings):
  """Placement 'host': fn(data, ids, verifiers, round_key) -> RoundData, the round's indices
  drawn in one small jit (compiled once per padded slice capacity), then only those slices
  gathered from host memory (numpy)."""
  plan_fn = jax.jit(lambda capacity, *inputs: _plan_function(s, capacity)(*inputs),
                    static_argnums=0)

  def fn(data, ids, verifiers, round_key):
    malicious = attacks.malicious_flags(s.attack, jnp.asarray(ids, jnp.int32))
    plan = round_data_lib.host_plan(functools.partial(plan_fn, data.images.shape[1]), data,
                                    ids, verifiers, malicious, round_key)
    return round_data_lib.gather(data, ids, round_data_lib.as_int32(verifiers), plan)

  return fn


class PreparedRound(NamedTuple):
  """A round's inputs, made before it runs: its sampled hospitals padded to the mesh (ids,
  weights 1 real / 0 padding), verifiers, key and, with host placement, its slices already
  sent to the devices (RoundData; on the host for the sequential loop; None with device
  placement). Every part is a function of the seed and round index alone, so the loop can
  make round t + 1's while round t computes (training.py)."""
  ids: Any
  weights: Any
  verifiers: Any
  round_key: Any
  slices: Any
  num_sampled: int


class RoundRunner(NamedTuple):
  """An engine's round in three steps, so that the next round's data moves while this one
  computes: prepare(data, sampled, round_key, verifiers=None) -> PreparedRound;
  dispatch(state, data, prepared, round_index=0) -> (new state, outputs as dispatched:
  asynchronous on an accelerator); finish(outputs, prepared) -> RoundOutput. Called as
  run_round(state, data, sampled, round_key, verifiers=None, round_index=0), it does the
  three in a row."""
  prepare: Any
  dispatch: Any
  finish: Any

  def __call__(self, state, data, sampled, round_key, verifiers=None, round_index=0):
    prepared = self.prepare(data, sampled, round_key, verifiers)
    state, out = self.dispatch(state, data, prepared, round_index)
    return state, self.finish(out, prepared)


def _check_verifiers(settings: RoundSettings, verifiers):
  if settings.consensus is not None and verifiers is None:
    raise ValueError("a round with a consensus rule needs its verifiers (run_ledger.round_roles)")
  return np.zeros(0, np.int32) if verifiers is None else np.asarray(verifiers, np.int32)


def _without_padding(out: RoundOutput, num_sampled: int) -> RoundOutput:
  """The round's outputs on the host (numpy), the padded hospitals' rows dropped; v_c and u_s
  (scalars) as they are."""
  out = processes.to_host(out)
  per_hospital = {name: jax.tree.map(lambda a: a[:num_sampled], getattr(out, name))
                  for name in RoundOutput._fields if name not in ("v_c", "u_s")}
  return out._replace(**per_hospital)


def compiled_round(settings: RoundSettings, mesh, hospital_axis: str,
                   data_placement: str = "host"):
  """The whole round — training, cross-evaluation, vote, noise, aggregation, server step — one
  jit; the round's slices come from host memory or from the devices (round_data.py)."""
  if data_placement not in round_data_lib.PLACEMENTS:
    raise ValueError(f"engine.data_placement {data_placement!r}: expected one of "
                     f"{round_data_lib.PLACEMENTS}")
  num_devices = mesh.devices.size

  def sharded(hospital_fn):
    """hospital_fn over the hospitals, sharded over the mesh: (params, per_hospital,
    verifier_batches, first_step) -> its results stacked on the hospital axis."""

    def on_device(params, per_hospital, verifier_batches, first_step):
      # Replicated params would make grad return a gradient summed over devices (NOTES-jax.md):
      # mark them device-varying so every hospital differentiates its own copy.
      params = jax.tree.map(lambda leaf: jax.lax.pcast(leaf, H, to="varying"), params)
      return _map_hospitals(hospital_fn, hospital_axis,
                            RoundShared(params, verifier_batches, first_step), per_hospital)

    return jax.shard_map(on_device, mesh=mesh, in_specs=(P(), P(H), P(), P()),
                         out_specs=(P(H), P(H)))

  sharded_hospitals = sharded(_hospital_round(settings))
  sharded_training = sharded(_hospital_training(settings))
  sharded_evaluation = sharded(_hospital_evaluation(settings))
  sharded_sum = jax.shard_map(lambda deltas, weights: jax.lax.psum(_weighted_sum(deltas, weights), H),
                              mesh=mesh, in_specs=(P(H), P(H)), out_specs=P())

  def hospitals_round(params, per_hospital, verifier_batches, weights, first_step):
    if not _colluding(settings):
      return sharded_hospitals(params, per_hospital, verifier_batches, first_step)
    # The vote judges what the colluders submit: train, craft, then cross-evaluate.
    deltas, stats = sharded_training(params, per_hospital, verifier_batches, first_step)
    deltas, stats = _collude(deltas, stats, per_hospital.malicious, weights, settings)
    if settings.consensus is None:
      return deltas, stats
    mae, self_mae = sharded_evaluation(params, (deltas, per_hospital.own_batch),
                                       verifier_batches, first_step)
    return deltas, stats._replace(mae=mae, self_mae=self_mae)

  def round_body(state, data: round_data_lib.RoundData, sampled, weights, round_key,
                 first_step):
    malicious = attacks.malicious_flags(settings.attack, sampled)
    per_hospital = HospitalInputs(data.local, hospital_keys(round_key, sampled), malicious,
                                  data.own_batches)
    deltas, stats = hospitals_round(state.params, per_hospital, data.verifier_batches, weights,
                                    first_step)
    accepted, scores, cosines = _vote(deltas, stats, weights, settings.consensus)
    aggregate_weights = weights * accepted
    total, denominator, aggregated = _aggregate(deltas, aggregate_weights, settings,
                                                sharded_sum)
    num_accepted = jnp.sum(aggregate_weights)
    state = _finish_round(state, total, denominator, num_accepted, round_key, settings)
    out = _round_output(deltas, stats, accepted, malicious, scores, cosines, aggregated,
                        settings)
    # Padded rows are dropped on the host (_without_padding): every m_t that pads to the
    # same size runs the same compiled round.
    return state, _with_update_statistics(out, deltas, aggregate_weights, settings)

  step = jax.jit(round_body)

  @jax.jit
  def step_on_device_data(state, data, sampled, weights, verifiers, round_key, first_step):
    malicious = attacks.malicious_flags(settings.attack, sampled)
    slices = _device_round_data(data, sampled, verifiers, malicious, round_key, settings)
    return round_body(state, slices, sampled, weights, round_key, first_step)

  replicated = NamedSharding(mesh, P())
  round_data_on_host = host_round_data(settings)

  def prepare(data, sampled, round_key, verifiers=None) -> PreparedRound:
    ids, weights = mesh_lib.pad_sampled(np.asarray(sampled), num_devices)
    verifiers = _check_verifiers(settings, verifiers)
    slices = None
    if data_placement == "host":  # gathered on the host, the transfer started (asynchronous)
      slices = round_data_on_host(data, ids, verifiers, round_key)
      slices = jax.device_put(slices, round_data_lib.shardings(mesh, slices))
    return PreparedRound(ids, weights, verifiers, round_key, slices, len(sampled))

  def dispatch(state, data, prepared: PreparedRound, round_index=0):
    # Same sharding as the step's output, so the second round does not recompile.
    state = jax.device_put(state, replicated)
    first_step = settings.first_step(round_index)
    p = prepared
    if data_placement == "device":
      return step_on_device_data(state, data, p.ids, p.weights, p.verifiers, p.round_key,
                                 first_step)
    return step(state, p.slices, p.ids, p.weights, p.round_key, first_step)

  return RoundRunner(prepare, dispatch,
                     lambda out, prepared: _without_padding(out, prepared.num_sampled))


def sequential_round(settings: RoundSettings):
  """The usual federated loop: one jitted dispatch per hospital, then a jitted server step
  (under a colluding attack: per hospital training, the colluders' crafting over the stacked
  updates, per hospital cross-evaluation, then the server step)."""
  colluding = _colluding(settings)
  hospital_step = jax.jit(_hospital_training(settings) if colluding
                          else _hospital_round(settings))
  evaluation_step = jax.jit(_hospital_evaluation(settings))
  round_data_on_host = host_round_data(settings)

  @jax.jit
  def collude(deltas, stats, malicious):
    deltas, stats = tree_util.stack(deltas), tree_util.stack(stats)
    return _collude(deltas, stats, malicious, jnp.ones(len(malicious), jnp.float32), settings)

  @jax.jit
  def finish(state, deltas, stats, malicious, round_key):
    deltas, stats = tree_util.stack(deltas), tree_util.stack(stats)
    accepted, scores, cosines = _vote(deltas, stats, jnp.ones(len(malicious), jnp.float32),
                                      settings.consensus)
    aggregate_weights = accepted.astype(jnp.float32)
    total, denominator, aggregated = _aggregate(deltas, aggregate_weights, settings,
                                                _weighted_sum)
    num_accepted = jnp.sum(aggregate_weights)
    state = _finish_round(state, total, denominator, num_accepted, round_key, settings)
    out = _round_output(deltas, stats, accepted, malicious, scores, cosines, aggregated,
                        settings)
    return state, _with_update_statistics(out, deltas, aggregate_weights, settings)

  def prepare(data, sampled, round_key, verifiers=None) -> PreparedRound:
    """data: hospitals.HospitalData in host memory; each hospital's slices of the round are
    gathered there and go with its own dispatch, as a data loader would hand them over."""
    sampled = np.asarray(sampled, np.int32)
    verifiers = _check_verifiers(settings, verifiers)
    return PreparedRound(sampled, np.ones(len(sampled), np.float32), verifiers, round_key,
                         round_data_on_host(data, sampled, verifiers, round_key), len(sampled))

  def dispatch(state, data, prepared: PreparedRound, round_index=0):
    del data  # prepared.slices holds the round's
    ids = jnp.asarray(prepared.ids, jnp.int32)
    round_key, slices = prepared.round_key, prepared.slices
    keys = hospital_keys(round_key, ids)
    malicious = attacks.malicious_flags(settings.attack, ids)
    own_batches = ([None] * prepared.num_sampled if slices.own_batches is None
                   else tree_util.unstack(slices.own_batches))
    shared = RoundShared(state.params, jax.device_put(slices.verifier_batches),
                         settings.first_step(round_index))
    deltas, stats = [], []
    for i in range(prepared.num_sampled):
      delta, hospital_stats = hospital_step(
          shared, HospitalInputs(tree_util.index(slices.local, i), keys[i], malicious[i],
                                 own_batches[i]))
      deltas.append(delta)
      stats.append(hospital_stats)
    if colluding:
      stacked_deltas, stacked_stats = collude(deltas, stats, malicious)
      deltas, stats = tree_util.unstack(stacked_deltas), tree_util.unstack(stacked_stats)
      if settings.consensus is not None:
        stats = [hospital_stats._replace(**dict(zip(
            ("mae", "self_mae"), evaluation_step(shared, (deltas[i], own_batches[i])))))
                 for i, hospital_stats in enumerate(stats)]
    return finish(state, deltas, stats, malicious, round_key)

  return RoundRunner(prepare, dispatch, lambda out, prepared: out)


def put_hospital_data(data, mesh, data_placement: str):
  """The hospitals' slices where the engine reads them (round_data.py): left in host memory
  ('host') or replicated over the mesh ('device', the compiled engine only)."""
  if data_placement == "device":
    return round_data_lib.put_on_devices(data, mesh)
  return data
