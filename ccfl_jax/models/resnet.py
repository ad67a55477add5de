"""ResNet baselines of the paper's Table III: ResNet50 (v1, He et al. 2016a) and ResNet50 V2
and ResNet152 V2 (pre-activation, He et al. 2016b), as Keras applications builds them.

Stem (7x7/2 convolution, 3x3/2 max pool), four stages of bottleneck units (64, 128, 256
and 512 filters, 4x expansion; `blocks` units each: 3-4-6-3 for depth 50, 3-8-36-3 for 152),
global average pool, then the MLP head (`hidden`; `hidden=()` is Keras' single Dense
classifier). v1 normalizes after the stem and downsamples in a stage's first unit; v2
normalizes before each unit and after the last, and downsamples in the last unit of
stages 1-3.

GroupNorm in place of every BatchNorm (as big_vision's BiT): batch statistics break
federated averaging and leak per-example information under DP. Full-size counts: the
published Keras count minus BatchNorm's moving mean and variance (tests/models/test_zoo.py).
`width` scales every stage's channels (rounded to multiples of 8) and `blocks` sets the
depth, so small versions train on a CPU.
"""
import functools

import flax.linen as nn

from ccfl_jax.models.layers.convnet import MLPHead, global_average_pool, group_norm, max_pool, scaled
from ccfl_jax.models.layers.resnet import BottleneckV1, BottleneckV2

STAGE_FILTERS = (64, 128, 256, 512)


class ResNet(nn.Module):
  num_classes: int = 2
  version: int = 1  # 1: post-activation (ResNet50); 2: pre-activation (ResNet50V2, 152V2)
  blocks: tuple[int, ...] = (3, 4, 6, 3)
  width: float = 1.0
  hidden: tuple[int, ...] = (1024,)

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = nn.Conv(scaled(64, self.width), (7, 7), strides=2, padding="SAME", name="stem")(images)
    if self.version == 1:
      x = nn.relu(group_norm(x, name="stem_norm"))
    x = max_pool(x, 3, 2)
    unit = BottleneckV1 if self.version == 1 else BottleneckV2
    last_stage = len(self.blocks) - 1
    for stage, (filters, num_units) in enumerate(zip(STAGE_FILTERS, self.blocks)):
      for i in range(num_units):
        if self.version == 1:
          strides = 2 if i == 0 and stage > 0 else 1
        else:
          strides = 2 if i == num_units - 1 and stage < last_stage else 1
        x = unit(scaled(filters, self.width), strides, projection=i == 0,
                 name=f"stage{stage}_unit{i}")(x)
    if self.version == 2:
      x = nn.relu(group_norm(x, name="post_norm"))
    return MLPHead(self.num_classes, self.hidden, name="head")(global_average_pool(x))


MODELS = {
    "resnet50": functools.partial(ResNet, version=1, blocks=(3, 4, 6, 3)),
    "resnet50v2": functools.partial(ResNet, version=2, blocks=(3, 4, 6, 3)),
    "resnet152v2": functools.partial(ResNet, version=2, blocks=(3, 8, 36, 3)),
}
_TINY = dict(width=1 / 16, blocks=(1, 1, 1, 1), hidden=(8,))
TINY_KWARGS = {name: _TINY for name in MODELS}
