"""Client-level differential privacy: clipping, Gaussian noise, and the privacy accountant.

Mechanism (the paper's eq. 5 = Geyer et al. 2017): each sampled hospital's update is
clipped to L2 norm S, Δw <- Δw / max(1, ||Δw||_2 / S); the server adds N(0, σ²S²) to the
sum of the m_t clipped updates and divides by m_t.

Accounting: the unit of privacy is one hospital's whole dataset (client-level DP). Each
round samples m_t of H hospitals without replacement, so the neighbouring relation is
REPLACE_ONE (one hospital's data replaced by arbitrary other data): replacing one clipped
update moves the sum by up to 2S. With noise std σS on the sum, the Gaussian mechanism's
noise multiplier relative to that sensitivity is σ/2. Rounds compose in dp_accounting's
RDP accountant; ε is reported at the configured δ.

With the MAE vote (eqs. 14-15, ledger/consensus.py) only the m'_t <= m_t accepted updates
are summed; the noise std stays σS on that sum and the mean divides by m'_t, so the noise on
the average, σS/m'_t, grows as updates are rejected. The accountant charges the m_t SAMPLED,
never m'_t: a hospital can enter the sum only if sampled (probability m_t/H), and which
sampled updates survive depends on the data, so it is not a uniform subsample of size m'_t
that would justify the smaller rate m'_t/H. Replacing one hospital's data still moves the
sum of a fixed accepted set by at most 2S. What ε does NOT cover: the vote itself. The
accept decision, the MAEs and the eq. 15 scores (and, with the vote's update checks on,
each update's pre-clipping norm and its cosine with the median update) are un-noised
functions of the hospitals' updates and validation slices, published on the ledger; under
median+MAD one hospital's update can also move the thresholds and so change which OTHER
updates are summed. ε bounds
the noised aggregate given the accepted set, not what the published votes reveal.
"""
import collections
import math

import dp_accounting
import jax
import jax.numpy as jnp

RDP_ORDERS = tuple([2 + x / 10 for x in range(80)] + list(range(10, 65)) + [128, 256, 512])


def global_norm(tree) -> jax.Array:
  """L2 norm over all leaves, computed on rescaled values so huge updates do not overflow."""
  leaves = jax.tree.leaves(tree)
  scale = jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in leaves]))
  scale = jnp.where(scale > 0, scale, 1.0)
  return scale * jnp.sqrt(sum(jnp.sum(jnp.square(leaf / scale)) for leaf in leaves))


def clip_update(delta, clip_norm: float):
  """Δw / max(1, ||Δw||_2 / S) (eq. 5's clipping) and ||Δw||_2 before clipping."""
  norm = global_norm(delta)
  factor = jnp.minimum(1.0, clip_norm / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny))
  return jax.tree.map(lambda leaf: leaf * factor.astype(leaf.dtype), delta), norm


def gaussian_noise_like(key, tree, std):
  """Independent N(0, std²) for every parameter of `tree`."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  noise = [std * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, noise)


def noisy_mean(clipped_sum, num_accepted, key, noise_multiplier, clip_norm):
  """(Σ clipped Δw + N(0, σ²S²)) / m_t — eq. 5."""
  noise = gaussian_noise_like(key, clipped_sum, noise_multiplier * clip_norm)
  return jax.tree.map(lambda s, n: (s + n) / num_accepted, clipped_sum, noise)


def round_event(num_hospitals: int, per_round: int, noise_multiplier: float):
  """One round as a dp_accounting event (noise multiplier σ/2: sensitivity 2S, see above)."""
  gaussian = dp_accounting.GaussianDpEvent(noise_multiplier / 2.0)
  if per_round == num_hospitals:
    return gaussian
  return dp_accounting.SampledWithoutReplacementDpEvent(num_hospitals, per_round, gaussian)


def epsilon(num_hospitals: int, hospitals_per_round, noise_multiplier: float,
            delta: float) -> float:
  """ε after the rounds whose sampled counts m_t are `hospitals_per_round`, at δ."""
  if not len(hospitals_per_round):
    return 0.0
  if noise_multiplier <= 0:
    return math.inf
  accountant = dp_accounting.rdp.RdpAccountant(
      orders=list(RDP_ORDERS), neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  for m, rounds in sorted(collections.Counter(int(m) for m in hospitals_per_round).items()):
    accountant.compose(round_event(num_hospitals, m, noise_multiplier), rounds)
  return float(accountant.get_epsilon(delta))
