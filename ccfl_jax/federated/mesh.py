"""The one place that knows about devices: the hospital mesh and hospital-axis padding."""
import jax
import numpy as np
from jax.sharding import Mesh

from ccfl_jax import tree_util

HOSPITAL_AXIS = "hospitals"


def hospital_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (0 = all; with several processes, the
  devices of all of them: federated/processes.py)."""
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise ValueError(f"config.engine.num_devices: {num_devices} devices asked for, "
                       f"{len(devices)} available")
    if num_devices < len(devices) and jax.process_count() > 1:
      raise ValueError(f"config.engine.num_devices: {num_devices} of the {len(devices)} "
                       f"devices of {jax.process_count()} processes; with several processes "
                       "the mesh spans them all (0)")
    devices = devices[:num_devices]
  return Mesh(np.array(devices), (HOSPITAL_AXIS,))


def pad_sampled(sampled: np.ndarray, num_devices: int):
  """Sampled hospital ids padded to a multiple of the device count, and their weights.

  Padding repeats hospital 0 with weight 0: it is trained (the step is one static
  shape) but contributes nothing to the aggregate.
  """
  size = tree_util.round_up(len(sampled), num_devices)
  ids = np.zeros(size, np.int32)
  ids[:len(sampled)] = sampled
  weights = np.zeros(size, np.float32)
  weights[:len(sampled)] = 1.0
  return ids, weights


def default_hospital_axis(uses_convolutions: bool) -> str:
  """How hospitals of one device are mapped, as measured in results/bench_round.md.

  XLA:CPU runs vmapped convolutions over per-hospital weights as grouped convolutions,
  several times slower than the same hospitals unrolled in the trace; GPUs/TPUs batch them,
  and on CPU too `vmap` wins for models without convolutions (batched matmuls).
  """
  return "unroll" if jax.default_backend() == "cpu" and uses_convolutions else "vmap"


def default_unroll_local_steps() -> bool:
  """A rolled `lax.scan` around convolutions is 5-14x slower on XLA:CPU (NOTES-jax.md)."""
  return jax.default_backend() == "cpu"
