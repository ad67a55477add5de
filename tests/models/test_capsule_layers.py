"""Capsule layers against the paper's eqs. 1-4, Algorithm 1 and Sabour's margin loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccfl_jax.models.layers import capsule


@pytest.mark.parametrize("offset", [1.0, 0.5])
def test_squash_shrinks_length_below_one_and_keeps_direction(offset):
  scales = jnp.array([1e-4, 0.1, 1.0, 10.0, 1e4])[:, None]
  vectors = scales * jax.random.normal(jax.random.key(0), (5, 8))
  squashed = capsule.squash(vectors, offset)
  lengths = jnp.linalg.norm(squashed, axis=-1)
  assert jnp.all(lengths >= 0) and jnp.all(lengths < 1)
  cosine = jnp.sum(squashed * vectors, -1) / (lengths * jnp.linalg.norm(vectors, axis=-1))
  np.testing.assert_allclose(cosine, 1.0, atol=1e-5)
  squared_norm = jnp.sum(jnp.square(vectors), axis=-1)
  # eq. 4's length |s|^2/(offset+|s|^2); the smallest vector is below SQUASH_EPSILON's reach
  np.testing.assert_allclose(lengths[1:], (squared_norm / (offset + squared_norm))[1:], rtol=1e-5)


def test_squash_is_zero_with_finite_gradient_at_zero():
  zero = jnp.zeros((3, 4))
  assert jnp.all(capsule.squash(zero) == 0)
  gradient = jax.grad(lambda s: jnp.sum(capsule.squash(s)))(zero)
  length_gradient = jax.grad(lambda s: jnp.sum(capsule.capsule_lengths(capsule.squash(s))))(zero)
  assert jnp.all(jnp.isfinite(gradient)) and jnp.all(jnp.isfinite(length_gradient))


@pytest.mark.parametrize("variant", ["sabour", "paper"])
def test_coupling_coefficients_sum_to_one_over_output_capsules(variant):
  predictions = jax.random.normal(jax.random.key(1), (2, 6, 3, 4))
  _, coupling = capsule.route(predictions, 3, capsule.routing_rules(variant))
  np.testing.assert_allclose(jnp.sum(coupling, axis=-1), 1.0, rtol=1e-6)
  assert not np.allclose(coupling, 1 / 3)  # three routings moved them off uniform


@pytest.mark.parametrize("variant", ["sabour", "paper"])
def test_one_routing_iteration_is_the_squashed_uniform_average(variant):
  rules = capsule.routing_rules(variant)
  predictions = jax.random.normal(jax.random.key(2), (2, 6, 3, 4))
  outputs, coupling = capsule.route(predictions, 1, rules)
  np.testing.assert_allclose(coupling, 1 / 3)
  expected = capsule.squash(jnp.sum(predictions, axis=1) / 3, rules.squash_offset)
  np.testing.assert_allclose(outputs, expected, rtol=1e-6)


def algorithm_1_in_numpy(inputs, weights, iterations, rules):
  """Eqs. 1-4 and Algorithm 1, loop by loop, in float64."""
  inputs, weights = np.float64(inputs), np.float64(weights)
  batch, num_inputs, _ = inputs.shape
  num_outputs, output_dim = weights.shape[-2:]
  outputs = np.zeros((batch, num_outputs, output_dim))
  for b in range(batch):
    predictions = np.zeros((num_inputs, num_outputs, output_dim))
    for i in range(num_inputs):
      for j in range(num_outputs):
        w_ij = weights[:, j, :] if rules.share_weights else weights[i, :, j, :]
        predictions[i, j] = w_ij.T @ inputs[b, i]                          # eq. 1
    logits = np.zeros((num_inputs, num_outputs))                           # line 1
    for _ in range(iterations):                                            # line 2
      coupling = np.zeros_like(logits)
      for i in range(num_inputs):                                          # line 3, eq. 3
        coupling[i] = np.exp(logits[i]) / np.sum(np.exp(logits[i]))
      for j in range(num_outputs):                                         # line 4, eq. 2
        total = sum(coupling[i, j] * predictions[i, j] for i in range(num_inputs))
        squared_norm = total @ total                                       # eq. 4
        outputs[b, j] = squared_norm / (rules.squash_offset + squared_norm) * total / np.sqrt(
            squared_norm)
      for i in range(num_inputs):                                          # line 5
        for j in range(num_outputs):
          agreement = predictions[i, j] @ outputs[b, j]
          logits[i, j] = logits[i, j] + agreement if rules.accumulate_logits else agreement
  return outputs                                                           # line 6


@pytest.mark.parametrize("variant", ["sabour", "paper"])
@pytest.mark.parametrize("iterations", [1, 3])
def test_routing_capsules_match_algorithm_1_transcribed_in_numpy(variant, iterations):
  layer = capsule.RoutingCapsules(num_capsules=3, capsule_dim=5, routing_iterations=iterations,
                                  variant=variant)
  inputs = capsule.squash(jax.random.normal(jax.random.key(3), (2, 7, 4)))
  params = layer.init(jax.random.key(4), inputs)
  weights = params["params"]["weights"]
  assert weights.shape == ((4, 3, 5) if variant == "paper" else (7, 4, 3, 5))
  expected = algorithm_1_in_numpy(inputs, weights, iterations, capsule.routing_rules(variant))
  np.testing.assert_allclose(layer.apply(params, inputs), expected, rtol=1e-5, atol=1e-5)


def test_margin_loss_matches_hand_computation():
  lengths = jnp.array([[0.95, 0.3], [0.5, 0.05]])
  # example 0, class 0 present: max(0, 0.9 - 0.95)^2 = 0; class 1 absent: 0.5 (0.3 - 0.1)^2
  # example 1, class 1 present: (0.9 - 0.05)^2; class 0 absent: 0.5 (0.5 - 0.1)^2
  expected = [0.5 * 0.2 ** 2, 0.85 ** 2 + 0.5 * 0.4 ** 2]
  np.testing.assert_allclose(capsule.margin_loss(lengths, jnp.array([0, 1])), expected, rtol=1e-6)


def test_length_cross_entropy_and_reconstruction_error_by_hand():
  lengths = jnp.array([[0.6, 0.2], [0.6, 0.2]])
  np.testing.assert_allclose(capsule.length_cross_entropy(lengths, jnp.array([0, 1])),
                             [-np.log(0.75), -np.log(0.25)], rtol=1e-6)
  images = jnp.zeros((1, 2, 2, 1))
  reconstructions = jnp.stack([jnp.full((2, 2, 1), 0.5), jnp.full((2, 2, 1), 0.1)])[None]
  np.testing.assert_allclose(capsule.reconstruction_error(reconstructions, images, jnp.array([1])),
                             [4 * 0.01], rtol=1e-6)


def test_capsule_loss_adds_weighted_reconstruction_and_keeps_objective_under_jit():
  capsules = jnp.array([[[0.95, 0.0], [0.0, 0.3]]])
  images, labels = jnp.ones((1, 2, 2, 1)), jnp.array([0])
  reconstructions = jnp.zeros((1, 2, 2, 2, 1))
  outputs = capsule.CapsuleOutputs(capsules, reconstructions, "margin")
  loss = jax.jit(capsule.capsule_loss)(outputs, images, labels)
  np.testing.assert_allclose(loss, [0.5 * 0.2 ** 2 + 0.0005 * 4], rtol=1e-5)
  probabilities = capsule.capsule_probabilities(outputs)
  np.testing.assert_allclose(probabilities, [[0.95 / 1.25, 0.3 / 1.25]], rtol=1e-5)


def test_decoder_reconstructs_each_class_from_its_own_capsule_only():
  decoder = capsule.CapsuleDecoder(image_shape=(4, 4, 1), widths=(8,))
  capsules = jax.random.normal(jax.random.key(5), (2, 3, 4))
  params = decoder.init(jax.random.key(6), capsules)
  reconstructions = decoder.apply(params, capsules)
  assert reconstructions.shape == (2, 3, 4, 4, 1)
  changed = decoder.apply(params, capsules.at[:, 2].set(0.0))
  np.testing.assert_array_equal(changed[:, :2], reconstructions[:, :2])
  assert not np.allclose(changed[:, 2], reconstructions[:, 2])


def test_fan_in_over_inputs_keeps_class_capsules_out_of_the_squash_plateau():
  # Many long, alike input capsules (as Sabour's primary capsules on IV3 features): the
  # per-capsule Glorot scale saturates |v_j| near 1; fan-in over all inputs does not.
  inputs = capsule.squash(jnp.ones((1, 288, 8)) + 0.1 * jax.random.normal(jax.random.key(0),
                                                                          (1, 288, 8)))
  def lengths(fan_in_over_inputs):
    layer = capsule.RoutingCapsules(2, 16, fan_in_over_inputs=fan_in_over_inputs)
    params = layer.init(jax.random.key(1), inputs)
    return capsule.capsule_lengths(layer.apply(params, inputs))
  assert jnp.all(lengths(False) > 0.95)
  assert jnp.all(lengths(True) < 0.8)
