"""Malicious hospitals: which ones attack, and what each attack submits."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

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
    return jax.jit(client.make_hospital_update(
        client.LocalSettings(model, optax.sgd(0.5), 2, 4, True, 0.05, attack)))

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


# --- validation -------------------------------------------------------------------------------


def test_attack_rejects_an_unknown_kind_naming_the_valid_ones():
  with pytest.raises(ValueError, match="'signflip'") as error:
    attacks.Attack("signflip", 2)
  for kind in attacks.KINDS:
    assert kind in str(error.value)
  with pytest.raises(ValueError, match="num_malicious"):
    attacks.Attack("sign_flip", -1)
  for bad in (dict(perturbation="gauss"), dict(target_label=2), dict(poison_fraction=0.0),
              dict(epsilon=0.0), dict(alie_z=-1.0), dict(trigger_size=0)):
    with pytest.raises(ValueError):
      attacks.Attack("min_max", 1, **bad)


def test_every_kind_constructs_and_colluding_kinds_leave_the_per_hospital_update_alone():
  delta = _delta()
  for kind in attacks.KINDS:
    attack = attacks.Attack(kind, 1)
    if kind in attacks.COLLUDING + ("backdoor",):
      submitted = attacks.submitted_update(attack, delta, jnp.bool_(True), jax.random.key(0))
      np.testing.assert_array_equal(_flat(submitted), _flat(delta))
      assert attacks.training_labels(attack, jnp.array([0, 1]), jnp.bool_(True)).tolist() == [0, 1]


# --- colluding attacks on stacked updates -----------------------------------------------------

# Rows: 0, 1 malicious; 2, 3, 4 honest; 5 padding (weight 0) with values that would dominate
# any statistic it entered.
MALICIOUS = np.array([True, True, False, False, False, True])
WEIGHTS = np.array([1, 1, 1, 1, 1, 0], np.float32)


def _stacked(seed=0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(6, 2, 3)).astype(np.float32)
  b = rng.normal(size=(6, 4)).astype(np.float32)
  a[5], b[5] = 1e4, -1e4
  return {"a": jnp.asarray(a), "b": jnp.asarray(b)}


def _rows_flat(tree):
  return np.concatenate([np.asarray(leaf).reshape(leaf.shape[0], -1)
                         for leaf in jax.tree.leaves(tree)], axis=1).astype(np.float64)


def _collude(attack, deltas, malicious=MALICIOUS, weights=WEIGHTS):
  out = jax.jit(attacks.collude, static_argnums=0)(attack, deltas, jnp.asarray(malicious),
                                                   jnp.asarray(weights))
  return _rows_flat(out)


def _known(omniscient, malicious=MALICIOUS, weights=WEIGHTS):
  real = weights > 0
  return real & (~malicious if omniscient else malicious)


@pytest.mark.parametrize("n, f", [(50, 24), (50, 10), (9, 2), (9, 3), (4, 1), (7, 3), (3, 1)])
def test_alie_z_is_the_published_formula(n, f):
  from scipy.stats import norm
  s = np.floor(n / 2 + 1) - f
  np.testing.assert_allclose(float(attacks.alie_z(n, f)), norm.ppf((n - s) / n), rtol=1e-5)


def test_alie_z_worked_examples():
  # n = 50, f = 24: s = 26 - 24 = 2 workers to win over, z = Phi^-1(48/50) = 1.7507.
  np.testing.assert_allclose(float(attacks.alie_z(50, 24)), 1.75069, atol=1e-4)
  # 2 of 9 hospitals: s = 5 - 2 = 3, z = Phi^-1(6/9) = 0.4307.
  np.testing.assert_allclose(float(attacks.alie_z(9, 2)), 0.430727, atol=1e-5)
  assert np.isfinite(float(attacks.alie_z(9, 6)))  # a malicious majority: s clamped to 1


@pytest.mark.parametrize("omniscient", [False, True])
def test_alie_is_mean_minus_z_std_of_what_the_colluders_know(omniscient):
  deltas = _stacked()
  out = _collude(attacks.Attack("alie", 2, omniscient=omniscient), deltas)
  flat = _rows_flat(deltas)
  known = flat[_known(omniscient)]
  z = float(attacks.alie_z(5, 2))  # 5 real sampled, 2 malicious: s = 1, z = Phi^-1(0.8)
  np.testing.assert_allclose(z, 0.841621, atol=1e-5)
  want = known.mean(0) - z * known.std(0, ddof=1)
  np.testing.assert_allclose(out[0], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out[1], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out[2:], flat[2:])  # honest and padding rows untouched
  fixed = _collude(attacks.Attack("alie", 2, alie_z=1.5), deltas)
  colluders = flat[:2]
  np.testing.assert_allclose(fixed[0], colluders.mean(0) - 1.5 * colluders.std(0, ddof=1),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("epsilon", [0.1, 10.0])
@pytest.mark.parametrize("omniscient", [False, True])
def test_ipm_is_minus_epsilon_times_the_known_mean(epsilon, omniscient):
  deltas = _stacked(1)
  out = _collude(attacks.Attack("ipm", 2, epsilon=epsilon, omniscient=omniscient), deltas)
  flat = _rows_flat(deltas)
  want = -epsilon * flat[_known(omniscient)].mean(0)
  np.testing.assert_allclose(out[:2], np.stack([want, want]), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out[2:], flat[2:])


def _perturbation(kind, known):
  mean = known.mean(0)
  return {"std": -known.std(0, ddof=1), "unit_vec": -mean / np.linalg.norm(mean),
          "sign": -np.sign(mean)}[kind]


def _max_distance(point, known):
  return np.max(np.linalg.norm(known - point, axis=1))


def _sum_sq_distance(point, known):
  return np.sum(np.square(known - point))


def _pairwise_sq(known):
  return np.square(known[:, None] - known[None]).sum(-1)


def _gamma(out_row, mean, p):
  return float(np.dot(out_row - mean, p) / np.dot(p, p))


@pytest.mark.parametrize("perturbation", attacks.PERTURBATIONS)
@pytest.mark.parametrize("omniscient", [False, True])
def test_min_max_stays_within_the_benign_spread_and_its_gamma_is_maximal(perturbation,
                                                                         omniscient):
  deltas = _stacked(2)
  out = _collude(attacks.Attack("min_max", 2, perturbation=perturbation, omniscient=omniscient),
                 deltas)
  flat = _rows_flat(deltas)
  known = flat[_known(omniscient)]
  mean, p = known.mean(0), _perturbation(perturbation, known)
  gamma = _gamma(out[0], mean, p)
  np.testing.assert_allclose(out[0], mean + gamma * p, rtol=1e-5, atol=1e-5)  # on the ray
  bound = np.sqrt(_pairwise_sq(known).max())  # max benign pairwise distance
  assert gamma > 0
  assert _max_distance(out[0], known) <= bound * (1 + 1e-5)
  assert _max_distance(mean + 2 * gamma * p, known) > bound  # doubling gamma violates
  assert _max_distance(mean + 1.001 * gamma * p, known) > bound * (1 - 1e-5)  # near-maximal
  np.testing.assert_array_equal(out[1], out[0])
  np.testing.assert_array_equal(out[2:], flat[2:])


@pytest.mark.parametrize("perturbation", attacks.PERTURBATIONS)
def test_min_sum_meets_its_bound_with_the_closed_form_gamma(perturbation):
  deltas = _stacked(3)
  out = _collude(attacks.Attack("min_sum", 2, perturbation=perturbation, omniscient=True), deltas)
  known = _rows_flat(deltas)[_known(True)]
  mean, p = known.mean(0), _perturbation(perturbation, known)
  bound = _pairwise_sq(known).sum(1).max()  # max over benign i of sum_j ||g_i - g_j||²
  # sum_i ||mean + gamma p - g_i||² = sum_i ||mean - g_i||² + n gamma² ||p||² (cross term 0).
  closed = np.sqrt((bound - _sum_sq_distance(mean, known)) / (len(known) * np.dot(p, p)))
  gamma = _gamma(out[0], mean, p)
  np.testing.assert_allclose(gamma, closed, rtol=1e-4)
  assert _sum_sq_distance(out[0], known) <= bound * (1 + 1e-5)
  assert _sum_sq_distance(mean + 2 * gamma * p, known) > bound


def test_a_lone_colluder_without_omniscience_submits_its_honest_update_except_under_ipm():
  deltas = _stacked(4)
  malicious = np.array([True, False, False, False, False, False])
  flat = _rows_flat(deltas)
  for kind in ("alie", "min_max", "min_sum"):
    out = _collude(attacks.Attack(kind, 1), deltas, malicious)
    np.testing.assert_allclose(out, flat, rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(out))
  out = _collude(attacks.Attack("ipm", 1, epsilon=10.0), deltas, malicious)
  np.testing.assert_allclose(out[0], -10.0 * flat[0], rtol=1e-6)


def test_colluding_attacks_ignore_padding_and_leave_deltas_alone_without_colluders():
  deltas = _stacked(5)
  moved = jax.tree.map(lambda d: d.at[5].set(-d[5] * 3.0), deltas)
  for kind in attacks.COLLUDING:
    for omniscient in (False, True):
      attack = attacks.Attack(kind, 2, omniscient=omniscient)
      np.testing.assert_allclose(_collude(attack, deltas)[:5], _collude(attack, moved)[:5],
                                 rtol=1e-6)
      none = _collude(attack, deltas, np.zeros(6, bool))
      np.testing.assert_array_equal(none, _rows_flat(deltas))
  same = attacks.collude(attacks.Attack("sign_flip", 2), deltas, jnp.asarray(MALICIOUS),
                         jnp.asarray(WEIGHTS))
  assert same is deltas


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float32, (6, 5), elements=st.floats(-1, 1, width=32)),
       st.sampled_from(["min_max", "min_sum"]), st.sampled_from(attacks.PERTURBATIONS))
def test_agr_agnostic_attacks_satisfy_their_constraint(values, kind, perturbation):
  deltas = {"w": jnp.asarray(values)}
  malicious = np.array([True, True, False, False, False, False])
  weights = np.ones(6, np.float32)
  out = _collude(attacks.Attack(kind, 2, perturbation=perturbation, omniscient=True),
                 deltas, malicious, weights)
  known = values[2:].astype(np.float64)
  pairwise = _pairwise_sq(known)
  tolerance = 1e-4 * (1 + pairwise.max())
  assert np.all(np.isfinite(out))
  if kind == "min_max":
    assert _max_distance(out[0], known) ** 2 <= pairwise.max() + tolerance
  else:
    assert _sum_sq_distance(out[0], known) <= pairwise.sum(1).max() + 4 * tolerance


# --- backdoor -----------------------------------------------------------------------------------


def test_stamp_trigger_sets_only_the_bottom_right_square():
  images = jnp.zeros((2, 8, 8, 1))
  stamped = np.asarray(attacks.stamp_trigger(images, 3))
  assert np.all(stamped[:, 5:, 5:] == attacks.TRIGGER_VALUE)
  assert stamped.sum() == 2 * 9 * attacks.TRIGGER_VALUE
  assert np.asarray(attacks.stamp_trigger(images)).sum() == 2 * 16  # default 4 x 4


@pytest.mark.parametrize("target", [0, 1])
def test_poison_batch_stamps_and_relabels_a_fraction_of_malicious_slices(target):
  images = jax.random.uniform(jax.random.key(0), (400, 8, 8, 1), maxval=0.5)
  labels = jnp.asarray(np.arange(400) % 2, jnp.int32)
  attack = attacks.Attack("backdoor", 1, target_label=target, poison_fraction=0.3,
                          trigger_size=2)
  poison = jax.jit(attacks.poison_batch, static_argnums=0)
  honest_images, honest_labels = poison(attack, images, labels, jnp.bool_(False),
                                        jax.random.key(1))
  np.testing.assert_array_equal(honest_images, images)
  np.testing.assert_array_equal(honest_labels, labels)
  new_images, new_labels = poison(attack, images, labels, jnp.bool_(True), jax.random.key(1))
  stamped = np.all(np.asarray(new_images)[:, 6:, 6:] == 1.0, axis=(1, 2, 3))
  assert 0.2 < stamped.mean() < 0.4
  assert np.all(np.asarray(new_labels)[stamped] == target)
  np.testing.assert_array_equal(np.asarray(new_labels)[~stamped], np.asarray(labels)[~stamped])
  np.testing.assert_array_equal(np.asarray(new_images)[~stamped], np.asarray(images)[~stamped])
  np.testing.assert_array_equal(np.asarray(new_images)[stamped][:, :6],
                                np.asarray(images)[stamped][:, :6])
  other = attacks.poison_batch(attacks.Attack("sign_flip", 1), images, labels, jnp.bool_(True),
                               jax.random.key(1))
  assert other[0] is images and other[1] is labels


def test_backdoor_success_rate_counts_non_target_slices_predicted_as_target():
  probability = jnp.array([0.9, 0.2, 0.7, 0.6, 0.1])
  labels = jnp.array([0, 0, 0, 1, 1])
  assert float(attacks.backdoor_success_rate(probability, labels, 1)) == pytest.approx(2 / 3)
  assert float(attacks.backdoor_success_rate(probability, labels, 0)) == pytest.approx(1 / 2)
