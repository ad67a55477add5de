"""Sabour, Frosst and Hinton's CapsNet (2017), width and input size configurable.

Conv (256 9x9, ReLU) -> PrimaryCapsules (32 types x 8D, 9x9 stride 2) -> class capsules
(num_classes x 16D, routed by agreement, the paper's eqs. 1-4 and Algorithm 1) -> optional
reconstruction decoder (512, 1024, pixels). At 28x28x1 with 10 classes it has Sabour's
8,215,568 parameters. The input size is whatever images the model is given (the decoder
reconstructs that size); at least 2 x kernel + 1 pixels. `variant` picks the routing rules
and objective ('sabour' or 'paper', see `ccfl_jax.models.layers.capsule`).

Class probabilities are the class-capsule lengths normalized over classes.
"""
import flax.linen as nn

from ccfl_jax.models.layers.capsule import (CapsuleDecoder, CapsuleOutputs, PrimaryCapsules,
                                            RoutingCapsules, capsule_loss, capsule_probabilities,
                                            routing_rules)

loss = capsule_loss
probabilities = capsule_probabilities

TINY_KWARGS = dict(conv_features=8, conv_kernel=5, primary_capsules=4, primary_capsule_dim=4,
                   primary_kernel=5, class_capsule_dim=4, decoder_widths=(16, 32))


class Model(nn.Module):
  num_classes: int = 2
  conv_features: int = 256
  conv_kernel: int = 9
  primary_capsules: int = 32          # capsule types per position
  primary_capsule_dim: int = 8
  primary_kernel: int = 9
  primary_strides: int = 2
  class_capsule_dim: int = 16
  routing_iterations: int = 3
  variant: str = "sabour"
  reconstruction: bool = True
  decoder_widths: tuple[int, ...] = (512, 1024)

  @nn.compact
  def __call__(self, images, train: bool = False):
    rules = routing_rules(self.variant)
    x = nn.Conv(self.conv_features, (self.conv_kernel, self.conv_kernel), padding="VALID",
                name="conv")(images)
    x = PrimaryCapsules(self.primary_capsules, self.primary_capsule_dim, self.primary_kernel,
                        self.primary_strides, squash_offset=rules.squash_offset,
                        name="primary_capsules")(nn.relu(x))
    capsules = RoutingCapsules(self.num_classes, self.class_capsule_dim,
                               self.routing_iterations, self.variant,
                               name="class_capsules")(x)
    reconstructions = None
    if self.reconstruction:
      reconstructions = CapsuleDecoder(images.shape[1:], self.decoder_widths,
                                       name="decoder")(capsules)
    return CapsuleOutputs(capsules, reconstructions, rules.objective)
