"""Malicious hospitals: which ones attack, and what each attack submits."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccfl_jax.federated import attacks, client, privacy
from ccfl_jax.models import get_model


def _delta():
  return {"a": jnp.arange(1.0, 7.0).reshape(2, 3), "b": jnp.full((4000,), 0.01)}


def _flat(tree):
  return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def test_first_hospital_ids_are_malicious_only_when_an_attack_is_on():
  ids = jnp.array([0, 3, 1, 5, 2])
  np.testing.assert_array_equal(attacks.malicious_flags(attacks.Attack("sign_flip", 2), ids),
                                [True, False, True, False, False])
  assert not np.any(attacks.malicious_flags(attacks.Attack("none", 2), ids))
  assert not np.any(attacks.malicious_flags(attacks.Attack("scale", 0), ids))


@pytest.mark.parametrize("kind, expected", [
    ("sign_flip", lambda d: -d), ("scale", lambda d: 10.0 * d), ("none", lambda d: d)])
def test_update_attacks_change_only_malicious_updates(kind, expected):
  attack = attacks.Attack(kind, 1, scale=10.0)
  delta = _delta()
  for malicious in (True, False):
    submitted = jax.jit(attacks.submitted_update, static_argnums=0)(
        attack, delta, jnp.bool_(malicious), jax.random.key(0))
    want = expected(_flat(delta)) if malicious else _flat(delta)
    np.testing.assert_allclose(_flat(submitted), want, rtol=1e-6)


def test_gaussian_noise_attack_keeps_the_honest_norm_and_drops_the_direction():
  delta = _delta()
  noise = attacks.submitted_update(attacks.Attack("gaussian_noise", 1), delta, jnp.bool_(True),
                                   jax.random.key(1))
  norm = float(privacy.global_norm(delta))
  assert abs(float(privacy.global_norm(noise)) - norm) < 0.05 * norm  # d = 4006: sqrt(d) concentration
  cosine = np.dot(_flat(noise), _flat(delta)) / (norm * np.linalg.norm(_flat(noise)))
  assert abs(cosine) < 0.1


def test_label_flip_trains_on_flipped_labels_and_scale_is_clipped():
  model = get_model("mlp", hidden=(8,))
  images = jax.random.uniform(jax.random.key(0), (12, 8, 8, 1))
  labels = jnp.array([0, 1] * 6, jnp.int32)
  params = model.module.init(jax.random.key(1), images[:1])
  def update(attack=attacks.Attack()):
    return jax.jit(client.make_hospital_update(model, optax.sgd(0.5), 2, 4, True, 0.05, attack))

  key, count, malicious = jax.random.key(2), jnp.int32(12), jnp.bool_(True)
  flipped = update(attacks.Attack("label_flip", 1))(params, images, labels, count, key, malicious)
  honest = update()
  honest_on_flipped = honest(params, images, 1 - labels, count, key, malicious)  # no attack: flag ignored
  np.testing.assert_allclose(_flat(flipped[0]), _flat(honest_on_flipped[0]), atol=1e-6)
  scaled, norm, _ = update(attacks.Attack("scale", 1, 10.0))(params, images, labels, count, key,
                                                               malicious)
  _, honest_norm, _ = honest(params, images, labels, count, key, malicious)
  np.testing.assert_allclose(float(norm), 10 * float(honest_norm), rtol=1e-4)  # submitted norm
  assert float(privacy.global_norm(scaled)) <= 0.05 * (1 + 1e-5)  # the server clipped it
