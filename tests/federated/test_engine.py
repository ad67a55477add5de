"""The compiled round against the sequential loop, across device counts and hospital mappings."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccfl_jax.data import hospitals, partition, phantom
from ccfl_jax.federated import client, engine, mesh as mesh_lib, privacy, server
from ccfl_jax.models import get_model

SIZE = 16


@pytest.fixture(scope="module")
def hospital_data():
  slices = phantom.make_phantom(0, 24, 2, 0.5, SIZE, -600, 1500)
  part = partition.partition(slices, 6, "dirichlet", seed=0, alpha=1.0)  # unequal sizes: padding
  return hospitals.stack_hospitals(slices, part.hospitals)


def _settings(model_name="mlp", noise_multiplier=0.0, clip_norm=0.5, **model_kwargs):
  model = get_model(model_name, **model_kwargs)
  return engine.RoundSettings(model, optax.sgd(0.1, momentum=0.9), optax.sgd(1.0), local_steps=3,
                              batch_size=4, clip_norm=clip_norm,
                              noise_multiplier=noise_multiplier, unroll_local_steps=True)


def _initial_state(settings):
  params = settings.model.module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))
  return server.init_state(params, settings.server_optimizer)


def _run(run_round, data, state, sampled, rounds=2):
  for r in range(rounds):
    state, out = run_round(state, data, sampled, jax.random.key(100 + r))
  return state, out


def _assert_same(a, b, atol=1e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-5)


SAMPLED = np.array([0, 2, 3, 5])


@pytest.mark.parametrize("hospital_axis", ["unroll", "vmap"])
def test_compiled_round_equals_sequential_loop(hospital_data, hospital_axis):
  settings = _settings(hidden=(16,))
  state = _initial_state(settings)
  mesh = mesh_lib.hospital_mesh(1)
  compiled = _run(engine.compiled_round(settings, mesh, hospital_axis),
                  engine.put_hospital_data(hospital_data, mesh, "compiled"), state, SAMPLED)
  sequential = _run(engine.sequential_round(settings),
                    engine.put_hospital_data(hospital_data, mesh, "sequential"), state, SAMPLED)
  _assert_same(compiled, sequential)
  assert not np.allclose(np.asarray(jax.tree.leaves(compiled[0].params)[0]),
                         np.asarray(jax.tree.leaves(state.params)[0]))  # it trained


def test_eight_devices_match_one_device_with_noise(hospital_data):
  assert len(jax.devices()) == 8, "tests run with 8 simulated devices (tests/conftest.py)"
  settings = _settings(noise_multiplier=0.3, hidden=(16,))
  state = _initial_state(settings)
  results = []
  for num_devices in (1, 8):  # 4 sampled hospitals padded to 8 on the 8-device mesh
    mesh = mesh_lib.hospital_mesh(num_devices)
    results.append(_run(engine.compiled_round(settings, mesh, "vmap"),
                        engine.put_hospital_data(hospital_data, mesh, "compiled"), state, SAMPLED))
  _assert_same(results[0], results[1])


def test_each_hospital_is_clipped_on_its_own_update(hospital_data):
  """Guards the shard_map pitfall: replicated params give device-summed gradients."""
  settings = _settings(clip_norm=1e-3, hidden=(16,))
  state = _initial_state(settings)
  mesh = mesh_lib.hospital_mesh(2)
  new_state, out = engine.compiled_round(settings, mesh, "unroll")(
      state, engine.put_hospital_data(hospital_data, mesh, "compiled"), SAMPLED, jax.random.key(1))
  hospital_fn = client.make_hospital_update(
      client.LocalSettings(settings.model, settings.local_optimizer, 3, 4, True, 1e-3))
  keys = engine.hospital_keys(jax.random.key(1), jnp.asarray(SAMPLED))
  device_data = jax.tree.map(jnp.asarray, hospital_data)
  expected_norms = [hospital_fn(state.params, device_data.images[h], device_data.labels[h],
                                device_data.counts[h], keys[i])[1] for i, h in enumerate(SAMPLED)]
  np.testing.assert_allclose(np.asarray(out.update_norm), np.asarray(expected_norms), rtol=1e-4)
  step = jax.tree.map(jnp.subtract, new_state.params, state.params)
  assert float(privacy.global_norm(step)) <= 1e-3 * (1 + 1e-4)  # mean of clipped updates


def test_conv_model_compiled_equals_sequential(hospital_data):
  settings = _settings("small_cnn", widths=(4, 8))
  state = _initial_state(settings)
  mesh = mesh_lib.hospital_mesh(1)
  compiled = _run(engine.compiled_round(settings, mesh, "unroll"),
                  engine.put_hospital_data(hospital_data, mesh, "compiled"), state, SAMPLED, 1)
  sequential = _run(engine.sequential_round(settings),
                    engine.put_hospital_data(hospital_data, mesh, "sequential"), state, SAMPLED, 1)
  _assert_same(compiled, sequential)


def test_local_batches_never_draw_padding():
  idx = client.local_batches(jax.random.key(0), 5, 12, num_steps=4, batch_size=3)
  assert idx.shape == (4, 3) and int(idx.max()) < 5
  assert sorted(np.asarray(idx).ravel()[:5].tolist()) == list(range(5))  # a permutation first


def test_auto_hospital_axis_unrolls_convolutions_on_cpu():
  from ccfl_jax.models import uses_convolutions
  assert uses_convolutions(get_model("small_cnn", widths=(4,)), SIZE)
  assert not uses_convolutions(get_model("mlp", hidden=(4,)), SIZE)
  assert mesh_lib.default_hospital_axis(True) == "unroll"  # tests run on XLA:CPU
  assert mesh_lib.default_hospital_axis(False) == "vmap"


@pytest.mark.parametrize("kind", ["compiled", "sequential"])
def test_a_non_finite_update_is_rejected_and_the_model_stays_finite(hospital_data, kind):
  settings = _settings(hidden=(8,))
  state = _initial_state(settings)
  mesh = mesh_lib.hospital_mesh(2)
  images = hospital_data.images.copy()
  images[2] = np.nan  # hospital 2's slices are corrupt: its update is NaN
  data = engine.put_hospital_data(hospital_data._replace(images=images), mesh, kind)
  run_round = (engine.compiled_round(settings, mesh, "vmap") if kind == "compiled"
               else engine.sequential_round(settings))
  new_state, out = run_round(state, data, SAMPLED, jax.random.key(1))
  assert np.asarray(out.accepted).tolist() == [True, False, True, True]  # SAMPLED = 0, 2, 3, 5
  assert np.isnan(np.asarray(out.update_norm)[1])
  assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(new_state.params))
  assert not np.allclose(np.asarray(jax.tree.leaves(new_state.params)[0]),
                         np.asarray(jax.tree.leaves(state.params)[0]))
  images[:] = np.nan  # every sampled update non-finite: the global model is left as it was
  data = engine.put_hospital_data(hospital_data._replace(images=images), mesh, kind)
  unchanged, out = run_round(state, data, SAMPLED, jax.random.key(1))
  assert not np.any(np.asarray(out.accepted))
  _assert_same(unchanged.params, state.params, atol=0)
