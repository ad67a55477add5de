"""The reference CNN used to compare federated-learning frameworks on equal work.

Conv(16)-relu-maxpool2, Conv(32)-relu-maxpool2, Conv(64)-relu-maxpool2, Conv(64)-relu-
global average pool, Dense(num_classes); all convolutions 3x3, 'SAME'. No batch
normalization: batch statistics are per-hospital state that breaks averaging and leaks
per-example information under DP.
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
  num_classes: int = 2
  widths: tuple[int, ...] = (16, 32, 64, 64)

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = images
    for i, width in enumerate(self.widths):
      x = nn.relu(nn.Conv(width, (3, 3), name=f"conv{i}")(x))
      if i < len(self.widths) - 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="head")(x)
