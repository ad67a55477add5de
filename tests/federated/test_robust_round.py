"""Colluding attacks, the backdoor and the robust aggregation rules inside the round (issue 14):
exact small cases of the wiring, compiled == sequential, 8 devices == 1, and a ledger run."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccfl_jax import builders, configuration, training
from ccfl_jax.data import hospitals
from ccfl_jax.federated import (aggregation, attacks, client, cross_evaluation, engine,
                                mesh as mesh_lib, privacy, server)
from ccfl_jax.ledger import audit, consensus
from ccfl_jax.models import get_model
from tests.test_training import tiny_config

SIZE = 16
SAMPLED = np.array([0, 2, 3, 5])
VERIFIERS = np.array([1, 2, 4])
ROUND_KEY = jax.random.key(3)
CLIP = 0.5


@pytest.fixture(scope="module")
def hospital_data():
  """Six hospitals of an easy task (bright slices are COVID); unequal counts: padding."""
  rng = np.random.default_rng(0)
  labels = np.tile(np.array([0, 1] * 4, np.int32), (6, 1))
  images = labels[..., None, None, None] * 0.5 + rng.uniform(0, 0.5, (6, 8, SIZE, SIZE, 1))
  return hospitals.HospitalData(images.astype(np.float32), labels,
                                np.array([8, 8, 6, 7, 8, 5], np.int32))


def _settings(attack=attacks.Attack(), rule=aggregation.AggregationRule(), vote=None,
              noise_multiplier=0.0):
  return engine.RoundSettings(
      get_model("mlp", hidden=(16,)), optax.sgd(0.1, momentum=0.9), optax.sgd(1.0),
      local_steps=3, batch_size=4, clip_norm=CLIP, noise_multiplier=noise_multiplier,
      unroll_local_steps=True, consensus=vote, validation_size=8, attack=attack,
      return_updates=True, aggregation=rule)


def _state(settings):
  params = settings.model.module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))
  return server.init_state(params, settings.server_optimizer)


def _round(settings, data, kind="compiled", num_devices=1, state=None):
  state = _state(settings) if state is None else state
  mesh = mesh_lib.hospital_mesh(num_devices)
  run_round = (engine.compiled_round(settings, mesh, "vmap") if kind == "compiled"
               else engine.sequential_round(settings))
  verifiers = None if settings.consensus is None else VERIFIERS
  return jax.device_get(run_round(state, data, SAMPLED,
                                  ROUND_KEY, verifiers))


def _rows(tree, index):
  return jax.tree.map(lambda leaf: np.asarray(leaf)[index], tree)


def _assert_tree_close(a, b, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), atol=atol,
                               rtol=1e-5)


def test_colluders_submit_the_crafted_update_clipped_and_the_server_averages_it(hospital_data):
  # Hospitals 0 and 2 (of those sampled) collude; ipm x10 reverses their own mean update.
  attack = attacks.Attack("ipm", num_malicious=3, epsilon=10.0)
  state = _state(_settings())
  new_state, out = _round(_settings(attack), hospital_data, state=state)
  _, honest = _round(_settings(), hospital_data, state=state)  # colluders train honestly
  np.testing.assert_array_equal(out.malicious, [True, True, False, False])
  crafted = jax.tree.map(lambda u: -10.0 * np.mean(u[:2], axis=0), honest.updates)
  norm = float(privacy.global_norm(crafted))
  assert norm > CLIP  # the server clips it to S
  for i in (0, 1):
    _assert_tree_close(_rows(out.updates, i), jax.tree.map(lambda c: c * CLIP / norm, crafted))
  _assert_tree_close(_rows(out.updates, slice(2, 4)), _rows(honest.updates, slice(2, 4)), atol=0)
  np.testing.assert_allclose(out.update_norm, [norm, norm, *honest.update_norm[2:]], rtol=1e-5)
  assert out.aggregated is None  # the mean: every accepted update
  _assert_tree_close(new_state.params, jax.tree.map(lambda w, u: w + np.mean(u, axis=0),
                                                    state.params, out.updates))


def test_the_vote_judges_the_update_the_colluders_submit(hospital_data):
  attack = attacks.Attack("min_max", num_malicious=3, omniscient=True)
  settings = _settings(attack, vote=consensus.ConsensusRule())
  state = _state(settings)
  _, out = _round(settings, hospital_data, state=state)
  _, honest = _round(_settings(vote=consensus.ConsensusRule()), hospital_data, state=state)
  assert not np.allclose(jax.tree.leaves(out.updates)[0][0], jax.tree.leaves(honest.updates)[0][0])
  model = settings.model
  verifier_images, verifier_labels = jax.device_get(cross_evaluation.validation_batches(
      jax.tree.map(jnp.asarray, hospital_data), jnp.asarray(VERIFIERS), ROUND_KEY, 8))
  for i in range(len(SAMPLED)):
    local = jax.tree.map(lambda w, u: w + u[i], state.params, out.updates)
    for j in range(len(VERIFIERS)):
      prob = np.asarray(model.probabilities(model.module.apply(local, verifier_images[j]))[:, 1])
      np.testing.assert_allclose(out.mae[i, j], np.mean(np.abs(verifier_labels[j] - prob)),
                                 atol=1e-6)
  np.testing.assert_array_equal(consensus.accept_mask(out.vote_scores), out.accepted)


CASES = [  # every new attack and every robust rule, each at least once, some under the vote
    ("alie", "median", False), ("ipm", "trimmed_mean", True), ("min_max", "krum", True),
    ("min_sum", "multi_krum", False), ("backdoor", "norm_bound", True)]


def _rule(name):
  return aggregation.AggregationRule(name, beta=0.25, f=1, norm_bound=0.2)


@pytest.mark.parametrize("kind, rule, vote", CASES)
def test_compiled_round_equals_sequential_loop(hospital_data, kind, rule, vote):
  settings = _settings(attacks.Attack(kind, num_malicious=3, poison_fraction=1.0), _rule(rule),
                       consensus.ConsensusRule() if vote else None, noise_multiplier=0.3)
  compiled = _round(settings, hospital_data, "compiled", num_devices=2)
  sequential = _round(settings, hospital_data, "sequential")
  _assert_tree_close(compiled, sequential, atol=1e-5)
  out = compiled[1]
  if rule in ("krum", "multi_krum"):
    used = np.asarray(out.aggregated)
    assert used.sum() == (1 if rule == "krum" else out.accepted.sum() - 1)
    assert not np.any(used & ~np.asarray(out.accepted))  # the rule sees accepted rows only
  else:
    np.testing.assert_array_equal(out.aggregated, out.accepted)


def test_eight_devices_match_one_device_under_a_colluding_attack(hospital_data):
  assert len(jax.devices()) == 8, "tests run with 8 simulated devices (tests/conftest.py)"
  settings = _settings(attacks.Attack("min_max", num_malicious=3),
                       vote=consensus.ConsensusRule(direction_k=2.0), noise_multiplier=0.3)
  one, eight = (_round(settings, hospital_data, num_devices=n) for n in (1, 8))
  _assert_tree_close(one, eight, atol=1e-5)


@pytest.mark.parametrize("rule", ["median", "krum"])
def test_a_robust_rule_never_reads_a_non_finite_update(hospital_data, rule):
  images = hospital_data.images.copy()
  images[2] = np.nan  # hospital 2 (second sampled) submits NaN: weight 0, like padding
  settings = _settings(rule=aggregation.AggregationRule(rule, f=1))
  state = _state(settings)
  new_state, out = _round(settings, hospital_data._replace(images=images), state=state)
  np.testing.assert_array_equal(out.accepted, [True, False, True, True])
  finite = jax.tree.map(lambda u: np.asarray(u)[[0, 2, 3]], out.updates)
  if rule == "median":  # three finite updates: the middle value of each coordinate
    expected = jax.tree.map(lambda u: np.median(u, axis=0), finite)
    np.testing.assert_array_equal(out.aggregated, out.accepted)
  else:
    used = np.asarray(out.aggregated)
    assert used.sum() == 1 and not used[1]
    expected = _rows(out.updates, int(np.argmax(used)))
  _assert_tree_close(new_state.params, jax.tree.map(np.add, state.params, expected))


def test_a_backdoor_hospital_trains_on_its_slices_stamped_and_relabelled(hospital_data):
  model = get_model("mlp", hidden=(16,))
  local = client.LocalSettings(model, optax.sgd(0.1), 3, 4, True, CLIP)
  attack = attacks.Attack("backdoor", num_malicious=1, target_label=0, poison_fraction=0.5,
                          trigger_size=3)
  backdoored = client.make_hospital_update(client.LocalSettings(**{**local.__dict__,
                                                                   "attack": attack}))
  plain = client.make_hospital_update(local)
  params = model.module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))
  images, labels, count = hospital_data.images[0], hospital_data.labels[0], 8
  key = jax.random.key(7)
  chosen = np.asarray(jax.random.uniform(jax.random.fold_in(key, client.BACKDOOR_KEY), (8,))) < 0.5
  assert 0 < chosen.sum() < 8
  poisoned_images, poisoned_labels = images.copy(), labels.copy()
  poisoned_images[chosen, -3:, -3:, :] = 1.0
  poisoned_labels[chosen] = 0
  images, labels, poisoned_images, poisoned_labels = map(
      jnp.asarray, (images, labels, poisoned_images, poisoned_labels))
  expected = plain(params, poisoned_images, poisoned_labels, count, key)
  _assert_tree_close(backdoored(params, images, labels, count, key, True), expected, atol=0)
  _assert_tree_close(backdoored(params, images, labels, count, key, False),
                     plain(params, images, labels, count, key), atol=0)


def test_backdoor_success_is_measured_on_triggered_non_target_test_slices():
  config = tiny_config()
  config.attack.kind, config.attack.num_malicious, config.attack.target_label = "backdoor", 1, 1
  data = training.prepare_data(config)
  model = get_model("mlp", hidden=(8,))
  params = model.module.init(jax.random.key(1), jnp.zeros((1, SIZE, SIZE, 1)))
  images = np.array(data.test.images)
  images[:, -4:, -4:, :] = 1.0
  prob = np.asarray(model.probabilities(model.module.apply(params, images))[:, 1])
  eligible = np.asarray(data.test.labels) != 1
  assert eligible.any()
  expected = np.mean(prob[eligible] >= 0.5)
  measured = training.backdoor_evaluator(config, model, data.test)(params)
  assert measured == pytest.approx(expected, abs=1e-6)
  config.attack.kind = "sign_flip"
  assert training.backdoor_evaluator(config, model, data.test) is None


def test_the_attack_and_aggregation_blocks_default_to_the_dataclass_defaults():
  config = configuration.default_config()
  assert builders.attack(config) == attacks.Attack()
  assert builders.aggregation_rule(config) == aggregation.AggregationRule()
  assert set(config.attack.keys()) == set(attacks.Attack.__dataclass_fields__)
  docs = configuration.field_docs()
  assert all(docs[f"attack.{k}"] for k in config.attack)
  assert all(docs[f"aggregation.{k}"] for k in config.aggregation)


@pytest.mark.parametrize("change, message", [
    (lambda c: setattr(c.aggregation, "rule", "bulyan"), "aggregation.rule.*median, trimmed_mean"),
    (lambda c: setattr(c.aggregation, "beta", 0.5), r"aggregation.beta 0.5: expected 0 <= beta"),
    (lambda c: setattr(c.aggregation, "rule", "norm_bound"), "aggregation.norm_bound.*> 0"),
    (lambda c: setattr(c.attack, "perturbation", "noise"), "attack.perturbation.*std, unit_vec"),
    (lambda c: setattr(c.attack, "epsilon", 0.0), r"attack.epsilon 0.0: expected > 0"),
    (lambda c: setattr(c.attack, "poison_fraction", 1.5), r"attack.poison_fraction.*\(0, 1\]"),
    (lambda c: setattr(c.attack, "trigger_size", 17), "attack.trigger_size.*image_size"),
])
def test_validate_names_the_attack_and_aggregation_fields(change, message):
  config = tiny_config()
  change(config)
  with pytest.raises(configuration.ConfigError, match=message):
    configuration.validate(config)


def test_a_rule_without_a_sensitivity_bound_is_refused_with_noise_only(monkeypatch):
  monkeypatch.delitem(aggregation.SENSITIVITY, "krum")
  config = tiny_config()
  config.aggregation.rule, config.privacy.noise_multiplier = "krum", 0.1
  with pytest.raises(configuration.ConfigError,
                     match=r"^config.aggregation.rule 'krum' has no sensitivity bound[^\n]*$"):
    configuration.validate(config)
  config.privacy.noise_multiplier = 0.0
  configuration.validate(config)


@pytest.mark.parametrize("attack, rule", [("min_max", "krum"), ("backdoor", "median")])
def test_an_attacked_robust_run_records_what_it_aggregated_and_verifies(tmp_path, attack, rule):
  config = tiny_config(num_rounds=2, num_hospitals=3, hospitals_per_round=3)
  config.attack.kind, config.attack.num_malicious, config.attack.omniscient = attack, 1, True
  config.aggregation.rule, config.aggregation.f = rule, 1
  summary = training.train_and_evaluate(config, tmp_path)
  report = audit.verify_run(tmp_path)
  assert report.ok and report.closed and report.rounds == 2, report.summary()
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  for r in records:
    assert set(r["aggregated"]) <= set(r["accepted"])
    assert len(r["aggregated"]) == (1 if rule == "krum" else len(r["accepted"]))
    assert r["malicious_aggregated"] + r["honest_aggregated"] == len(r["aggregated"])
    assert ("backdoor_success" in r) == (attack == "backdoor")
  s = summary["aggregation"]
  assert s["rule"] == rule and s["aggregated"] == sum(len(r["aggregated"]) for r in records)
  assert s["privacy"] == aggregation.SENSITIVITY[rule]
  if attack == "backdoor":
    assert 0 <= records[-1]["backdoor_success"] <= 1
    assert summary["backdoor_success"]["final"] == records[-1]["backdoor_success"]
    assert summary["backdoor_success"]["last_rounds_mean"] == pytest.approx(
        np.mean([r["backdoor_success"] for r in records]))
  assert json.loads((tmp_path / "summary.json").read_text())["aggregation"]["rule"] == rule
  markdown = (tmp_path / "summary.md").read_text()
  assert f"Aggregation rule `{rule}` (config.aggregation)" in markdown
  assert ("Backdoor success (triggered held-out slices" in markdown) == (attack == "backdoor")
