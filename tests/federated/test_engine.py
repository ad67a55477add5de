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
                  hospital_data, state, SAMPLED)
  sequential = _run(engine.sequential_round(settings),
                    hospital_data, state, SAMPLED)
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
                        hospital_data, state, SAMPLED))
  _assert_same(results[0], results[1])


def test_each_hospital_is_clipped_on_its_own_update(hospital_data):
  """Guards the shard_map pitfall: replicated params give device-summed gradients."""
  settings = _settings(clip_norm=1e-3, hidden=(16,))
  state = _initial_state(settings)
  mesh = mesh_lib.hospital_mesh(2)
  new_state, out = engine.compiled_round(settings, mesh, "unroll")(
      state, hospital_data, SAMPLED, jax.random.key(1))
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
                  hospital_data, state, SAMPLED, 1)
  sequential = _run(engine.sequential_round(settings),
                    hospital_data, state, SAMPLED, 1)
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
  data = hospital_data._replace(images=images)
  run_round = (engine.compiled_round(settings, mesh, "vmap") if kind == "compiled"
               else engine.sequential_round(settings))
  new_state, out = run_round(state, data, SAMPLED, jax.random.key(1))
  assert np.asarray(out.accepted).tolist() == [True, False, True, True]  # SAMPLED = 0, 2, 3, 5
  assert np.isnan(np.asarray(out.update_norm)[1])
  assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(new_state.params))
  assert not np.allclose(np.asarray(jax.tree.leaves(new_state.params)[0]),
                         np.asarray(jax.tree.leaves(state.params)[0]))
  images[:] = np.nan  # every sampled update non-finite: the global model is left as it was
  data = hospital_data._replace(images=images)
  unchanged, out = run_round(state, data, SAMPLED, jax.random.key(1))
  assert not np.any(np.asarray(out.accepted))
  _assert_same(unchanged.params, state.params, atol=0)


# Frozen parameters and augmentation inside the round (issue 10).
def _frozen_settings(**overrides):
  model = get_model("efficientnet_lite", pretrained=False, stages=2, trainable="last_1")
  state_shapes = jax.eval_shape(model.module.init, jax.random.key(0),
                                jax.ShapeDtypeStruct((1, SIZE, SIZE, 1), jnp.float32))
  mask = model.trainable_mask(state_shapes)
  fields = dict(local_optimizer=server.only_trainable(optax.adamw(0.01, weight_decay=0.1), mask),
                server_optimizer=server.only_trainable(optax.sgd(1.0), mask), local_steps=2,
                batch_size=4, clip_norm=0.5, noise_multiplier=1.0, unroll_local_steps=True,
                trainable=mask)
  fields.update(overrides)
  return engine.RoundSettings(model, **fields), mask


def _leaves_by_mask(tree, mask, trains: bool):
  return [leaf for leaf, m in zip(jax.tree.leaves(tree), jax.tree.leaves(mask)) if m == trains]


def test_frozen_parameters_get_no_update_no_noise_and_no_share_of_the_norm(hospital_data):
  # The attacker adds Gaussian noise to every parameter, frozen ones too; weight decay would
  # move every local parameter; the server adds noise of std sigma * S: none reaches a frozen one.
  attack = engine.attacks.Attack("gaussian_noise", num_malicious=1, scale=1.0)
  settings, mask = _frozen_settings(attack=attack)
  assert 0 < sum(jax.tree.leaves(mask)) < len(jax.tree.leaves(mask))
  state = _initial_state(settings)
  mesh = mesh_lib.hospital_mesh(2)
  new_state, out = engine.compiled_round(settings, mesh, "unroll")(
      state, hospital_data, SAMPLED, jax.random.key(3))
  for new, old in zip(_leaves_by_mask(new_state.params, mask, False),
                      _leaves_by_mask(state.params, mask, False)):
    np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
  assert all(not np.allclose(new, old) for new, old in
             zip(_leaves_by_mask(new_state.params, mask, True),
                 _leaves_by_mask(state.params, mask, True)))
  # The attacker's (hospital 0's) norm is that of the trainable part of what it sent.
  hospital_fn = client.make_hospital_update(settings.local)
  keys = engine.hospital_keys(jax.random.key(3), jnp.asarray(SAMPLED))
  device_data = jax.tree.map(jnp.asarray, hospital_data)
  args = (state.params, device_data.images[0], device_data.labels[0], device_data.counts[0],
          keys[0], True)
  clipped, norm, _ = hospital_fn(*args)
  unmasked_norm = client.make_hospital_update(
      client.LocalSettings(**{**settings.local.__dict__, "trainable": None}))(*args)[1]
  np.testing.assert_allclose(float(out.update_norm[0]), float(norm), rtol=1e-5)
  assert float(norm) < float(unmasked_norm)
  assert all(not np.any(np.asarray(leaf)) for leaf in _leaves_by_mask(clipped, mask, False))


AUGMENT = engine.augment_lib.AugmentSettings(enabled=True)


def test_augmented_round_is_deterministic_and_engines_agree(hospital_data):
  plain = _settings(hidden=(16,))
  augmented = _settings(hidden=(16,))
  augmented = engine.RoundSettings(**{**augmented.__dict__, "augment": AUGMENT})
  state = _initial_state(plain)
  mesh = mesh_lib.hospital_mesh(2)
  data = hospital_data
  runs = [_run(engine.compiled_round(s, mesh, "vmap"), data, state, SAMPLED)
          for s in (augmented, augmented, plain)]
  _assert_same(runs[0], runs[1], atol=0)
  assert not np.allclose(np.asarray(runs[0][1].local_loss), np.asarray(runs[2][1].local_loss))
  sequential = _run(engine.sequential_round(augmented),
                    hospital_data, state, SAMPLED)
  _assert_same(runs[0], sequential)


def test_frozen_backbone_with_augmentation_compiled_equals_sequential(hospital_data):
  settings, _ = _frozen_settings(augment=AUGMENT, noise_multiplier=0.3)
  state = _initial_state(settings)
  mesh = mesh_lib.hospital_mesh(1)
  compiled = _run(engine.compiled_round(settings, mesh, "unroll"),
                  hospital_data, state, SAMPLED, 1)
  sequential = _run(engine.sequential_round(settings),
                    hospital_data, state, SAMPLED, 1)
  _assert_same(compiled, sequential)


# The local learning-rate schedule across rounds (config.local_schedule).


def test_schedules_from_config():
  from ml_collections import ConfigDict
  block = lambda name, warmup=0.3: ConfigDict(dict(name=name, warmup_fraction=warmup))
  assert server.schedule_from_config(block("constant"), 100) is None
  cosine = server.schedule_from_config(block("cosine", 0.2), 10)
  np.testing.assert_allclose([float(cosine(t)) for t in (0, 1, 2, 6, 10)],
                             [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)  # warm-up 2 steps, decay 8
  one_cycle = server.schedule_from_config(block("one_cycle", 0.3), 10)
  np.testing.assert_allclose([float(one_cycle(t)) for t in (0, 3, 10)], [1 / 25, 1.0, 1 / 25e4],
                             rtol=1e-5)


def test_a_schedule_scales_each_local_step_at_its_run_step(hospital_data):
  """sgd at lr 0.1 x factor f equals sgd at lr 0.1 f; the factor is read at the run's step
  round_index x K + k, so a schedule that is zero for the first 3 steps leaves round 0
  (K = 3) with no update and round 1 with a real one."""
  data = jax.tree.map(jnp.asarray, hospital_data)
  model = get_model("mlp", hidden=(8,))
  params = model.module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))
  common = dict(model=model, local_steps=3, batch_size=4, unroll=False)
  inputs = (params, data.images[0], data.labels[0], data.counts[0], jax.random.key(3))
  halved, _ = client.local_training(*inputs, optimizer=optax.sgd(0.1),
                                    schedule=lambda t: 0.5, **common)
  slower, _ = client.local_training(*inputs, optimizer=optax.sgd(0.05), **common)
  _assert_same(halved, slower, atol=1e-7)
  late = lambda t: jnp.where(t >= 3, 1.0, 0.0)
  first, _ = client.local_training(*inputs, 0, optimizer=optax.sgd(0.1), schedule=late, **common)
  second, _ = client.local_training(*inputs, 3, optimizer=optax.sgd(0.1), schedule=late, **common)
  _assert_same(first, params, atol=0)
  assert not np.allclose(np.asarray(jax.tree.leaves(second)[0]),
                         np.asarray(jax.tree.leaves(params)[0]))


def test_scheduled_compiled_round_equals_sequential_and_compiles_once(hospital_data):
  from ml_collections import ConfigDict
  schedule = server.schedule_from_config(ConfigDict(dict(name="one_cycle", warmup_fraction=0.3)),
                                         3 * 3)
  settings = engine.RoundSettings(**{**_settings(hidden=(16,)).__dict__, "schedule": schedule})
  state = _initial_state(settings)
  mesh = mesh_lib.hospital_mesh(1)
  results = []
  for kind in ("compiled", "sequential"):
    run_round = (engine.compiled_round(settings, mesh, "vmap") if kind == "compiled"
                 else engine.sequential_round(settings))
    data, s = hospital_data, state
    for r in range(3):
      s, out = run_round(s, data, SAMPLED, jax.random.key(100 + r), round_index=r)
    results.append((s, out))
  _assert_same(results[0], results[1])
  traces = []  # the schedule runs in Python only while the round is traced
  counting = lambda t: (traces.append(1), schedule(t))[1]
  compiled = engine.compiled_round(engine.RoundSettings(**{**settings.__dict__,
                                                           "schedule": counting}), mesh, "vmap")
  data = hospital_data
  by_round = [compiled(state, data, SAMPLED, jax.random.key(100), round_index=r)[0]
              for r in (0, 1)]  # same round, two places on the schedule: different models
  assert len(traces) == 1  # round_index is traced: one compile for every round
  assert not np.allclose(np.asarray(jax.tree.leaves(by_round[0].params)[0]),
                         np.asarray(jax.tree.leaves(by_round[1].params)[0]))


@pytest.mark.parametrize("kind, placement", [("compiled", "host"), ("compiled", "device"),
                                             ("sequential", "host")])
def test_preparing_the_next_round_while_this_one_computes_changes_nothing(
    hospital_data, kind, placement):
  """What the training loop does (round t + 1's slices made between round t's dispatch and
  its finish) gives the bits of rounds run one after the other."""
  settings = _settings(noise_multiplier=0.3, hidden=(16,))
  state = _initial_state(settings)
  mesh = mesh_lib.hospital_mesh(2)
  runner = (engine.compiled_round(settings, mesh, "vmap", placement) if kind == "compiled"
            else engine.sequential_round(settings))
  data = engine.put_hospital_data(hospital_data, mesh, placement)
  rounds = [(SAMPLED, jax.random.key(100)), (np.array([1, 4, 5]), jax.random.key(101))]
  plain_state, plain_outs = state, []
  for r, (sampled, key) in enumerate(rounds):
    plain_state, out = runner(plain_state, data, sampled, key, round_index=r)
    plain_outs.append(out)
  overlapped_state, overlapped_outs = state, []
  prepared = runner.prepare(data, *rounds[0])
  for r in range(len(rounds)):
    overlapped_state, pending = runner.dispatch(overlapped_state, data, prepared, r)
    upcoming = runner.prepare(data, *rounds[r + 1]) if r + 1 < len(rounds) else None
    overlapped_outs.append(runner.finish(pending, prepared))
    prepared = upcoming
  for a, b in zip(jax.tree.leaves((plain_state, plain_outs)),
                  jax.tree.leaves((overlapped_state, overlapped_outs))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
