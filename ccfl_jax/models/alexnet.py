"""The AlexNet baseline of the paper's Table III (Krizhevsky et al. 2012), in its common
single-tower form (torchvision's `alexnet`, "One weird trick", Krizhevsky 2014; Keras
applications has none).

Convolutions 11x11/4 to 64, 5x5 to 192, 3x3 to 384, 256 and 256, each with bias and ReLU,
3x3/2 max pools after the first, second and fifth; then the head: `pool="avg"` (default)
global-average-pools into the MLP head (`hidden`), the paper's "MLP" learnable node;
`pool="flatten", hidden=(4096, 4096)` is the classic head (adaptive average pool to 6x6,
flatten, two Dense(4096, ReLU); torchvision's dropout left out), 61,100,840 parameters at
1000 classes like torchvision's.

AlexNet has no BatchNorm (its local response normalization is left out, as torchvision
does), so no GroupNorm either. 'SAME' padding (torchvision pads 2, 2, 1, 1, 1 and pools
unpadded): any input of 32x32 or more; the head's parameters do not depend on it.
Convolutions start He-normal. `width` scales the channels (rounded to multiples of 8).
"""
import flax.linen as nn

from ccfl_jax.models.layers.convnet import (MLPHead, adaptive_average_pool, global_average_pool,
                                            max_pool, scaled)

# (channels, kernel, stride, max pool after)
CONVS = ((64, 11, 4, True), (192, 5, 1, True), (384, 3, 1, False), (256, 3, 1, False),
         (256, 3, 1, True))
TINY_KWARGS = dict(width=1 / 16, hidden=(8,))


class Model(nn.Module):
  num_classes: int = 2
  width: float = 1.0
  hidden: tuple[int, ...] = (1024,)
  pool: str = "avg"  # "avg": global average pool; "flatten": the classic head's 6x6 input

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = images
    for i, (channels, kernel, strides, pool_after) in enumerate(CONVS):
      x = nn.Conv(scaled(channels, self.width), (kernel, kernel), strides=strides, padding="SAME",
                  kernel_init=nn.initializers.he_normal(), name=f"conv{i}")(x)
      x = nn.relu(x)
      if pool_after:
        x = max_pool(x, 3, 2)
    if self.pool == "avg":
      x = global_average_pool(x)
    else:
      x = adaptive_average_pool(x, 6).reshape((x.shape[0], -1))
    return MLPHead(self.num_classes, self.hidden, name="head")(x)
