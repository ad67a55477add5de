"""The MAE vote inside the round (eqs. 14-15): cross-evaluation, rejection, aggregation, engines."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccfl_jax import recorder
from ccfl_jax.data import hospitals
from ccfl_jax.federated import attacks, cross_evaluation, engine, mesh as mesh_lib, server
from ccfl_jax.ledger import audit, consensus, run_ledger
from ccfl_jax.ledger.digests import update_digest
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


def _settings(rule=consensus.ConsensusRule(), attack=attacks.Attack("sign_flip", 1)):
  return engine.RoundSettings(
      get_model("mlp", hidden=(16,)), optax.sgd(0.1, momentum=0.9), optax.sgd(1.0),
      local_steps=3, batch_size=4, clip_norm=0.5, noise_multiplier=0.0, unroll_local_steps=True,
      consensus=rule, validation_size=8, attack=attack, return_updates=True)


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
        state, hospital_data, SAMPLED, ROUND_KEY,
        VERIFIERS)
  results["sequential"] = engine.sequential_round(settings)(
      state, hospital_data, SAMPLED, ROUND_KEY,
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
      state, hospital_data, SAMPLED, ROUND_KEY,
      VERIFIERS)
  cosines = np.asarray(out.cosines)
  assert cosines.shape == (4,) and cosines[0] < 0 < cosines[1:].min()
  np.testing.assert_array_equal(out.accepted, [False, True, True, True])
  np.testing.assert_allclose(
      cosines, consensus.median_cosines(out.updates, np.ones(4, bool)), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(
      consensus.decide(out.vote_scores, out.update_norm, out.cosines, rule), out.accepted)


def _finite(params) -> bool:
  return all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(params))


def test_a_nan_update_is_rejected_on_the_ledger_and_the_rounds_go_on(hospital_data, tmp_path):
  """A hospital whose slices hold NaN pixels submits a NaN update: the compiled round rejects
  it with reason non_finite_update (ledger block and metrics line alike), the new global
  params are those of the round without it, and the next round goes on; the ledger verifies."""
  rule = consensus.ConsensusRule()
  settings = _settings(rule, attacks.Attack())
  run = run_ledger.open_run_ledger(tmp_path, seed=0, num_hospitals=6, num_verifiers=2,
                                   consensus=rule, keys="derived")
  roles = [run_ledger.round_roles(run, r) for r in range(2)]
  sampled = np.arange(6)
  # Not on either round's panel: a verifier's NaN batch would leave every model unscored.
  broken = next(h for h in sampled if all(h not in r.verifiers for r in roles))
  images = hospital_data.images.copy()
  images[broken, :2] = np.nan
  mesh = mesh_lib.hospital_mesh(2)
  data = hospital_data._replace(images=images)
  run_round = engine.compiled_round(settings, mesh, "vmap")
  params = settings.model.module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))
  state = server.init_state(params, settings.server_optimizer)
  others = sampled[sampled != broken]
  expected = [["accepted"] * 6 for _ in roles]
  for r, round_roles in enumerate(roles):
    key, verifiers = jax.random.key(10 + r), np.asarray(round_roles.verifiers)
    new_state, out = jax.device_get(run_round(state, data, sampled, key, verifiers))
    without, out_without = run_round(state, data, others, key, verifiers)
    assert np.isnan(out.update_norm[broken])
    assert np.isfinite(np.delete(out.update_norm, broken)).all()
    assert not out.accepted[broken]
    np.testing.assert_array_equal(np.delete(out.accepted, broken), out_without.accepted)
    assert _finite(new_state) and not np.allclose(jax.tree.leaves(new_state.params)[0],
                                                  jax.tree.leaves(state.params)[0])
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(without)):
      np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)
    expected[r] = ["non_finite_update" if h == broken else "accepted" if keep else "vote_score"
                   for h, keep in zip(sampled, out.accepted)]  # eq. 15 alone: no update checks
    assert recorder.verdict_reasons(out, rule) == expected[r]
    assert recorder.vote_record(sampled, out, rule)["reasons"] == expected[r]
    epsilon = audit.accountant_epsilon(6, [(6, 1.0)] * (r + 1), 1e-5)
    run = run_ledger.record_round(
        run, r, round_roles, recorder.round_evidence(sampled, out, publish_norms=False),
        run_ledger.GlobalModelRecord(epsilon, 1e-5, 1.0, settings.clip_norm,
                                     params_digest=update_digest(new_state.params)))
    state = new_state
  for r, block in enumerate(run.ledger.blocks[-2:]):
    for vote in (t for t in block.transactions if t.kind == "vote"):
      assert [v["reason"] for v in vote.body["votes"]] == expected[r]
      assert [v["finite"] for v in vote.body["votes"]] == (sampled != broken).tolist()
  report = audit.verify_run(tmp_path)
  assert report.ok and report.rounds == 2, report.summary()
