"""The Xception baseline of the paper's Table III ("Xception V1", Chollet 2017), as Keras
applications builds it.

Entry flow: 3x3/2 convolution to 32, 3x3 to 64, then three downsampling blocks of separable
convolutions (128, 256, 728); middle flow: `middle_blocks` (8) residual blocks of three
separable convolutions at 728; exit flow: a downsampling block (728, 1024), separable
convolutions to 1536 and 2048; global average pool, then the MLP head (`hidden`;
`hidden=()` is Keras' single Dense classifier).

GroupNorm in place of every BatchNorm (as big_vision's BiT): batch statistics break
federated averaging and leak per-example information under DP. Full-size counts: the
published Keras count minus BatchNorm's moving mean and variance (tests/models/test_zoo.py).
'SAME' padding (Keras pads the two stem convolutions 'VALID'): any input of 32x32 or more.
`width` scales every layer's channels (rounded to multiples of 8) and `middle_blocks` the
depth, so small versions train on a CPU. Depthwise convolutions go through
`layers.convnet.depthwise_conv` (shifted multiply-adds on the CPU, where grouped
convolutions are slow).
"""
import flax.linen as nn

from ccfl_jax.models.layers.convnet import (ConvNorm, MLPHead, SeparableConv, global_average_pool,
                                            group_norm, scaled)
from ccfl_jax.models.layers.xception import DownsamplingBlock, MiddleBlock

TINY_KWARGS = dict(width=1 / 16, middle_blocks=1, hidden=(8,))


class Model(nn.Module):
  num_classes: int = 2
  middle_blocks: int = 8
  width: float = 1.0
  hidden: tuple[int, ...] = (1024,)

  @nn.compact
  def __call__(self, images, train: bool = False):
    w = lambda channels: scaled(channels, self.width)  # noqa: E731
    x = ConvNorm(w(32), 3, strides=2, name="stem0")(images)
    x = ConvNorm(w(64), 3, name="stem1")(x)
    for i, channels in enumerate((128, 256, 728)):
      x = DownsamplingBlock((w(channels), w(channels)), name=f"entry{i}")(x)
    for i in range(self.middle_blocks):
      x = MiddleBlock(name=f"middle{i}")(x)
    x = DownsamplingBlock((w(728), w(1024)), name="exit")(x)
    x = nn.relu(group_norm(SeparableConv(w(1536), name="top0")(x), name="top0_norm"))
    x = nn.relu(group_norm(SeparableConv(w(2048), name="top1")(x), name="top1_norm"))
    return MLPHead(self.num_classes, self.hidden, name="head")(global_average_pool(x))
