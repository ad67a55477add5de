"""What a round reads of the hospitals' slices, and where those slices live.

A round reads, of each sampled hospital, its K local batches (client.batch_plan) and, with a
consensus rule, its own validation batch; of each verifier, its validation batch
(cross_evaluation.py). Every index is a pure function of (seed, round, hospital) (the key
scheme in engine.py), so the indices are drawn first (`round_plan`, a small jit) and the
slices gathered (`gather`) wherever they live:

- placement 'host' (the default): the hospitals' slices stay in host memory (numpy); each
  round gathers only what it reads (m_t x K x B local slices and the m_t + v validation
  batches) and moves that to the devices, the sampled hospitals' part sharded over the
  hospital axis. Device memory per round is O(m_t x (model + optimizer state + K x B
  slices)), independent of H and of the size of the hospitals' datasets.
- placement 'device': every hospital's slices replicated on every device once
  (`put_on_devices`); the round gathers them inside its jit. No per-round transfer, and H x
  dataset of memory on each device.

Both feed the same slices to the same computation, so the numbers are bit-identical
(tests/federated/test_round_data.py).
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ccfl_jax.federated import client, cross_evaluation, mesh as mesh_lib

PLACEMENTS = ("host", "device")


class RoundPlan(NamedTuple):
  """Indices into the padded slice arrays: local (client.BatchPlan, leading axis m), and with
  a consensus rule own [m, size] (each sampled hospital's validation batch) and verifiers
  [v, size]."""
  local: client.BatchPlan
  own: Any = None
  verifiers: Any = None


class RoundData(NamedTuple):
  """The slices a round reads: local (client.LocalBatches, leading axis m) and, with a
  consensus rule, own_batches and verifier_batches, each (images [n, size, ...], labels
  [n, size])."""
  local: client.LocalBatches
  own_batches: Any = None
  verifier_batches: Any = None


def hospital_keys(round_key, hospital_ids):
  """Each hospital's key for the round: fold_in(fold_in(round_key, 0), h)."""
  local_key = jax.random.fold_in(round_key, 0)
  return jax.vmap(jax.random.fold_in, (None, 0))(local_key, hospital_ids)


def round_plan(batch_plan, validation_size: int | None, capacity: int, ids, counts, malicious,
               verifiers, verifier_counts, round_key) -> RoundPlan:
  """The round's indices. batch_plan: client.make_batch_plan(settings); validation_size None
  without a consensus rule; counts / verifier_counts: the slice counts of ids / verifiers."""
  local = jax.vmap(batch_plan, (0, 0, None, 0))(hospital_keys(round_key, ids), counts,
                                                capacity, malicious)
  if validation_size is None:
    return RoundPlan(local)

  def validation(hospitals, hospital_counts):
    keys = cross_evaluation.validation_keys(round_key, hospitals)
    return jax.vmap(cross_evaluation.validation_indices, (0, 0, None, None))(
        keys, hospital_counts, capacity, validation_size)

  return RoundPlan(local, validation(ids, counts), validation(verifiers, verifier_counts))


def gather(data, ids, verifiers, plan: RoundPlan) -> RoundData:
  """The slices `plan` names, from data (hospitals.HospitalData: numpy on the host, or jax
  arrays inside a jit)."""
  rows = lambda hospitals, index: hospitals.reshape((-1,) + (1,) * (index.ndim - 1))

  def take(hospitals, index):
    return (data.images[rows(hospitals, index), index],
            data.labels[rows(hospitals, index), index])

  local = client.LocalBatches(*take(ids, plan.local.index), plan.local.poisoned)
  if plan.own is None:
    return RoundData(local)
  return RoundData(local, take(ids, plan.own), take(verifiers, plan.verifiers))


def shardings(mesh, data: RoundData):
  """RoundData's placement on the mesh: the sampled hospitals' part split over the hospital
  axis, the verifiers' batches on every device."""
  split, replicated = NamedSharding(mesh, P(mesh_lib.HOSPITAL_AXIS)), NamedSharding(mesh, P())
  return RoundData(jax.tree.map(lambda _: split, data.local),
                   jax.tree.map(lambda _: split, data.own_batches),
                   jax.tree.map(lambda _: replicated, data.verifier_batches))


def put_on_devices(data, mesh):
  """Placement 'device': every hospital's slices replicated over the mesh, once."""
  return jax.device_put(data, NamedSharding(mesh, P()))


def as_int32(values) -> np.ndarray:
  return np.asarray(values, np.int32)


def host_plan(plan_fn, data, ids, verifiers, malicious, round_key) -> RoundPlan:
  """round_plan's indices on the host (numpy), for a gather from host memory."""
  ids, verifiers = as_int32(ids), as_int32(verifiers)
  counts = np.asarray(data.counts)
  return jax.device_get(plan_fn(jnp.asarray(ids), jnp.asarray(counts[ids]), malicious,
                                jnp.asarray(verifiers), jnp.asarray(counts[verifiers]),
                                round_key))
