"""Building blocks shared by the CNN baselines of the paper's Table III (the model zoo).

Channel scaling, GroupNorm, convolution-norm-activation, depthwise and separable
convolutions, the MLP head, and PyTorch-style adaptive average pooling.

Normalization is GroupNorm wherever the Keras originals put BatchNorm (as big_vision's BiT
ResNets do): batch statistics are per-hospital state that breaks federated averaging and
leaks per-example information under DP. GroupNorm's scale and bias have the same shapes as
BatchNorm's trainable gamma and beta; Keras additionally counts BatchNorm's moving mean and
variance as (non-trainable) parameters, which GroupNorm has none of.

Convolutions pad 'SAME' (TensorFlow's rule: an odd padding's extra pixel at the end), which
is what Keras' explicit ZeroPadding + 'VALID' pairs amount to at even input sizes, and lets
any input of 32x32 or more run.
"""
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ccfl_jax.models.layers.depthwise import DepthwiseConv

MAX_GROUPS = 32  # BiT's 32 groups
MIN_GROUP_SIZE = 2


def make_divisible(value: float, divisor: int = 8) -> int:
  """Keras' `_make_divisible` (MobileNetV2): round to a multiple of `divisor`, losing < 10%."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


def scaled(channels: int, width: float) -> int:
  """A layer's channels at width multiplier `width` (the channels themselves at width 1)."""
  return channels if width == 1 else make_divisible(channels * width)


def num_groups(channels: int) -> int:
  """GroupNorm groups: BiT's 32 where they divide the channels, fewer where they do not or
  where a group would hold fewer than MIN_GROUP_SIZE channels (narrow CPU versions)."""
  groups = math.gcd(channels, MAX_GROUPS)
  while groups > 1 and channels // groups < MIN_GROUP_SIZE:
    groups //= 2  # still a divisor: gcd with 32 is a power of two
  return groups


def group_norm(x, name: str | None = None):
  """GroupNorm over x's channels (in place of BatchNorm), inside a compact module."""
  return nn.GroupNorm(num_groups=num_groups(x.shape[-1]), name=name)(x)


def depthwise_conv(x, kernel: int, strides: int = 1, name: str | None = None):
  """A k x k depthwise convolution (one filter per channel, no bias), TF 'SAME' padding.

  `layers.depthwise.DepthwiseConv`: shifted multiply-adds on the CPU (a grouped `lax` conv,
  `feature_group_count` = channels, is 4-6x slower on XLA:CPU), the grouped conv elsewhere;
  the kernel is (k, k, 1, C) either way, a grouped `nn.Conv`'s shape. The zoo's one
  depthwise call site.
  """
  return DepthwiseConv(kernel, strides, name=name)(x)


class ConvNorm(nn.Module):
  """Convolution, GroupNorm, activation: Keras' Conv2D-BatchNormalization-Activation."""
  features: int
  kernel: int | tuple[int, int]
  strides: int = 1
  use_bias: bool = False
  activation: Callable | None = nn.relu

  @nn.compact
  def __call__(self, x):
    kernel = (self.kernel, self.kernel) if isinstance(self.kernel, int) else self.kernel
    x = nn.Conv(self.features, kernel, strides=self.strides, padding="SAME",
                use_bias=self.use_bias, name="conv")(x)
    x = group_norm(x, name="norm")
    return x if self.activation is None else self.activation(x)


class SeparableConv(nn.Module):
  """Keras' SeparableConv2D without bias: depthwise k x k, then pointwise 1x1 to `features`."""
  features: int
  kernel: int = 3

  @nn.compact
  def __call__(self, x):
    x = depthwise_conv(x, self.kernel, name="depthwise")
    return nn.Conv(self.features, (1, 1), use_bias=False, name="pointwise")(x)


class MLPHead(nn.Module):
  """The paper's "MLP" learnable node: Dense(hidden, ReLU)... -> Dense(num_classes) logits.

  Takes pooled features (B, D); `hidden=()` is Keras' classifier, a single Dense layer.
  """
  num_classes: int
  hidden: Sequence[int] = ()

  @nn.compact
  def __call__(self, x):
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
    return nn.Dense(self.num_classes, name="logits")(x)


def global_average_pool(x):
  return jnp.mean(x, axis=(1, 2))


def max_pool(x, window: int = 3, strides: int = 2):
  return nn.max_pool(x, (window, window), strides=(strides, strides), padding="SAME")


def _adaptive_pool_matrix(size: int, output_size: int) -> np.ndarray:
  """Row i averages input positions [floor(i n / o), ceil((i + 1) n / o)) (PyTorch's bins)."""
  matrix = np.zeros((output_size, size), np.float32)
  for i in range(output_size):
    start, stop = (i * size) // output_size, -(-((i + 1) * size) // output_size)
    matrix[i, start:stop] = 1.0 / (stop - start)
  return matrix


def adaptive_average_pool(x, output_size: int):
  """PyTorch's AdaptiveAvgPool2d: (B, H, W, C) -> (B, o, o, C) for any H, W (also < o)."""
  rows = _adaptive_pool_matrix(x.shape[1], output_size)
  cols = _adaptive_pool_matrix(x.shape[2], output_size)
  return jnp.einsum("ih,bhwc,jw->bijc", rows, x, cols)
