"""VGG baselines of the paper's Table III: VGG16 and VGG19 (Simonyan & Zisserman 2015,
configurations D and E), as Keras applications builds them.

Five stages of 3x3 convolutions (64, 128, 256, 512, 512 channels; `convs_per_stage`
2-2-3-3-3 for VGG16, 2-2-4-4-4 for VGG19), each with bias and ReLU and closed by a 2x2/2 max
pool; then the head: `pool="avg"` (default) global-average-pools into the MLP head
(`hidden`), the paper's "MLP" learnable node; `pool="flatten", hidden=(4096, 4096)` is the
classic VGG head of Keras' include_top (flatten the 7x7x512 map at 224x224, two Dense(4096,
ReLU), no dropout), whose full-size count matches the published one exactly.

VGG has no BatchNorm, so none here by default (nothing to replace); `norm=True` puts a
GroupNorm after every convolution (like torchvision's vgg*_bn, GroupNorm because batch
statistics break federated averaging and leak under DP), which helps training from scratch.
Convolutions start He-normal (no normalization to rescue a 16-layer ReLU stack). `width`
scales the channels (rounded to multiples of 8) and `convs_per_stage` the depth, so small
versions train on a CPU.
"""
import functools

import flax.linen as nn

from ccfl_jax.models.layers.convnet import MLPHead, global_average_pool, group_norm, max_pool, scaled

STAGE_CHANNELS = (64, 128, 256, 512, 512)


class VGG(nn.Module):
  num_classes: int = 2
  convs_per_stage: tuple[int, ...] = (2, 2, 3, 3, 3)
  width: float = 1.0
  hidden: tuple[int, ...] = (1024,)
  pool: str = "avg"  # "avg": global average pool; "flatten": the classic head's input
  norm: bool = False

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = images
    for stage, (channels, num_convs) in enumerate(zip(STAGE_CHANNELS, self.convs_per_stage)):
      for i in range(num_convs):
        x = nn.Conv(scaled(channels, self.width), (3, 3), padding="SAME",
                    kernel_init=nn.initializers.he_normal(), name=f"stage{stage}_conv{i}")(x)
        if self.norm:
          x = group_norm(x, name=f"stage{stage}_norm{i}")
        x = nn.relu(x)
      x = max_pool(x, 2, 2)
    x = global_average_pool(x) if self.pool == "avg" else x.reshape((x.shape[0], -1))
    return MLPHead(self.num_classes, self.hidden, name="head")(x)


MODELS = {
    "vgg16": functools.partial(VGG, convs_per_stage=(2, 2, 3, 3, 3)),
    "vgg19": functools.partial(VGG, convs_per_stage=(2, 2, 4, 4, 4)),
}
_TINY = dict(width=1 / 16, convs_per_stage=(1, 1, 1, 1, 1), hidden=(8,))
TINY_KWARGS = {name: _TINY for name in MODELS}
