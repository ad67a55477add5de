"""The capsule models and the Inception-V3 extractor: sizes pinned, training vmapped."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ccfl_jax.federated import client
from ccfl_jax.models import get_model, model_names, tiny_kwargs
from ccfl_jax.models.layers.inception import InceptionV3Features

CAPSULE_AND_INCEPTION_MODELS = ("capsnet", "iv3_capsule", "iv3_mlp")
KERAS_INCEPTION_V3_CONV_WEIGHTS = 21_751_136  # include_top=False, 3-channel input


def count_parameters(module, image_size):
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, image_size, image_size, 1)))
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def test_models_are_registered():
  assert set(CAPSULE_AND_INCEPTION_MODELS) <= set(model_names())


def test_capsnet_at_sabours_size_has_sabours_parameter_count():
  # 28x28 MNIST, 10 classes, decoder 512-1024-784: 8,215,568 (Sabour et al.; CapsNet-Keras).
  assert count_parameters(get_model("capsnet", num_classes=10).module, 28) == 8_215_568


def test_inception_v3_extractor_has_keras_convolutions_plus_groupnorm():
  shapes = jax.eval_shape(InceptionV3Features().init, jax.random.key(0), jnp.zeros((1, 75, 75, 1)))
  paths_and_leaves = jax.tree_util.tree_leaves_with_path(shapes)
  conv = sum(leaf.size for path, leaf in paths_and_leaves if path[-1].key == "kernel")
  groupnorm = sum(leaf.size for path, leaf in paths_and_leaves if path[-1].key != "kernel")
  assert conv == KERAS_INCEPTION_V3_CONV_WEIGHTS - 3 * 3 * 2 * 32  # 1 input channel, not 3
  assert groupnorm == 2 * 17_216  # scale and bias for each of Keras' 17,216 BatchNorm channels


@pytest.mark.parametrize("name, kwargs, image_size, expected", [
    ("iv3_capsule", {}, 75, 21_784_992 + 2048 * 32 * 32 + 32 * 2 * 16),
    ("iv3_mlp", {}, 75, 21_784_992 + 2048 * 1024 + 1024 + 1024 * 2 + 2),
    ("iv3_capsule", dict(variant="sabour"), 75, 21_784_992 + 3 * 3 * 2048 * 256 + 256
     + 3 * 3 * 32 * 8 * 2 * 16),
    ("capsnet", None, 32, 56_336),
    ("iv3_capsule", None, 32, 106_448),
    ("iv3_mlp", None, 32, 105_162),
])
def test_parameter_counts_are_pinned(name, kwargs, image_size, expected):
  kwargs = tiny_kwargs(name) if kwargs is None else kwargs
  assert count_parameters(get_model(name, **kwargs).module, image_size) == expected


def init_and_step_hospitals(spec, num_hospitals):
  """Per-hospital parameters, one local SGD step of the federated client
  (client.local_training) vmapped over hospitals, class probabilities: one compilation.

  (Each compilation costs seconds on this CPU, so the test compiles once; the hospitals'
  parameters are scaled copies of one initialization so that they differ.)
  """
  def run(key, images, labels):
    params = spec.module.init(key, images[0])
    params = jax.tree.map(lambda leaf: jnp.stack([(1 + 0.1 * h) * leaf
                                                  for h in range(num_hospitals)]), params)
    count = jnp.int32(images.shape[1])
    train = lambda p, x, y, k: client.local_training(
        p, x, y, count, k, model=spec, optimizer=optax.sgd(0.1), local_steps=1,
        batch_size=x.shape[0], unroll=True)
    keys = jax.random.split(jax.random.fold_in(key, 1), num_hospitals)
    new_params, losses = jax.vmap(train)(params, images, labels, keys)
    updates = jax.tree.map(jnp.subtract, new_params, params)
    first_hospital = jax.tree.map(lambda leaf: leaf[0], new_params)
    probabilities = spec.probabilities(spec.module.apply(first_hospital, images[0]))
    return params, new_params, losses, updates, probabilities
  return jax.jit(run)


# iv3_mlp is left out to keep the suite fast (each IV3 compilation vmapped over hospitals
# costs ~25 s of CPU here): it shares iv3_capsule's extractor, and its head is a Dense stack.
@pytest.mark.parametrize("name", ["capsnet", "iv3_capsule"])
def test_vmapped_over_hospitals(name):
  num_hospitals, batch = 2, 4
  spec = get_model(name, **tiny_kwargs(name))
  images = jax.random.uniform(jax.random.key(0), (num_hospitals, batch, 32, 32, 1))
  labels = jnp.array([[0, 1, 1, 0], [1, 1, 0, 0]])
  params, new_params, losses, updates, probabilities = init_and_step_hospitals(
      spec, num_hospitals)(jax.random.key(1), images, labels)
  assert losses.shape == (num_hospitals,) and np.all(np.isfinite(losses))
  for leaf in jax.tree.leaves(updates):  # one SGD step: the update is -0.1 x the gradient
    assert leaf.shape[0] == num_hospitals and np.all(np.isfinite(leaf))
  assert any(not np.allclose(u[0], u[1]) for u in jax.tree.leaves(updates))
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(params),
                                                   jax.tree.leaves(new_params)))
  assert probabilities.shape == (batch, 2)
  np.testing.assert_allclose(jnp.sum(probabilities, -1), 1.0, rtol=1e-5)
  assert np.all((probabilities >= 0) & (probabilities <= 1))
