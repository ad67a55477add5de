"""Xception blocks (Chollet 2017): residual stacks of depthwise-separable convolutions, as
Keras' `xception` builds its entry, middle and exit flows, with GroupNorm.

GroupNorm stands where Keras has BatchNorm: batch statistics are per-hospital state that
breaks federated averaging and leaks per-example information under DP. No convolution has
a bias (as in Keras). The depthwise halves go through `convnet.depthwise_conv`.
"""
import flax.linen as nn

from ccfl_jax.models.layers.convnet import ConvNorm, SeparableConv, group_norm, max_pool


class DownsamplingBlock(nn.Module):
  """Entry/exit-flow block: ReLU, separable to features[0], norm, ReLU, separable to
  features[1], norm, 3x3/2 max pool; plus a normalized 1x1/2 projection of the input.

  (Keras leaves out the first ReLU in the first entry block, whose input is already a ReLU
  output: the same function.)"""
  features: tuple[int, int]

  @nn.compact
  def __call__(self, x):
    shortcut = ConvNorm(self.features[1], 1, strides=2, activation=None, name="shortcut")(x)
    y = group_norm(SeparableConv(self.features[0], name="separable0")(nn.relu(x)), name="norm0")
    y = group_norm(SeparableConv(self.features[1], name="separable1")(nn.relu(y)), name="norm1")
    return max_pool(y, 3, 2) + shortcut


class MiddleBlock(nn.Module):
  """Middle-flow block: three (ReLU, separable 3x3, norm) at constant width, + identity."""

  @nn.compact
  def __call__(self, x):
    y = x
    for i in range(3):
      y = group_norm(SeparableConv(x.shape[-1], name=f"separable{i}")(nn.relu(y)), name=f"norm{i}")
    return x + y
