"""A small MLP on flattened pixels: the dispatch-bound model of the round benchmark."""
import flax.linen as nn


class Model(nn.Module):
  num_classes: int = 2
  hidden: tuple[int, ...] = (64, 64)

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = images.reshape(images.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
    return nn.Dense(self.num_classes, name="head")(x)
