"""Inception-V3 features with an MLP head: the "Inception V3 + MLP" row of the paper's
Table III, the comparison for IV3* (`iv3_capsule`), here trained from scratch.

Features (`InceptionV3Features`: GroupNorm, not BatchNorm) -> global average pool ->
Dense(hidden, ReLU) -> Dense(num_classes) logits (softmax cross-entropy, softmax).
"""
import flax.linen as nn
import jax.numpy as jnp

from ccfl_jax.models.layers.inception import InceptionV3Features

TINY_KWARGS = dict(width_multiplier=1 / 16, blocks=(1, 1, 1), hidden=(8,))


class Model(nn.Module):
  num_classes: int = 2
  width_multiplier: float = 1.0
  blocks: tuple[int, int, int] = (3, 4, 2)
  hidden: tuple[int, ...] = (1024,)

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = InceptionV3Features(self.width_multiplier, self.blocks, name="features")(images)
    x = jnp.mean(x, axis=(1, 2))
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
    return nn.Dense(self.num_classes, name="head")(x)
