"""An Inception-V3 feature extractor (Szegedy et al. 2016, "Rethinking the Inception
architecture"), the IV3 in the paper's IV3* (Kumar et al., Fig. 1).

Stem, Inception-A blocks (35x35 grid at 299x299 input), Reduction-A, Inception-B blocks
(17x17, 7x7 factorized into 1x7 and 7x1), Reduction-B, Inception-C blocks (8x8, expanded
1x3/3x1 branches), with the branch widths of Keras' `InceptionV3`. At width 1.0 and blocks
(3, 4, 2) the convolution weights equal Keras' no-top InceptionV3 exactly.

Deviations, both deliberate:
  * GroupNorm (groups of 16 channels) in place of BatchNorm after every convolution:
    batch statistics are per-hospital state that breaks federated averaging and leaks
    per-example information under DP.
  * 'SAME' padding everywhere (IV3 pads 'VALID' in the stem and reductions, which needs
    inputs of at least 75x75): any input of 32x32 or more works, downsampled 32x.
Width (`width_multiplier`, channels rounded to multiples of 16) and depth (`blocks`, the
number of A, B and C blocks) are configurable so small versions train on a CPU.
"""
import flax.linen as nn
import jax.numpy as jnp

GROUP_SIZE = 16


def scaled_width(channels: int, multiplier: float) -> int:
  """Channels x multiplier, rounded to a multiple of GROUP_SIZE (at least one group)."""
  return max(GROUP_SIZE, int(round(channels * multiplier / GROUP_SIZE)) * GROUP_SIZE)


class ConvNormRelu(nn.Module):
  """Convolution (no bias), GroupNorm, ReLU: IV3's `conv2d_bn` with GroupNorm."""
  features: int
  kernel: tuple[int, int]
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, self.kernel, strides=self.strides, padding="SAME",
                use_bias=False)(x)
    x = nn.GroupNorm(num_groups=None, group_size=GROUP_SIZE)(x)
    return nn.relu(x)


class Branch(nn.Module):
  """A chain of ConvNormRelu given as (channels at width 1, kernel, strides) triples."""
  layers: tuple[tuple[int, tuple[int, int], int], ...]
  width_multiplier: float

  @nn.compact
  def __call__(self, x):
    for channels, kernel, strides in self.layers:
      x = ConvNormRelu(scaled_width(channels, self.width_multiplier), kernel, strides)(x)
    return x


def pooled(x, strides: int = 1, kind: str = "avg"):
  pool = nn.avg_pool if kind == "avg" else nn.max_pool
  return pool(x, (3, 3), strides=(strides, strides), padding="SAME")


class InceptionA(nn.Module):
  """35x35 block (Szegedy et al. Fig. 5): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1."""
  pool_features: int
  width_multiplier: float

  @nn.compact
  def __call__(self, x):
    w = self.width_multiplier
    return jnp.concatenate([
        Branch(((64, (1, 1), 1),), w)(x),
        Branch(((48, (1, 1), 1), (64, (5, 5), 1)), w)(x),
        Branch(((64, (1, 1), 1), (96, (3, 3), 1), (96, (3, 3), 1)), w)(x),
        Branch(((self.pool_features, (1, 1), 1),), w)(pooled(x)),
    ], axis=-1)


class ReductionA(nn.Module):
  """35x35 -> 17x17 (Szegedy et al. Sec. 5): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""
  width_multiplier: float

  @nn.compact
  def __call__(self, x):
    w = self.width_multiplier
    return jnp.concatenate([
        Branch(((384, (3, 3), 2),), w)(x),
        Branch(((64, (1, 1), 1), (96, (3, 3), 1), (96, (3, 3), 2)), w)(x),
        pooled(x, 2, "max"),
    ], axis=-1)


class InceptionB(nn.Module):
  """17x17 block (Szegedy et al. Fig. 6): n x n convolutions factorized into 1x7 and 7x1."""
  channels_7x7: int
  width_multiplier: float

  @nn.compact
  def __call__(self, x):
    w, c = self.width_multiplier, self.channels_7x7
    return jnp.concatenate([
        Branch(((192, (1, 1), 1),), w)(x),
        Branch(((c, (1, 1), 1), (c, (1, 7), 1), (192, (7, 1), 1)), w)(x),
        Branch(((c, (1, 1), 1), (c, (7, 1), 1), (c, (1, 7), 1), (c, (7, 1), 1),
                (192, (1, 7), 1)), w)(x),
        Branch(((192, (1, 1), 1),), w)(pooled(x)),
    ], axis=-1)


class ReductionB(nn.Module):
  """17x17 -> 8x8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""
  width_multiplier: float

  @nn.compact
  def __call__(self, x):
    w = self.width_multiplier
    return jnp.concatenate([
        Branch(((192, (1, 1), 1), (320, (3, 3), 2)), w)(x),
        Branch(((192, (1, 1), 1), (192, (1, 7), 1), (192, (7, 1), 1), (192, (3, 3), 2)), w)(x),
        pooled(x, 2, "max"),
    ], axis=-1)


class InceptionC(nn.Module):
  """8x8 block (Szegedy et al. Fig. 7): expanded 1x3 and 3x1 branches."""
  width_multiplier: float

  @nn.compact
  def __call__(self, x):
    w = self.width_multiplier
    branch_3x3 = Branch(((384, (1, 1), 1),), w)(x)
    branch_3x3_double = Branch(((448, (1, 1), 1), (384, (3, 3), 1)), w)(x)
    return jnp.concatenate([
        Branch(((320, (1, 1), 1),), w)(x),
        Branch(((384, (1, 3), 1),), w)(branch_3x3),
        Branch(((384, (3, 1), 1),), w)(branch_3x3),
        Branch(((384, (1, 3), 1),), w)(branch_3x3_double),
        Branch(((384, (3, 1), 1),), w)(branch_3x3_double),
        Branch(((192, (1, 1), 1),), w)(pooled(x)),
    ], axis=-1)


def channels_7x7(block: int, num_blocks: int) -> int:
  """IV3's Inception-B widths 128, 160, 160, 192, stretched to any number of blocks."""
  if block == 0:
    return 128
  return 192 if block == num_blocks - 1 else 160


class InceptionV3Features(nn.Module):
  """Images (B, H, W, C) -> feature map (B, ceil(H/32), ceil(W/32), 2048 x width)."""
  width_multiplier: float = 1.0
  blocks: tuple[int, int, int] = (3, 4, 2)  # Inception-A, -B, -C blocks

  @nn.compact
  def __call__(self, images):
    w = self.width_multiplier
    x = Branch(((32, (3, 3), 2), (32, (3, 3), 1), (64, (3, 3), 1)), w, name="stem_a")(images)
    x = pooled(x, 2, "max")
    x = Branch(((80, (1, 1), 1), (192, (3, 3), 1)), w, name="stem_b")(x)
    x = pooled(x, 2, "max")
    num_a, num_b, num_c = self.blocks
    for block in range(num_a):
      x = InceptionA(32 if block == 0 else 64, w, name=f"inception_a{block}")(x)
    x = ReductionA(w, name="reduction_a")(x)
    for block in range(num_b):
      x = InceptionB(channels_7x7(block, num_b), w, name=f"inception_b{block}")(x)
    x = ReductionB(w, name="reduction_b")(x)
    for block in range(num_c):
      x = InceptionC(w, name=f"inception_c{block}")(x)
    return x
