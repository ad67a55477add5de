"""The Inception V3 baseline of the paper's Table III as a plain Keras-style classifier
(Szegedy et al. 2016; Keras applications' `InceptionV3` with include_top): the
Inception-V3 features, global average pool, Dense(num_classes) logits.

Not to be confused with the two other models on the same extractor: `iv3_mlp` puts a
hidden Dense(1024, ReLU) layer before the logits (the Table III "MLP" head, the direct
comparison for IV3*), and `iv3_capsule` is IV3* itself. Here the head is Keras' single
Dense layer (`hidden=()`); `hidden=(1024,)` gives iv3_mlp's architecture under this zoo's
field names (`width`, as every zoo model).

The extractor is `layers.inception.InceptionV3Features`: GroupNorm in place of Keras'
BatchNorm (batch statistics break federated averaging and leak per-example information
under DP), 'SAME' padding, channels rounded to multiples of 16. Keras' BatchNorm there has
no scale (beta, moving mean and variance only), so the full-size count is the published
one minus one parameter per normalized channel (tests/models/test_zoo.py). `width` and
`blocks` (Inception-A, -B and -C blocks) make small versions that train on a CPU.
"""
import flax.linen as nn

from ccfl_jax.models.layers.convnet import MLPHead, global_average_pool
from ccfl_jax.models.layers.inception import InceptionV3Features

TINY_KWARGS = dict(width=1 / 16, blocks=(1, 1, 1))


class Model(nn.Module):
  num_classes: int = 2
  width: float = 1.0
  blocks: tuple[int, int, int] = (3, 4, 2)
  hidden: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = InceptionV3Features(self.width, self.blocks, name="features")(images)
    return MLPHead(self.num_classes, self.hidden, name="head")(global_average_pool(x))
