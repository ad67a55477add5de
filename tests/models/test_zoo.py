"""The CNN baselines of the paper's Table III: full-size parameter counts against the published
ones, and every model's small version runs on small inputs of any shape.

Counts are taken with `jax.eval_shape` (no memory, no FLOPs) at 224x224x3 with a 1000-class
head: Keras' classifier (`hidden=()`), VGG and AlexNet with their classic flatten-4096-4096
head. Published counts are Keras applications' `model.count_params()` (AlexNet: torchvision's
`alexnet`, Keras has none). They include BatchNorm's moving mean and variance (non-trainable,
2 per normalized channel), which GroupNorm does not have; Keras' InceptionV3 BatchNorm also
has no scale (gamma), which GroupNorm does have. So, exactly:
  published = ours + (Keras parameters per BatchNorm channel - 2) x (GroupNorm channels)
with 4 - 2 = 2 per channel (beta, gamma, mean, var vs scale, bias) and 3 - 2 = 1 for IV3.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ccfl_jax.models import get_model, model_names, tiny_kwargs
from ccfl_jax.models.layers.convnet import adaptive_average_pool, make_divisible, num_groups

KERAS_HEAD = dict(num_classes=1000, hidden=())
CLASSIC_HEAD = dict(num_classes=1000, hidden=(4096, 4096), pool="flatten")

# name: (kwargs at full size, our pinned count, published count, Keras params per BN channel)
FULL_SIZE = {
    "resnet50": (KERAS_HEAD, 25_583_592, 25_636_712, 4),
    "resnet50v2": (KERAS_HEAD, 25_568_360, 25_613_800, 4),
    "resnet152v2": (KERAS_HEAD, 60_236_904, 60_380_648, 4),
    "densenet121": (KERAS_HEAD, 7_978_856, 8_062_504, 4),
    "densenet169": (KERAS_HEAD, 14_149_480, 14_307_880, 4),
    "densenet201": (KERAS_HEAD, 20_013_928, 20_242_984, 4),
    "mobilenet": (KERAS_HEAD, 4_231_976, 4_253_864, 4),
    "mobilenetv2": (KERAS_HEAD, 3_504_872, 3_538_984, 4),
    "xception": (KERAS_HEAD, 22_855_952, 22_910_480, 4),
    "inceptionv3": (KERAS_HEAD, 23_834_568, 23_851_784, 3),  # BatchNorm(scale=False)
    "vgg16": (CLASSIC_HEAD, 138_357_544, 138_357_544, None),  # no normalization at all
    "vgg19": (CLASSIC_HEAD, 143_667_240, 143_667_240, None),
    "alexnet": (CLASSIC_HEAD, 61_100_840, 61_100_840, None),  # torchvision's single tower
}
ZOO = tuple(FULL_SIZE)
# One model per block family for the compiled forward pass (10-17 s of XLA:CPU compile each):
# the deeper members (vgg19, resnet152v2, densenet169/201) repeat the same blocks more times,
# and their structure is pinned by the parameter counts and the abstract shape checks.
COMPILED = ("vgg16", "alexnet", "xception", "resnet50", "resnet50v2", "inceptionv3", "mobilenet",
            "mobilenetv2", "densenet121")


def parameter_shapes(name, kwargs, shape):
  module = get_model(name, **kwargs).module
  return jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def test_zoo_is_registered():
  assert set(ZOO) <= set(model_names())


@pytest.mark.parametrize("name", ZOO)
def test_full_size_parameter_count_is_the_published_one_less_batchnorm_statistics(name):
  kwargs, pinned, published, keras_per_channel = FULL_SIZE[name]
  leaves = jax.tree_util.tree_leaves_with_path(parameter_shapes(name, kwargs, (1, 224, 224, 3)))
  assert sum(leaf.size for _, leaf in leaves) == pinned
  groupnorm_channels = sum(leaf.size for path, leaf in leaves if path[-1].key == "scale")
  if keras_per_channel is None:
    assert groupnorm_channels == 0 and pinned == published
  else:
    assert pinned + (keras_per_channel - 2) * groupnorm_channels == published


def test_inceptionv3_with_a_hidden_layer_is_iv3_mlp():
  def count(name, **kwargs):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(
        parameter_shapes(name, kwargs, (1, 75, 75, 1))))
  assert count("inceptionv3", hidden=(1024,)) == count("iv3_mlp")
  assert count("inceptionv3") == count("iv3_mlp") - 1024 * (2048 + 1) - 1024 * 2 + 2048 * 2


@pytest.mark.parametrize("shape", [(3, 45, 37, 3), (1, 224, 224, 1), (2, 33, 64, 4)])
def test_small_versions_take_any_image_shape(shape):
  for name in ZOO:
    module = get_model(name, **tiny_kwargs(name)).module
    images = jax.ShapeDtypeStruct(shape, jnp.float32)
    params = jax.eval_shape(module.init, jax.random.key(0), images)
    assert jax.eval_shape(module.apply, params, images).shape == (shape[0], 2), name


@pytest.mark.parametrize("name", COMPILED)
def test_small_version_gives_finite_logits(name):
  module = get_model(name, **tiny_kwargs(name)).module
  images = jax.random.uniform(jax.random.key(1), (3, 32, 32, 1))

  @jax.jit
  def logits(key):
    return module.apply(module.init(key, images), images, train=True)
  out = logits(jax.random.key(0))
  assert out.shape == (3, 2) and bool(jnp.all(jnp.isfinite(out)))
  assert not np.allclose(out[0], out[1])  # the logits depend on the image


def test_adaptive_average_pool_uses_pytorchs_bins():
  x = jnp.arange(5.0).reshape(1, 5, 1, 1) * jnp.ones((1, 1, 2, 1))
  pooled = adaptive_average_pool(x, 3)[0, :, 0, 0]
  np.testing.assert_allclose(pooled, [0.5, 2.0, 3.5])  # bins [0, 2), [1, 4), [3, 5)
  np.testing.assert_allclose(adaptive_average_pool(jnp.ones((1, 1, 1, 2)), 6), jnp.ones((1, 6, 6, 2)))


def test_channel_rounding_and_groups():
  assert [make_divisible(c) for c in (4, 12, 45.5, 728 / 4)] == [8, 16, 48, 184]
  assert [num_groups(c) for c in (8, 16, 24, 64, 144, 728, 2048)] == [4, 8, 8, 32, 16, 8, 32]
