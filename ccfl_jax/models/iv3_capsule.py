"""IV3*, the paper's model (Kumar et al., Fig. 1, Table III): Inception-V3 features
classified by capsule layers routed by agreement (eqs. 1-4, Algorithm 1).

The extractor is `ccfl_jax.models.layers.inception.InceptionV3Features` (GroupNorm, not
BatchNorm; 'SAME' padding; width and depth configurable). The capsule head follows
`variant`:

  * 'paper' (default), the paper's public Keras code: the feature vector at each of the
    h x w positions is an input capsule (unsquashed, 2048 x width dims); two capsule layers
    with weights shared across input capsules, 32 x 32D then num_classes x 16D, 3 routings
    each, logits reset every iteration, squash with 0.5; cross-entropy on the lengths.
  * 'sabour': Sabour's head on the same features: PrimaryCapsules (`primary_capsules`
    types x `primary_capsule_dim`, default 32 x 8D, 3x3, stride 1) then num_classes x 16D
    class capsules with a matrix per capsule pair, logits accumulated, margin loss; optional
    reconstruction decoder. The class-capsule matrices W_ij are Glorot with fan-in over all
    inputs (N_in x D_in) rather than per capsule (D_in, as `capsnet` keeps). Why: with the
    per-capsule scale (std 0.22) the 288 primary capsules (3x3 x 32 at width 0.25, 96x96;
    lengths ~0.67, nearly image-independent) sum to |s_j| ~ 7: class lengths start at
    0.98-0.99 for both classes with an image-to-image std of 5e-4, the squash's gradient
    there is ~2/|s|^3, and the margin loss (0.40 = 0.5 x 0.89^2, the absent class) would
    need W shrunk ~20x to move, thousands of Adam steps at lr 1e-4. That was the "stuck at
    0.40" of results/iv3_capsule_ucsd.md. With fan-in over inputs (std 0.03) lengths start
    at 0.27-0.39 and 64 UCSD images are fitted in 40 Adam steps at 1e-4 (were at the label
    mean after 60). Sabour's released code's std 0.1 still starts saturated (0.86-0.92) and
    had not fitted them after 60 steps (training accuracy 0.578).

Class probabilities are the class-capsule lengths normalized over classes.
"""
import flax.linen as nn

from ccfl_jax.models.layers.capsule import (CapsuleDecoder, CapsuleOutputs, PrimaryCapsules,
                                            RoutingCapsules, capsule_loss, capsule_probabilities,
                                            routing_rules)
from ccfl_jax.models.layers.inception import InceptionV3Features

loss = capsule_loss
probabilities = capsule_probabilities

TINY_KWARGS = dict(width_multiplier=1 / 16, blocks=(1, 1, 1), hidden_capsules=4,
                   hidden_capsule_dim=4, primary_capsules=4, primary_capsule_dim=4,
                   class_capsule_dim=4)


class CapsuleHead(nn.Module):
  """Feature map (B, h, w, C) -> class capsules (B, num_classes, class_capsule_dim)."""
  num_classes: int
  hidden_capsules: int      # 'paper': the first capsule layer
  hidden_capsule_dim: int
  primary_capsules: int     # 'sabour': primary capsule types per position
  primary_capsule_dim: int
  class_capsule_dim: int
  routing_iterations: int
  variant: str

  @nn.compact
  def __call__(self, features):
    rules = routing_rules(self.variant)
    if rules.share_weights:
      x = features.reshape(features.shape[0], -1, features.shape[-1])
      x = RoutingCapsules(self.hidden_capsules, self.hidden_capsule_dim,
                          self.routing_iterations, self.variant, name="hidden_capsules")(x)
    else:
      x = PrimaryCapsules(self.primary_capsules, self.primary_capsule_dim, kernel_size=3,
                          strides=1, padding="SAME", squash_offset=rules.squash_offset,
                          name="primary_capsules")(features)
    # Sabour's primary capsules from IV3 features are long (|u_i| ~ 0.67) and many (h x w x 32),
    # so the Keras per-capsule Glorot scale saturates the class capsules: count fan-in over
    # all of them (module docstring).
    return RoutingCapsules(self.num_classes, self.class_capsule_dim, self.routing_iterations,
                           self.variant, fan_in_over_inputs=not rules.share_weights,
                           name="class_capsules")(x)


class Model(nn.Module):
  num_classes: int = 2
  width_multiplier: float = 1.0
  blocks: tuple[int, int, int] = (3, 4, 2)
  variant: str = "paper"
  hidden_capsules: int = 32
  hidden_capsule_dim: int = 32
  primary_capsules: int = 32
  primary_capsule_dim: int = 8
  class_capsule_dim: int = 16
  routing_iterations: int = 3
  reconstruction: bool = False
  decoder_widths: tuple[int, ...] = (512, 1024)

  @nn.compact
  def __call__(self, images, train: bool = False):
    features = InceptionV3Features(self.width_multiplier, self.blocks, name="features")(images)
    capsules = CapsuleHead(self.num_classes, self.hidden_capsules, self.hidden_capsule_dim,
                           self.primary_capsules, self.primary_capsule_dim,
                           self.class_capsule_dim, self.routing_iterations, self.variant,
                           name="head")(features)
    reconstructions = None
    if self.reconstruction:
      reconstructions = CapsuleDecoder(images.shape[1:], self.decoder_widths,
                                       name="decoder")(capsules)
    return CapsuleOutputs(capsules, reconstructions, routing_rules(self.variant).objective)
