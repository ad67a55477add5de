"""Dense blocks and transitions of DenseNet (Huang et al. 2017, DenseNet-BC), as Keras'
`densenet.conv_block` and `densenet.transition_block`, with GroupNorm.

GroupNorm stands where Keras has BatchNorm: batch statistics are per-hospital state that
breaks federated averaging and leaks per-example information under DP. No convolution has
a bias (as in Keras).
"""
import flax.linen as nn
import jax.numpy as jnp

from ccfl_jax.models.layers.convnet import ConvNorm, group_norm


class DenseLayer(nn.Module):
  """norm-ReLU, 1x1 to 4 x growth (bottleneck), norm-ReLU, 3x3 to `growth`; appended to x."""
  growth: int

  @nn.compact
  def __call__(self, x):
    y = nn.relu(group_norm(x, name="norm"))
    y = ConvNorm(4 * self.growth, 1, name="bottleneck")(y)
    y = nn.Conv(self.growth, (3, 3), padding="SAME", use_bias=False, name="conv")(y)
    return jnp.concatenate([x, y], axis=-1)


class DenseBlock(nn.Module):
  """`num_layers` DenseLayers: the channels grow by `growth` per layer."""
  num_layers: int
  growth: int

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers):
      x = DenseLayer(self.growth, name=f"layer{i}")(x)
    return x


class Transition(nn.Module):
  """norm-ReLU, 1x1 convolution to `compression` x the channels, 2x2/2 average pool."""
  compression: float = 0.5

  @nn.compact
  def __call__(self, x):
    x = nn.relu(group_norm(x, name="norm"))
    x = nn.Conv(int(x.shape[-1] * self.compression), (1, 1), use_bias=False, name="conv")(x)
    return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME", count_include_pad=False)
