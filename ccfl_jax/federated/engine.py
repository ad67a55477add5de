"""How hospitals are mapped: the compiled engine (one jitted round) and the sequential one.

Both return `run_round(state, data, sampled, key) -> (state, RoundOutput)` with the same
numbers (same per-hospital keys): the compiled engine trains every sampled hospital inside
ONE jitted function, hospitals sharded over a 1-D device mesh with `shard_map` and mapped
within a device by `vmap` or unrolled in the trace; the sequential engine is the usual
federated-learning loop, one dispatch per hospital, kept to check and measure the first.

Keys: hospital h's local randomness is fold_in(fold_in(round_key, 0), h); the server's
noise is fold_in(round_key, 1). Neither depends on the device count or the engine.
"""
import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ccfl_jax.federated import client, mesh as mesh_lib, privacy, server

H = mesh_lib.HOSPITAL_AXIS


class RoundOutput(NamedTuple):
  """Per sampled hospital (padded entries dropped): local loss and update norm before clipping."""
  local_loss: Any
  update_norm: Any


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


def hospital_keys(round_key, hospital_ids):
  local_key = jax.random.fold_in(round_key, 0)
  return jax.vmap(jax.random.fold_in, (None, 0))(local_key, hospital_ids)


def _hospital_fn(s: RoundSettings):
  return client.make_hospital_update(s.model, s.local_optimizer, s.local_steps, s.batch_size,
                                     s.unroll_local_steps, s.clip_norm)


def _finish_round(state, clipped_sum, num_accepted, round_key, s: RoundSettings):
  mean_update = privacy.noisy_mean(clipped_sum, num_accepted, jax.random.fold_in(round_key, 1),
                                   s.noise_multiplier, s.clip_norm)
  return server.apply_update(state, mean_update, s.server_optimizer)


def _map_hospitals(hospital_fn, hospital_axis, params, images, labels, counts, keys, weights):
  """Weighted sum of the clipped updates of this device's hospitals, and per-hospital stats."""
  if hospital_axis == "vmap":
    deltas, norms, losses = jax.vmap(hospital_fn, (None, 0, 0, 0, 0))(
        params, images, labels, counts, keys)
    total = jax.tree.map(lambda d: jnp.tensordot(weights, d, axes=1), deltas)
    return total, norms, losses
  total, norms, losses = None, [], []
  for i in range(images.shape[0]):  # unrolled in the trace: one compiled step, no dispatch
    delta, norm, loss = hospital_fn(params, images[i], labels[i], counts[i], keys[i])
    weighted = jax.tree.map(lambda d: weights[i] * d, delta)
    total = weighted if total is None else jax.tree.map(jnp.add, total, weighted)
    norms.append(norm)
    losses.append(loss)
  return total, jnp.stack(norms), jnp.stack(losses)


def compiled_round(settings: RoundSettings, mesh, hospital_axis: str):
  """The whole round — local training, clipping, noise, aggregation, server step — one jit."""
  hospital_fn = _hospital_fn(settings)
  num_devices = mesh.devices.size

  def per_device(params, images, labels, counts, keys, weights):
    # Replicated params would make grad return a gradient summed over devices (NOTES-jax.md):
    # mark them device-varying so every hospital differentiates its own copy.
    params = jax.tree.map(lambda leaf: jax.lax.pcast(leaf, H, to="varying"), params)
    total, norms, losses = _map_hospitals(hospital_fn, hospital_axis, params, images, labels,
                                          counts, keys, weights)
    return jax.lax.psum(total, H), norms, losses

  sharded = jax.shard_map(per_device, mesh=mesh,
                          in_specs=(P(), P(H), P(H), P(H), P(H), P(H)),
                          out_specs=(P(), P(H), P(H)))

  @jax.jit
  def step(state, data, sampled, weights, round_key):
    keys = hospital_keys(round_key, sampled)
    clipped_sum, norms, losses = sharded(state.params, data.images[sampled],
                                         data.labels[sampled], data.counts[sampled], keys, weights)
    state = _finish_round(state, clipped_sum, jnp.sum(weights), round_key, settings)
    return state, RoundOutput(losses, norms)

  replicated = NamedSharding(mesh, P())

  def run_round(state, data, sampled, round_key):
    ids, weights = mesh_lib.pad_sampled(np.asarray(sampled), num_devices)
    # Same sharding as the step's output, so the second round does not recompile.
    state = jax.device_put(state, replicated)
    state, out = step(state, data, ids, weights, round_key)
    return state, jax.tree.map(lambda a: a[:len(sampled)], out)

  return run_round


def sequential_round(settings: RoundSettings):
  """The usual federated loop: one jitted dispatch per hospital, then a jitted server step."""
  hospital_step = jax.jit(_hospital_fn(settings))
  add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))
  finish = jax.jit(functools.partial(_finish_round, s=settings))

  def run_round(state, data, sampled, round_key):
    keys = hospital_keys(round_key, jnp.asarray(sampled, jnp.int32))
    clipped_sum, norms, losses = None, [], []
    for i, h in enumerate(np.asarray(sampled)):
      delta, norm, loss = hospital_step(state.params, data.images[h], data.labels[h],
                                        data.counts[h], keys[i])
      clipped_sum = delta if clipped_sum is None else add(clipped_sum, delta)
      norms.append(norm)
      losses.append(loss)
    state = finish(state, clipped_sum, jnp.float32(len(sampled)), round_key)
    return state, RoundOutput(jnp.stack(losses), jnp.stack(norms))

  return run_round


def put_hospital_data(data, mesh, engine_kind: str):
  """Hospital arrays on device: replicated over the mesh (compiled) or one list entry per hospital."""
  if engine_kind == "sequential":
    return type(data)(*[[jax.device_put(a[h]) for h in range(len(data.counts))] for a in data])
  return jax.device_put(data, NamedSharding(mesh, P()))
