"""Several JAX processes (hosts), one global device mesh: what differs from one process.

Every process runs the same command with its own `distributed.process_id`; JAX's
distributed runtime joins them, and `jax.devices()` (mesh.hospital_mesh) then lists the
devices of all of them, so the hospital axis spans every host. Each process loads the same
data (a pure function of the config and seed) and feeds its own devices their hospitals'
slices; collectives (the round's psum, the gathers below) cross processes. Process 0 alone
writes the run folder (metrics, summary, ledger, checkpoints: orbax with process 0 as its
only active process, so no shared file system is needed) and hands the others, before the
loop, the state it restored, and each round its ledger's roles.
"""
import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(settings) -> None:
  """jax.distributed.initialize from config.distributed (a no-op for one process, or when
  already joined). On CPU the cross-process collectives go through gloo."""
  if settings.num_processes == 1 and not settings.auto_detect:
    return
  if jax.distributed.is_initialized():
    return
  # Before any computation: the backend is created on first use. CPU collectives across
  # processes need an implementation (gloo ships with jaxlib); accelerators bring their own.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if settings.auto_detect:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(settings.coordinator_address, settings.num_processes,
                               settings.process_id)


def is_primary() -> bool:
  """This process writes the run folder (process 0)."""
  return jax.process_index() == 0


def to_host(tree):
  """Arrays -> numpy on this process, those sharded over other processes' devices gathered
  (jax.device_get cannot read a shard another process holds)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return jax.tree.map(
      lambda leaf: (np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
                    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
                    and not leaf.is_fully_replicated else jax.device_get(leaf)), tree)


def from_primary(tree):
  """Process 0's value of `tree` on every process (the others pass any tree of the same
  structure, shapes and dtypes); the tree itself with one process."""
  if jax.process_count() == 1:
    return tree
  return multihost_utils.broadcast_one_to_all(tree)


def local_copy(tree):
  """A replicated tree this process alone can compute with (its host copy; the tree itself
  with one process): process 0 evaluates the global model without the others."""
  if jax.process_count() == 1:
    return tree
  return jax.device_get(tree)


def shared_roles(roles, make_roles):
  """Process 0's ledger roles of the round on every process: `roles` is a RoundRoles (its
  placeholder off process 0) or None without a ledger; make_roles(leader, verifiers)
  rebuilds one."""
  if roles is None or jax.process_count() == 1:
    return roles
  ids = from_primary(np.asarray((roles.leader, *roles.verifiers), np.int32))
  return make_roles(int(ids[0]), tuple(int(i) for i in ids[1:]))
