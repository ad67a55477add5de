"""The MAE vote inside the round (eqs. 14-15): cross-evaluation, rejection, aggregation, engines."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccfl_jax.data import hospitals
from ccfl_jax.federated import attacks, cross_evaluation, engine, mesh as mesh_lib, server
from ccfl_jax.ledger import consensus
from ccfl_jax.models import get_model

SIZE = 16
SAMPLED = np.array([0, 2, 3, 5])
VERIFIERS = np.array([1, 2, 4])  # hospital 1 and 4 verify without being sampled
ROUND_KEY = jax.random.key(3)


@pytest.fixture(scope="module")
def hospital_data():
  """Six hospitals of an easy task (bright slices are COVID), so one round already separates
  an honest update from a sign-flipped one; unequal counts exercise the padding."""
  rng = np.random.default_rng(0)
  labels = np.tile(np.array([0, 1] * 4, np.int32), (6, 1))
  images = labels[..., None, None, None] * 0.5 + rng.uniform(0, 0.5, (6, 8, SIZE, SIZE, 1))
  return hospitals.HospitalData(images.astype(np.float32), labels,
                                np.array([8, 8, 6, 7, 8, 5], np.int32))


def _settings(rule=consensus.ConsensusRule()):
  return engine.RoundSettings(
      get_model("mlp", hidden=(16,)), optax.sgd(0.1, momentum=0.9), optax.sgd(1.0),
      local_steps=3, batch_size=4, clip_norm=0.5, noise_multiplier=0.0, unroll_local_steps=True,
      consensus=rule, validation_size=8, attack=attacks.Attack("sign_flip", 1),
      return_updates=True)


@pytest.fixture(scope="module")
def rounds(hospital_data):
  """One round with hospital 0 flipping its update's sign: compiled on 1 and 8 devices, and
  the sequential loop."""
  settings = _settings()
  params = settings.model.module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))
  state = server.init_state(params, settings.server_optimizer)
  results = {}
  for name, num_devices, axis in (("one_device", 1, "unroll"), ("eight_devices", 8, "vmap")):
    mesh = mesh_lib.hospital_mesh(num_devices)
    results[name] = engine.compiled_round(settings, mesh, axis)(
        state, engine.put_hospital_data(hospital_data, mesh, "compiled"), SAMPLED, ROUND_KEY,
        VERIFIERS)
  results["sequential"] = engine.sequential_round(settings)(
      state, engine.put_hospital_data(hospital_data, None, "sequential"), SAMPLED, ROUND_KEY,
      VERIFIERS)
  return settings, state, results


def _batch(data, hospital):
  key = cross_evaluation.validation_keys(ROUND_KEY, jnp.array([hospital]))[0]
  index = np.asarray(cross_evaluation.validation_indices(key, data.counts[hospital],
                                                         data.images.shape[1], 8))
  assert index.max() < data.counts[hospital]  # a hospital validates on its own slices only
  return data.images[hospital, index], data.labels[hospital, index]


def test_cross_evaluation_matrix_equals_a_plain_loop(hospital_data, rounds):
  settings, state, results = rounds
  _, out = results["one_device"]
  model = settings.model
  for i, h in enumerate(SAMPLED):
    local = jax.tree.map(lambda w, u: w + u[i], state.params, out.updates)
    for j, v in enumerate(list(VERIFIERS) + [h]):
      images, labels = _batch(hospital_data, v)
      prob = np.asarray(model.probabilities(model.module.apply(local, images))[:, 1])
      measured = out.mae[i, j] if j < len(VERIFIERS) else out.self_mae[i]
      np.testing.assert_allclose(measured, np.mean(np.abs(labels - prob)), atol=1e-6)
  np.testing.assert_allclose(out.vote_scores, 0.5 * out.self_mae + out.mae.mean(axis=1),
                             atol=1e-6)


def test_planted_sign_flip_is_rejected_and_left_out_of_the_aggregate(rounds):
  _, state, results = rounds
  new_state, out = results["one_device"]
  np.testing.assert_array_equal(out.malicious, [True, False, False, False])
  np.testing.assert_array_equal(out.accepted, [False, True, True, True])
  np.testing.assert_array_equal(  # the decision the ledger recomputes from the real scores
      consensus.accept_mask(out.vote_scores), out.accepted)
  for new, old, update in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params),
                              jax.tree.leaves(out.updates)):  # FedAvg, no noise: w + mean accepted
    np.testing.assert_allclose(new, old + np.mean(np.asarray(update)[1:], axis=0), atol=1e-6)


@pytest.mark.parametrize("other", ["eight_devices", "sequential"])
def test_engines_and_device_counts_agree_with_consensus(rounds, other):
  _, _, results = rounds
  for a, b in zip(jax.tree.leaves(results["one_device"]), jax.tree.leaves(results[other])):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=1e-5,
                               rtol=1e-5)


def test_update_checks_inside_the_compiled_round(hospital_data):
  """With eq. 15 told to accept everything (huge k), the direction check alone rejects the
  flipped update; the cosines come out of the jit and the ledger's recomputation agrees."""
  rule = consensus.ConsensusRule(k=1e6, direction_k=3.0, max_norm_ratio=3.0)
  settings = _settings(rule)
  params = settings.model.module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))
  state = server.init_state(params, settings.server_optimizer)
  mesh = mesh_lib.hospital_mesh(8)  # 4 sampled on 8 devices: padding rows must be ignored
  _, out = engine.compiled_round(settings, mesh, "vmap")(
      state, engine.put_hospital_data(hospital_data, mesh, "compiled"), SAMPLED, ROUND_KEY,
      VERIFIERS)
  cosines = np.asarray(out.cosines)
  assert cosines.shape == (4,) and cosines[0] < 0 < cosines[1:].min()
  np.testing.assert_array_equal(out.accepted, [False, True, True, True])
  np.testing.assert_allclose(
      cosines, consensus.median_cosines(out.updates, np.ones(4, bool)), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(
      consensus.decide(out.vote_scores, out.update_norm, out.cosines, rule), out.accepted)
