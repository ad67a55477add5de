"""Capsule layers with dynamic routing by agreement (Sabour, Frosst and Hinton 2017).

The paper (Kumar et al.) classifies Inception-V3 features with capsule layers: prediction
vectors u_hat_{j|i} = W_ij u_i (eq. 1), weighted sums s_j = sum_i c_ij u_hat_{j|i} (eq. 2)
with coupling coefficients c_ij = softmax_j(b_ij) (eq. 3), squashed into v_j (eq. 4), the
routing logits b_ij refined by agreement u_hat_{j|i} . v_j for r iterations (Algorithm 1).

Two variants, chosen by name (`variant='sabour'` or `'paper'`):

  * 'sabour': Sabour et al. as published. squash(s) = |s|^2/(1+|s|^2) s/|s|; logits
    accumulated, b_ij += u_hat_{j|i} . v_j (Algorithm 1, line 5); one matrix W_ij per
    (input, output) capsule pair (eq. 1); margin loss (m+ = 0.9, m- = 0.1, lambda = 0.5)
    plus, optionally, 0.0005 x the reconstruction error of a decoder.
  * 'paper': the capsule head of Kumar et al.'s public Keras code (not available here;
    implemented from its description, which matches the widely copied Keras `Capsule`
    layer it builds on). Differences from 'sabour', each a rule below:
      - squash with 0.5 in place of 1: |s|^2/(0.5+|s|^2) s/|s| (lengths approach 1 faster);
      - routing logits reset each iteration, b_ij = u_hat_{j|i} . v_j (not accumulated);
      - one W_j shared by every input capsule: u_hat_{j|i} = W_j u_i, so the parameter
        count does not grow with the number of input capsules;
      - trained with cross-entropy on the capsule lengths (normalized over classes, as
        Keras' categorical cross-entropy normalizes its inputs), not the margin loss.
    The model layout of the paper (two capsule layers, 32 x 32D then 2 x 16D, 3 routings
    each) lives in `ccfl_jax.models.iv3_capsule`.

    Its capsule lengths start saturated (0.86-0.97 for every class on the digits
    benchmark). That is the described layer, not a slip here: the Keras layer computes
    u_hat with a kernel-size-1 conv1d (one W for all inputs), Glorot-uniform with fan-in
    D_in and fan-out N_out x D_out (as here), and sums c_ij u_hat over all N_in inputs with
    no 1/N_in, so correlated inputs give |s_j| ~ N_in/N_out and the 0.5-squash ~1. Kept as
    described; it trains at a lower Adam learning rate (digits: 0.83 at 3e-4, chance at
    3e-3; results/capsule_digits.md).

Gradients flow through every routing iteration in both variants (as in Sabour's code and
the Keras layer). The routing loop has a fixed trip count and is unrolled: r is 1-3 and an
unrolled loop fuses better on XLA:CPU than a while loop.
"""
import dataclasses
import math

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

SQUASH_EPSILON = 1e-7
MARGIN_POSITIVE = 0.9   # m+
MARGIN_NEGATIVE = 0.1   # m-
MARGIN_DOWN_WEIGHT = 0.5  # lambda, for absent classes
RECONSTRUCTION_WEIGHT = 0.0005


@dataclasses.dataclass(frozen=True)
class RoutingRules:
  """What distinguishes the two variants (see the module docstring)."""
  squash_offset: float      # the 1 in eq. 4's denominator
  accumulate_logits: bool   # b += u_hat . v (Algorithm 1) or b = u_hat . v
  share_weights: bool       # W_j for all inputs, or W_ij per pair (eq. 1)
  objective: str            # 'margin' | 'cross_entropy'


VARIANTS = {
    "sabour": RoutingRules(squash_offset=1.0, accumulate_logits=True, share_weights=False,
                           objective="margin"),
    "paper": RoutingRules(squash_offset=0.5, accumulate_logits=False, share_weights=True,
                          objective="cross_entropy"),
}


def routing_rules(variant: str) -> RoutingRules:
  if variant not in VARIANTS:
    raise ValueError(f"capsule variant {variant!r}: choose one of {', '.join(VARIANTS)}")
  return VARIANTS[variant]


def squash(vectors: jax.Array, offset: float = 1.0, axis: int = -1) -> jax.Array:
  """Eq. 4: |s|^2/(offset+|s|^2) s/|s|; length in [0, 1), value and gradient finite at 0."""
  squared_norm = jnp.sum(jnp.square(vectors), axis=axis, keepdims=True)
  scale = squared_norm / (offset + squared_norm) / jnp.sqrt(squared_norm + SQUASH_EPSILON)
  return scale * vectors


def capsule_lengths(capsules: jax.Array) -> jax.Array:
  """|v_j| over the last axis, with a gradient that stays finite at v_j = 0."""
  return jnp.sqrt(jnp.sum(jnp.square(capsules), axis=-1) + SQUASH_EPSILON)


def route(predictions: jax.Array, iterations: int, rules: RoutingRules):
  """Algorithm 1 on prediction vectors u_hat (B, N_in, N_out, D).

  Returns the output capsules v (B, N_out, D) and the coupling coefficients c
  (B, N_in, N_out) of the last iteration. Logits b are per example.
  """
  num_outputs = predictions.shape[2]
  logits = None
  for iteration in range(iterations):
    if iteration == 0:
      # b = 0 (line 1), so eq. 3 couples uniformly. Written out rather than softmax(zeros):
      # XLA would constant-fold that softmax over the whole (B, N_in, N_out) array, which
      # takes seconds of compile time.
      coupling = jnp.full(predictions.shape[:-1], 1.0 / num_outputs, predictions.dtype)
      total = jnp.sum(predictions, axis=1) / num_outputs                       # eq. 2
    else:
      coupling = jax.nn.softmax(logits, axis=-1)                               # eq. 3
      total = jnp.einsum("bij,bijd->bjd", coupling, predictions)               # eq. 2
    outputs = squash(total, rules.squash_offset)                               # eq. 4
    if iteration < iterations - 1:
      agreement = jnp.einsum("bijd,bjd->bij", predictions, outputs)
      accumulate = rules.accumulate_logits and logits is not None
      logits = logits + agreement if accumulate else agreement                 # line 5
  return outputs, coupling


class PrimaryCapsules(nn.Module):
  """A convolution whose channels are grouped into capsules and squashed (Sabour, Sec. 4).

  (B, H, W, C) -> (B, H' * W' * num_capsules, capsule_dim).
  """
  num_capsules: int          # capsule types per position
  capsule_dim: int
  kernel_size: int = 9
  strides: int = 2
  padding: str = "VALID"
  squash_offset: float = 1.0

  @nn.compact
  def __call__(self, features):
    x = nn.Conv(self.num_capsules * self.capsule_dim, (self.kernel_size, self.kernel_size),
                strides=self.strides, padding=self.padding, name="conv")(features)
    x = x.reshape(x.shape[0], -1, self.capsule_dim)
    return squash(x, self.squash_offset)


class RoutingCapsules(nn.Module):
  """Capsules routed by agreement from input capsules (eqs. 1-4, Algorithm 1).

  (B, N_in, D_in) -> (B, num_capsules, capsule_dim). Weights are Glorot-uniform per
  input capsule (fan-in D_in, fan-out num_capsules x capsule_dim), the Keras default.

  `fan_in_over_inputs` (per-pair W_ij only) counts fan-in over all inputs, N_in x D_in, as
  for one dense map from every input capsule to s_j. Why: with independent W_ij, |s_j| grows
  ~ sqrt(N_in) x |u_i|, and with long primary capsules it lands deep in the squash's flat
  region (|v_j| 0.98-0.99 for every image, d|v|/d|s| ~ 2/|s|^3), where the margin loss
  cannot move it (see `ccfl_jax.models.iv3_capsule`).
  """
  num_capsules: int
  capsule_dim: int
  routing_iterations: int = 3
  variant: str = "sabour"
  fan_in_over_inputs: bool = False

  @nn.compact
  def __call__(self, capsules):
    rules = routing_rules(self.variant)
    num_inputs, input_dim = capsules.shape[-2:]
    shape = (input_dim, self.num_capsules, self.capsule_dim)
    if rules.share_weights:
      init = nn.initializers.glorot_uniform(in_axis=0, out_axis=(1, 2))
      weights = self.param("weights", init, shape)
      predictions = jnp.einsum("bid,dje->bije", capsules, weights)           # eq. 1, W_j
    else:
      if self.fan_in_over_inputs:
        init = nn.initializers.glorot_uniform(in_axis=(0, 1), out_axis=(2, 3))
      else:
        init = nn.initializers.glorot_uniform(in_axis=1, out_axis=(2, 3), batch_axis=0)
      weights = self.param("weights", init, (num_inputs, *shape))
      predictions = jnp.einsum("bid,idje->bije", capsules, weights)          # eq. 1, W_ij
    outputs, _ = route(predictions, self.routing_iterations, rules)
    return outputs


class CapsuleDecoder(nn.Module):
  """Reconstructs the image from each class's masked capsule (Sabour, Sec. 4.1).

  Sabour masks all but the true class's capsule while training. `Model.__call__` gets no
  labels, so this decodes every class's masked capsule, (B, K, K*D) -> (B, K, H, W, C), and
  the loss keeps the true class's reconstruction: the same objective.
  """
  image_shape: tuple[int, int, int]
  widths: tuple[int, ...] = (512, 1024)

  @nn.compact
  def __call__(self, capsules):
    batch, num_classes, _ = capsules.shape
    only_class = jnp.eye(num_classes, dtype=capsules.dtype)[None, :, :, None]
    x = (only_class * capsules[:, None]).reshape(batch, num_classes, -1)
    for i, width in enumerate(self.widths):
      x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
    x = nn.sigmoid(nn.Dense(math.prod(self.image_shape), name="pixels")(x))
    return x.reshape(batch, num_classes, *self.image_shape)


@flax.struct.dataclass
class CapsuleOutputs:
  """What a capsule model returns: a pytree whose training objective is static metadata."""
  capsules: jax.Array                       # (B, K, D) class capsules v_j
  reconstructions: jax.Array | None = None  # (B, K, H, W, C), one per class's masked capsule
  objective: str = flax.struct.field(pytree_node=False, default="margin")


def margin_loss(lengths: jax.Array, labels: jax.Array) -> jax.Array:
  """Sabour's eq. 4: sum_k T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k) max(0, |v_k| - m-)^2."""
  present = jax.nn.one_hot(labels, lengths.shape[-1], dtype=lengths.dtype)
  loss_present = present * jnp.square(jax.nn.relu(MARGIN_POSITIVE - lengths))
  loss_absent = (1 - present) * jnp.square(jax.nn.relu(lengths - MARGIN_NEGATIVE))
  return jnp.sum(loss_present + MARGIN_DOWN_WEIGHT * loss_absent, axis=-1)


def length_cross_entropy(lengths: jax.Array, labels: jax.Array) -> jax.Array:
  """Keras' categorical cross-entropy on capsule lengths (normalized, clipped), per example."""
  probabilities = jnp.clip(lengths / jnp.sum(lengths, axis=-1, keepdims=True),
                           SQUASH_EPSILON, 1 - SQUASH_EPSILON)
  return -jnp.take_along_axis(jnp.log(probabilities), labels[:, None], axis=-1)[:, 0]


def reconstruction_error(reconstructions: jax.Array, images: jax.Array,
                         labels: jax.Array) -> jax.Array:
  """Sum of squared pixel errors of the true class's reconstruction, per example."""
  chosen = jnp.take_along_axis(reconstructions, labels[:, None, None, None, None], axis=1)[:, 0]
  return jnp.sum(jnp.square(chosen - images), axis=(1, 2, 3))


def capsule_loss(outputs: CapsuleOutputs, images: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example loss: margin or length cross-entropy, + 0.0005 x reconstruction error."""
  lengths = capsule_lengths(outputs.capsules)
  if outputs.objective == "margin":
    loss = margin_loss(lengths, labels)
  else:
    loss = length_cross_entropy(lengths, labels)
  if outputs.reconstructions is not None:
    loss = loss + RECONSTRUCTION_WEIGHT * reconstruction_error(outputs.reconstructions, images,
                                                               labels)
  return loss


def capsule_probabilities(outputs: CapsuleOutputs) -> jax.Array:
  """Class probabilities: capsule lengths normalized to sum to 1 over classes.

  Normalized so that the engine's 0.5 threshold on P(COVID) is the argmax-of-lengths rule
  both variants predict with, and so that the 'paper' variant reports exactly what its
  cross-entropy trains. AUC ranks by |v_1| / (|v_0| + |v_1|).
  """
  lengths = capsule_lengths(outputs.capsules)
  return lengths / jnp.sum(lengths, axis=-1, keepdims=True)
