"""MobileNet blocks: v1's depthwise-separable block (Howard et al. 2017) and v2's inverted
residual with a linear bottleneck (Sandler et al. 2018), as Keras' `mobilenet` and
`mobilenet_v2` build them, with GroupNorm and ReLU6.

GroupNorm stands where Keras has BatchNorm: batch statistics are per-hospital state that
breaks federated averaging and leaks per-example information under DP. No convolution has
a bias (as in Keras). The depthwise convolutions go through `convnet.depthwise_conv`.
"""
import flax.linen as nn

from ccfl_jax.models.layers.convnet import ConvNorm, depthwise_conv, group_norm


class DepthwiseSeparable(nn.Module):
  """v1 block: 3x3 depthwise (strided), norm-ReLU6, 1x1 pointwise to `features`, norm-ReLU6."""
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    x = depthwise_conv(x, 3, self.strides, name="depthwise")
    x = nn.relu6(group_norm(x, name="depthwise_norm"))
    return ConvNorm(self.features, 1, activation=nn.relu6, name="pointwise")(x)


class InvertedResidual(nn.Module):
  """v2 block: 1x1 expansion to `expansion` x the input channels (none at expansion 1),
  norm-ReLU6, 3x3 depthwise (strided), norm-ReLU6, linear 1x1 projection to `features`,
  norm; a residual connection where shapes allow (stride 1, same channels)."""
  features: int
  strides: int = 1
  expansion: int = 6

  @nn.compact
  def __call__(self, x):
    y = x
    if self.expansion != 1:
      y = ConvNorm(self.expansion * x.shape[-1], 1, activation=nn.relu6, name="expand")(y)
    y = depthwise_conv(y, 3, self.strides, name="depthwise")
    y = nn.relu6(group_norm(y, name="depthwise_norm"))
    y = ConvNorm(self.features, 1, activation=None, name="project")(y)
    return x + y if self.strides == 1 and x.shape[-1] == self.features else y
