"""DenseNet baselines of the paper's Table III: DenseNet121, DenseNet169 and DenseNet201
(Huang et al. 2017, DenseNet-BC: growth rate 32, compression 0.5), as Keras applications
builds them.

Stem (7x7/2 convolution to 64, norm-ReLU, 3x3/2 max pool), four dense blocks of `blocks`
layers (6-12-24-16, 6-12-32-32, 6-12-48-32) with a transition (halving channels and
resolution) between them, a final norm-ReLU, global average pool, then the MLP head
(`hidden`; `hidden=()` is Keras' single Dense classifier).

GroupNorm in place of every BatchNorm (as big_vision's BiT): batch statistics break
federated averaging and leak per-example information under DP. Full-size counts: the
published Keras count minus BatchNorm's moving mean and variance (tests/models/test_zoo.py).
`width` scales the stem and the growth rate (rounded to multiples of 8) and `blocks` sets
the depth, so small versions train on a CPU.
"""
import functools

import flax.linen as nn

from ccfl_jax.models.layers.convnet import (ConvNorm, MLPHead, global_average_pool,
                                            group_norm, max_pool, scaled)
from ccfl_jax.models.layers.densenet import DenseBlock, Transition


class DenseNet(nn.Module):
  num_classes: int = 2
  blocks: tuple[int, ...] = (6, 12, 24, 16)
  width: float = 1.0
  hidden: tuple[int, ...] = (1024,)
  growth: int = 32  # at width 1

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = ConvNorm(scaled(64, self.width), 7, strides=2, name="stem")(images)
    x = max_pool(x, 3, 2)
    growth = scaled(self.growth, self.width)
    for i, num_layers in enumerate(self.blocks):
      x = DenseBlock(num_layers, growth, name=f"block{i}")(x)
      if i < len(self.blocks) - 1:
        x = Transition(name=f"transition{i}")(x)
    x = nn.relu(group_norm(x, name="final_norm"))
    return MLPHead(self.num_classes, self.hidden, name="head")(global_average_pool(x))


MODELS = {
    "densenet121": functools.partial(DenseNet, blocks=(6, 12, 24, 16)),
    "densenet169": functools.partial(DenseNet, blocks=(6, 12, 32, 32)),
    "densenet201": functools.partial(DenseNet, blocks=(6, 12, 48, 32)),
}
_TINY = dict(width=1 / 16, blocks=(2, 2, 2, 2), hidden=(8,))
TINY_KWARGS = {name: _TINY for name in MODELS}
