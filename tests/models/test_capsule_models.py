"""The capsule models and the Inception-V3 extractor: sizes pinned."""
import math

import jax
import jax.numpy as jnp
import pytest

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


# Each capsule model trains vmapped over hospitals inside the compiled round, through the
# federated client's local training: tests/federated/test_models_in_round.py.
