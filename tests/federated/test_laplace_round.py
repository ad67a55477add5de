"""privacy.mechanism = laplace_local inside the round: the noise each hospital submits has the
stated scale and comes from its key in the scheme, the server adds none, both engines (and
8 devices) agree, the vote judges the noised submissions, and the round's settings refuse
what cannot go with it."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccfl_jax.data import hospitals, partition, phantom
from ccfl_jax.federated import attacks, client, engine, mesh as mesh_lib, privacy, server
from ccfl_jax.ledger import consensus
from ccfl_jax.models import get_model

SIZE = 16
SAMPLED = np.array([0, 2, 3, 5])
ROUND_KEY = jax.random.key(7)
BOUND, EPSILON = 0.5, 2.0  # b = 2B / epsilon = 0.5


@pytest.fixture(scope="module")
def hospital_data():
  slices = phantom.make_phantom(0, 24, 2, 0.5, SIZE, -600, 1500)
  part = partition.partition(slices, 6, "dirichlet", seed=0, alpha=1.0)  # unequal: padding
  return hospitals.stack_hospitals(slices, part.hospitals)


def _settings(learning_rate=0.1, hidden=(16,), laplace_epsilon=EPSILON, **overrides):
  fields = dict(local_steps=3, batch_size=4, clip_norm=BOUND, noise_multiplier=0.0,
                unroll_local_steps=True, mechanism="laplace_local",
                laplace_epsilon=laplace_epsilon, return_updates=True)
  fields.update(overrides)
  return engine.RoundSettings(get_model("mlp", hidden=hidden), optax.sgd(learning_rate),
                              optax.sgd(1.0), **fields)


def _state(settings):
  params = settings.model.module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))
  return server.init_state(params, settings.server_optimizer)


def _flat(tree):
  return np.concatenate([np.asarray(leaf, np.float64).reshape(leaf.shape[0], -1)
                         for leaf in jax.tree.leaves(tree)], axis=1)


def test_the_submitted_noise_has_scale_two_b_over_epsilon(hospital_data):
  """Local learning rate 0: every update is exactly 0, so what each hospital submits is its
  Laplace noise alone, drawn inside the compiled round. n = 4 hospitals x P coordinates."""
  settings = _settings(learning_rate=0.0, hidden=(64,))
  mesh = mesh_lib.hospital_mesh(1)
  state = _state(settings)
  _, out = engine.compiled_round(settings, mesh, "vmap")(
      state, hospital_data, SAMPLED, ROUND_KEY)
  np.testing.assert_array_equal(np.asarray(out.update_norm), 0.0)  # nothing trained
  x = _flat(out.updates).ravel()
  b = privacy.laplace_scale(BOUND, EPSILON)
  assert b == 0.5
  n = x.size
  assert n > 60_000
  # |X| ~ Exponential(b): E|X| = b, sd b, so the mean of n has sd b / sqrt(n); 5 sd.
  assert abs(np.mean(np.abs(x)) / b - 1) < 5 / math.sqrt(n)
  # E X^2 = 2b^2 and Var X^2 = 24b^4 - 4b^4 = 20b^4: relative sd sqrt(20) / 2 / sqrt(n).
  assert abs(np.mean(x ** 2) / (2 * b * b) - 1) < 5 * math.sqrt(20) / 2 / math.sqrt(n)
  assert abs(np.mean(x)) < 5 * math.sqrt(2) * b / math.sqrt(n)  # sd of X: sqrt(2) b
  # Laplace, not Gaussian: E|X| / sd = 1 / sqrt(2) = 0.707 (a Gaussian's: 0.798). The ratio's
  # sd is about 0.3 / sqrt(n) (delta method), so 0.01 is > 10 sd at this n.
  assert abs(np.mean(np.abs(x)) / np.std(x) - 1 / math.sqrt(2)) < 0.01
  # The key scheme: hospital h's noise is laplace_noise_like(fold_in(hospital_key(h), 4), .).
  keys = engine.hospital_keys(ROUND_KEY, jnp.asarray(SAMPLED))
  for i in range(len(SAMPLED)):
    expected = privacy.laplace_noise_like(jax.random.fold_in(keys[i], client.LAPLACE_KEY),
                                          state.params, b)
    for got, want in zip(jax.tree.leaves(out.updates), jax.tree.leaves(expected)):
      np.testing.assert_allclose(np.asarray(got[i]), np.asarray(want), rtol=1e-6, atol=1e-7)
  rows = _flat(out.updates)
  assert np.abs(np.corrcoef(rows)[np.triu_indices(len(rows), 1)]).max() < 5 / math.sqrt(
      rows.shape[1])  # independent across hospitals


def test_the_server_averages_the_noised_submissions_and_adds_no_noise(hospital_data):
  settings = _settings()
  mesh = mesh_lib.hospital_mesh(1)
  state = _state(settings)
  new_state, out = engine.compiled_round(settings, mesh, "unroll")(
      state, hospital_data, SAMPLED, ROUND_KEY)
  assert np.all(np.asarray(out.accepted))
  for new, old, submitted in zip(jax.tree.leaves(new_state.params),
                                 jax.tree.leaves(state.params), jax.tree.leaves(out.updates)):
    np.testing.assert_allclose(np.asarray(new) - np.asarray(old),
                               np.mean(np.asarray(submitted), axis=0), atol=1e-6)
  # What was submitted is the L1-clipped update plus noise: the norm reported is the L1
  # norm before clipping, and the submission minus its noise has L1 norm <= B.
  keys = engine.hospital_keys(ROUND_KEY, jnp.asarray(SAMPLED))
  device_data = jax.tree.map(jnp.asarray, hospital_data)
  for i, h in enumerate(SAMPLED):
    noise = privacy.laplace_noise_like(jax.random.fold_in(keys[i], client.LAPLACE_KEY),
                                       state.params, privacy.laplace_scale(BOUND, EPSILON))
    clipped = jax.tree.map(lambda s, n: s[i] - n, out.updates, noise)
    assert float(privacy.l1_norm(clipped)) <= BOUND * (1 + 1e-4)
    local, _ = client.local_training(state.params, device_data.images[h], device_data.labels[h],
                                     device_data.counts[h], keys[i], model=settings.model,
                                     optimizer=settings.local_optimizer, local_steps=3,
                                     batch_size=4, unroll=True)
    raw = jax.tree.map(jnp.subtract, local, state.params)
    np.testing.assert_allclose(float(out.update_norm[i]), float(privacy.l1_norm(raw)), rtol=1e-4)
    np.testing.assert_allclose(_flat(jax.tree.map(lambda c: c[None], clipped)),
                               _flat(jax.tree.map(lambda c: c[None], privacy.clip_update_l1(
                                   raw, BOUND)[0])), atol=2e-6)


def _run(run_round, data, state, rounds=2, verifiers=None):
  for r in range(rounds):
    state, out = run_round(state, data, SAMPLED, jax.random.key(100 + r), verifiers,
                           round_index=r)
  return state, out


def _assert_same(a, b, atol=1e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-5)


@pytest.mark.parametrize("hospital_axis", ["unroll", "vmap"])
def test_compiled_equals_sequential_under_laplace_local(hospital_data, hospital_axis):
  settings = _settings()
  state = _state(settings)
  mesh = mesh_lib.hospital_mesh(1)
  compiled = _run(engine.compiled_round(settings, mesh, hospital_axis),
                  hospital_data, state)
  sequential = _run(engine.sequential_round(settings),
                    hospital_data, state)
  _assert_same(compiled, sequential)
  assert not np.allclose(np.asarray(jax.tree.leaves(compiled[0].params)[0]),
                         np.asarray(jax.tree.leaves(state.params)[0]))


def test_vote_on_noised_submissions_eight_devices_and_sequential_agree(hospital_data):
  """A sign-flipping hospital under the MAE vote with the direction check on, robust median
  aggregation: 8 devices (4 hospitals padded), 1 device and the loop draw the same noise and
  reach the same votes and model."""
  rule = consensus.ConsensusRule(direction_k=2.0)
  settings = _settings(consensus=rule, validation_size=8, attack=attacks.Attack("sign_flip", 1),
                       aggregation=engine.aggregation_lib.AggregationRule("median"),
                       laplace_epsilon=200.0)
  state = _state(settings)
  verifiers = np.array([1, 2, 4])
  results = []
  for num_devices in (1, 8):
    mesh = mesh_lib.hospital_mesh(num_devices)
    results.append(_run(engine.compiled_round(settings, mesh, "vmap"),
                        hospital_data, state,
                        verifiers=verifiers))
  results.append(_run(engine.sequential_round(settings),
                      hospital_data, state,
                      verifiers=verifiers))
  for other in results[1:]:
    _assert_same(results[0], other)
  out = results[0][1]
  assert out.cosines is not None and out.mae.shape == (4, 3)


def test_frozen_parameters_carry_no_local_noise(hospital_data):
  model = get_model("efficientnet_lite", pretrained=False, stages=2, trainable="last_1")
  shapes = jax.eval_shape(model.module.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, SIZE, SIZE, 1), jnp.float32))
  mask = model.trainable_mask(shapes)
  settings = engine.RoundSettings(
      model, server.only_trainable(optax.sgd(0.01), mask),
      server.only_trainable(optax.sgd(1.0), mask), local_steps=1, batch_size=4,
      clip_norm=BOUND, noise_multiplier=0.0, unroll_local_steps=True, trainable=mask,
      mechanism="laplace_local", laplace_epsilon=EPSILON, return_updates=True)
  params = model.module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))
  state = server.init_state(params, settings.server_optimizer)
  mesh = mesh_lib.hospital_mesh(1)
  new_state, out = engine.compiled_round(settings, mesh, "unroll")(
      state, hospital_data, SAMPLED[:2], ROUND_KEY)
  for submitted, new, old, trains in zip(jax.tree.leaves(out.updates),
                                         jax.tree.leaves(new_state.params),
                                         jax.tree.leaves(state.params), jax.tree.leaves(mask)):
    if trains:
      assert np.any(np.asarray(submitted))
    else:
      assert not np.any(np.asarray(submitted))
      np.testing.assert_array_equal(np.asarray(new), np.asarray(old))


@pytest.mark.parametrize("overrides, message", [
    (dict(noise_multiplier=0.1), "noise_multiplier must be 0 under laplace_local"),
    (dict(attack=attacks.Attack("ipm", 1)), "colluding attacks are not simulated"),
    (dict(mechanism="laplace_global"), "privacy.mechanism 'laplace_global'"),
])
def test_round_settings_refuse_what_cannot_go_with_laplace_local(overrides, message):
  with pytest.raises(ValueError, match=message):
    _settings(**overrides)
