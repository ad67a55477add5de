"""MobileNet baselines of the paper's Table III: MobileNet (v1, Howard et al. 2017) and
MobileNet V2 (Sandler et al. 2018), as Keras applications builds them at alpha 1.

v1: 3x3/2 convolution to 32, then 13 depthwise-separable blocks in five stages (64; 128 x2;
256 x2; 512 x6; 1024 x2, each stage but the first opening with stride 2). v2: 3x3/2
convolution to 32, 17 inverted residuals in seven stages (expansion t, channels c, repeats
n, stride s of Sandler et al. Table 2), then a 1x1 convolution to 1280. Both: global
average pool, then the MLP head (`hidden`; `hidden=()` is Keras' single Dense classifier,
which for v1 Keras writes as a 1x1 convolution, the same parameters). Keras' classifier
dropout is left out.

GroupNorm in place of every BatchNorm (as big_vision's BiT): batch statistics break
federated averaging and leak per-example information under DP. Full-size counts: the
published Keras count minus BatchNorm's moving mean and variance (tests/models/test_zoo.py).
`width` is Keras' alpha (channels rounded to multiples of 8; v2 keeps the 1280 top
convolution at width <= 1, as Keras does) and `blocks` sets the repeats per stage, so small
versions train on a CPU. Depthwise convolutions go through `layers.convnet.depthwise_conv`
(shifted multiply-adds on the CPU, where grouped convolutions are slow).
"""
import functools

import flax.linen as nn

from ccfl_jax.models.layers.convnet import ConvNorm, MLPHead, global_average_pool, scaled
from ccfl_jax.models.layers.mobilenet import DepthwiseSeparable, InvertedResidual

V1_STAGE_CHANNELS = (64, 128, 256, 512, 1024)
# Sandler et al. Table 2: (expansion, channels, stride) per stage; repeats in `blocks`.
V2_STAGES = ((1, 16, 1), (6, 24, 2), (6, 32, 2), (6, 64, 2), (6, 96, 1), (6, 160, 2), (6, 320, 1))


class MobileNetV1(nn.Module):
  num_classes: int = 2
  blocks: tuple[int, ...] = (1, 2, 2, 6, 2)
  width: float = 1.0
  hidden: tuple[int, ...] = (1024,)

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = ConvNorm(scaled(32, self.width), 3, strides=2, activation=nn.relu6, name="stem")(images)
    for stage, (channels, repeats) in enumerate(zip(V1_STAGE_CHANNELS, self.blocks)):
      for i in range(repeats):
        strides = 2 if i == 0 and stage > 0 else 1
        x = DepthwiseSeparable(scaled(channels, self.width), strides,
                               name=f"stage{stage}_block{i}")(x)
    return MLPHead(self.num_classes, self.hidden, name="head")(global_average_pool(x))


class MobileNetV2(nn.Module):
  num_classes: int = 2
  blocks: tuple[int, ...] = (1, 2, 3, 4, 3, 3, 1)
  width: float = 1.0
  hidden: tuple[int, ...] = (1024,)

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = ConvNorm(scaled(32, self.width), 3, strides=2, activation=nn.relu6, name="stem")(images)
    for stage, ((expansion, channels, stride), repeats) in enumerate(zip(V2_STAGES, self.blocks)):
      for i in range(repeats):
        x = InvertedResidual(scaled(channels, self.width), stride if i == 0 else 1, expansion,
                             name=f"stage{stage}_block{i}")(x)
    top_channels = 1280 if self.width <= 1 else scaled(1280, self.width)
    x = ConvNorm(top_channels, 1, activation=nn.relu6, name="top")(x)
    return MLPHead(self.num_classes, self.hidden, name="head")(global_average_pool(x))


MODELS = {
    "mobilenet": MobileNetV1,
    "mobilenetv2": MobileNetV2,
}
TINY_KWARGS = {
    "mobilenet": dict(width=1 / 16, blocks=(1, 1, 1, 1, 1), hidden=(8,)),
    "mobilenetv2": dict(width=1 / 16, blocks=(1, 1, 1, 1, 1, 1, 1), hidden=(8,)),
}
