"""Where the round's slices live (federated/round_data.py): host memory or the devices, same bits."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccfl_jax.data import hospitals, partition, phantom
from ccfl_jax.federated import (attacks, client, engine, mesh as mesh_lib, round_data, server)
from ccfl_jax.ledger import consensus
from ccfl_jax.models import get_model

SIZE = 16
SAMPLED = np.array([0, 2, 3, 5], np.int32)
VERIFIERS = np.array([1, 4], np.int32)


@pytest.fixture(scope="module")
def hospital_data():
  slices = phantom.make_phantom(0, 24, 2, 0.5, SIZE, -600, 1500)
  part = partition.partition(slices, 6, "dirichlet", seed=0, alpha=1.0)  # unequal sizes: padding
  return hospitals.stack_hospitals(slices, part.hospitals)


def _settings(model_name="mlp", schedule=None, **model_kwargs):
  """A round with every gather in it: the vote (own and verifiers' validation batches) and a
  backdoor hospital (the poisoned slots travel with the batches)."""
  return engine.RoundSettings(
      get_model(model_name, **model_kwargs), optax.sgd(0.1, momentum=0.9), optax.sgd(1.0),
      local_steps=3, batch_size=4, clip_norm=0.5, noise_multiplier=0.3,
      unroll_local_steps=True, consensus=consensus.ConsensusRule(), validation_size=5,
      attack=attacks.Attack("backdoor", num_malicious=1, poison_fraction=0.5),
      schedule=schedule)


def _state(settings):
  params = settings.model.module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))
  return server.init_state(params, settings.server_optimizer)


def _rounds(run_round, data, state, rounds=2, sampled=SAMPLED):
  outs = []
  for r in range(rounds):
    state, out = run_round(state, data, sampled, jax.random.key(100 + r), VERIFIERS,
                           round_index=r)
    outs.append(out)
  return jax.device_get((state, outs))


def _assert_bitwise_equal(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("model_name,kwargs,hospital_axis",
                         [("mlp", dict(hidden=(16,)), "vmap"),
                          ("small_cnn", dict(widths=(4, 8)), "unroll")])
def test_host_and_device_placement_give_the_same_bits(hospital_data, model_name, kwargs,
                                                      hospital_axis):
  settings = _settings(model_name, **kwargs)
  state = _state(settings)
  mesh = mesh_lib.hospital_mesh(2)
  on_host = _rounds(engine.compiled_round(settings, mesh, hospital_axis, "host"),
                    engine.put_hospital_data(hospital_data, mesh, "host"), state)
  on_device = _rounds(engine.compiled_round(settings, mesh, hospital_axis, "device"),
                      engine.put_hospital_data(hospital_data, mesh, "device"), state)
  _assert_bitwise_equal(on_host, on_device)
  assert not np.array_equal(jax.tree.leaves(on_host[0].params)[0],
                            np.asarray(jax.tree.leaves(state.params)[0]))  # it trained
  assert on_host[1][0].mae.shape == (len(SAMPLED), len(VERIFIERS))


def test_a_round_gathers_only_the_sampled_hospitals_batches(hospital_data):
  settings = _settings(hidden=(16,))
  capacity = hospital_data.images.shape[1]
  ids = np.array([0, 2, 3, 5, 0, 0], np.int32)  # padded to 6 as on 3 devices
  slices = engine.host_round_data(settings)(hospital_data, ids, VERIFIERS, jax.random.key(7))
  k, b, size = settings.local_steps, settings.batch_size, settings.validation_size
  assert isinstance(slices.local.images, np.ndarray)  # gathered in host memory
  assert slices.local.images.shape == (6, k, b, SIZE, SIZE, 1)  # m x K x B slices, not H x N
  assert slices.local.poisoned.shape == (6, k, b)
  assert slices.own_batches[0].shape == (6, size, SIZE, SIZE, 1)
  assert slices.verifier_batches[0].shape == (2, size, SIZE, SIZE, 1)
  # The same slices as each hospital drawing from its own padded arrays (client.py).
  keys = engine.hospital_keys(jax.random.key(7), jnp.asarray(ids))
  for i, h in enumerate(ids):
    plan = client.batch_plan(keys[i], hospital_data.counts[h], capacity, h == 0,
                             local_steps=k, batch_size=b, attack=settings.attack)
    np.testing.assert_array_equal(slices.local.images[i], hospital_data.images[h][plan.index])
    np.testing.assert_array_equal(slices.local.labels[i], hospital_data.labels[h][plan.index])
    np.testing.assert_array_equal(slices.local.poisoned[i], plan.poisoned)
    assert np.all(np.asarray(plan.index) < hospital_data.counts[h])  # never padding
  assert slices.local.poisoned[0].any() and not slices.local.poisoned[1:4].any()


def test_the_round_compiles_once_in_five_rounds_while_m_t_varies_within_its_padding(
    hospital_data):
  traces = []  # the schedule runs in Python only while the round is traced
  settings = _settings(hidden=(16,), schedule=lambda t: (traces.append(t), 1.0)[1])
  mesh = mesh_lib.hospital_mesh(4)
  run_round = engine.compiled_round(settings, mesh, "vmap")
  state = _state(settings)
  for r, sampled in enumerate([[0, 1, 2, 3], [1, 2, 5], [0, 3, 4, 5], [2, 4], [0, 5, 1]]):
    state, out = run_round(state, hospital_data, np.asarray(sampled, np.int32),
                           jax.random.key(r), VERIFIERS, round_index=r)
    assert out.accepted.shape == out.update_norm.shape == (len(sampled),)  # padding dropped
    assert out.mae.shape == (len(sampled), len(VERIFIERS))
  assert len(traces) == 1  # one trace, one compile, for all five rounds (every m_t pads to 4)


def test_sequential_engine_with_device_placement_is_refused():
  from ccfl_jax import configuration
  config = configuration.default_config()
  config.engine.kind = "sequential"
  config.engine.data_placement = "device"
  with pytest.raises(configuration.ConfigError, match="engine.data_placement"):
    configuration.validate(config)
  with pytest.raises(ValueError, match="engine.data_placement 'disk'"):
    engine.compiled_round(_settings(hidden=(16,)), mesh_lib.hospital_mesh(1), "vmap", "disk")
  assert round_data.PLACEMENTS == ("host", "device")
