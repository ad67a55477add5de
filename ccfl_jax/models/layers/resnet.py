"""Residual units of the ResNet family (He et al. 2016a, v1; He et al. 2016b, v2 "identity
mappings"), as Keras' `resnet.block1` and `resnet_v2.block2`, with GroupNorm.

GroupNorm stands where Keras has BatchNorm (as in big_vision's BiT): batch statistics are
per-hospital state that breaks federated averaging and leaks per-example information under
DP. Convolution biases follow Keras exactly (v1: every convolution has one; v2: the 1x1
convolutions that end a unit and the projection shortcut do), so that the parameter counts
match the published ones; a bias in front of a GroupNorm is redundant but harmless.
"""
import flax.linen as nn

from ccfl_jax.models.layers.convnet import ConvNorm, group_norm


class BottleneckV1(nn.Module):
  """1x1 (strided) -> 3x3 -> 1x1 to 4 x filters, each normalized, + shortcut, then ReLU.

  Keras' v1 strides in the first 1x1 convolution; the shortcut is a normalized strided 1x1
  projection in a stage's first unit (`projection`), the identity elsewhere.
  """
  filters: int
  strides: int = 1
  projection: bool = False

  @nn.compact
  def __call__(self, x):
    shortcut = x
    if self.projection:
      shortcut = ConvNorm(4 * self.filters, 1, self.strides, use_bias=True, activation=None,
                          name="shortcut")(x)
    y = ConvNorm(self.filters, 1, self.strides, use_bias=True, name="reduce")(x)
    y = ConvNorm(self.filters, 3, use_bias=True, name="conv")(y)
    y = ConvNorm(4 * self.filters, 1, use_bias=True, activation=None, name="expand")(y)
    return nn.relu(shortcut + y)


class BottleneckV2(nn.Module):
  """Pre-activation unit: norm-ReLU, then 1x1 -> 3x3 (strided) -> 1x1 to 4 x filters, + shortcut.

  Keras' v2 strides in the 3x3 convolution of a stage's *last* unit, where the identity
  shortcut is subsampled (Keras' 1x1 max pool); a stage's first unit projects the
  pre-activated input with a 1x1 convolution (`projection`).
  """
  filters: int
  strides: int = 1
  projection: bool = False

  @nn.compact
  def __call__(self, x):
    preactivated = nn.relu(group_norm(x, name="preact_norm"))
    if self.projection:
      shortcut = nn.Conv(4 * self.filters, (1, 1), strides=self.strides, name="shortcut")(
          preactivated)
    else:
      shortcut = x[:, ::self.strides, ::self.strides]
    y = ConvNorm(self.filters, 1, name="reduce")(preactivated)
    y = ConvNorm(self.filters, 3, self.strides, name="conv")(y)
    y = nn.Conv(4 * self.filters, (1, 1), name="expand")(y)
    return shortcut + y
