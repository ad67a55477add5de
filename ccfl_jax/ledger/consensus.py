"""Consensus by MAE vote (paper eqs. 14-15): which local updates enter a round's aggregate.

Eq. 14 is the mean absolute error of a model's predicted COVID probability f(x) against
the label y over a validation batch: MAE(m) = 1/n sum |y - f(x)|.

Eq. 15 scores the local model m_j of hospital j as

    MAE(H_j) = gamma * MAE(m_j) + (1/n) sum_i MAE(m_i).

The paper leaves the terms loosely defined; this module reads them as follows.
- MAE(m_j): hospital j's own local validation MAE (eq. 14 on its own batch), reported by
  j in its `local_update` transaction: `self_mae[j]`. gamma weighs it ("the global model's
  weight" in the text).
- (1/n) sum_i MAE(m_i): the mean, over the n verifiers i of the round, of the MAE that
  verifier i measures when it runs m_j on its own validation batch: the mean of row j of
  the cross-evaluation matrix, `mae_matrix[j, i]`.
The literal alternative, a mean over all local models that is the same for every j,
shifts every score equally: it could never change a median+MAD decision and would leave
the vote ranked purely by self-reported MAE, which the author controls. Reading the sum
as the verifier panel's measurement is what lets the vote catch a poisoned update.
gamma = 0 ignores self-reports altogether (the robust choice against a lying author).

A score above a threshold is rejected: `median_mad` rejects score > median + k * MAD
(MAD = median |score - median|, floored at `mad_floor` so that near-identical scores are
not rejected for rounding noise); `absolute` rejects score > threshold. Non-finite scores
(a diverged model) are always rejected. At least one update is always kept (the lowest
score), so a round never aggregates nothing.

Privacy consequence (eq. 11): the aggregate then sums only the m' accepted clipped
updates, adds noise of std sigma * S to that sum and averages over m'; the per-coordinate
noise on the average is sigma * S / m' and grows when updates are rejected. The
accountant still charges each round as a subsampled Gaussian with m_t sampled, which holds
for the sum over any fixed subset; but the accept decision is an un-noised function of the
hospitals' updates and validation data, published on the ledger with the scores, and under
median+MAD one hospital's update can move the threshold and so change which *other*
updates are summed (sensitivity then exceeds 2S). The reported epsilon therefore covers the
noised aggregate given the accepted set, not the vote itself: an honest, stated gap.

Both functions use jax.numpy only, with no Python control flow on values, so they trace
inside the compiled round and also run eagerly on numpy arrays (verify recomputes them).
"""
import dataclasses

import jax.numpy as jnp

RULES = ("median_mad", "absolute")


@dataclasses.dataclass(frozen=True)
class ConsensusRule:
  """The vote's parameters, recorded by each round's leader so that verify can recheck it."""
  gamma: float = 0.5
  rule: str = "median_mad"
  k: float = 3.0
  absolute_threshold: float = 0.5
  mad_floor: float = 1e-3

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def vote_scores(mae_matrix, self_mae, gamma):
  """Eq. 15 for every sampled hospital j: gamma * self_mae[j] + mean_i mae_matrix[j, i].

  mae_matrix: [num_sampled, num_verifiers], eq. 14 of local model j on verifier i's batch.
  self_mae: [num_sampled], eq. 14 of local model j on hospital j's own batch.
  """
  mae_matrix = jnp.asarray(mae_matrix, jnp.float32)
  return gamma * jnp.asarray(self_mae, jnp.float32) + jnp.mean(mae_matrix, axis=1)


def accept_mask(scores, rule: str = "median_mad", k: float = 3.0,
                absolute_threshold: float = 0.5, mad_floor: float = 1e-3):
  """Boolean [num_sampled]: True where the update enters the aggregate (see module docstring).

  `rule` is static (a Python string); everything that depends on the scores is traced.
  """
  scores = jnp.asarray(scores, jnp.float32)
  finite = jnp.isfinite(scores)
  accepted = finite & (scores <= rejection_threshold(scores, rule, k, absolute_threshold,
                                                     mad_floor))
  best = jnp.argmin(jnp.where(finite, scores, jnp.inf))
  keep_best = jnp.arange(scores.shape[0]) == best
  return accepted | (~jnp.any(accepted) & keep_best)


def rejection_threshold(scores, rule: str = "median_mad", k: float = 3.0,
                        absolute_threshold: float = 0.5, mad_floor: float = 1e-3):
  """The score above which an update is rejected (non-finite scores ignored)."""
  if rule not in RULES:
    raise ValueError(f"consensus rule {rule!r}: expected one of {RULES}")
  scores = jnp.asarray(scores, jnp.float32)
  if rule == "absolute":
    return jnp.float32(absolute_threshold)
  finite_or_nan = jnp.where(jnp.isfinite(scores), scores, jnp.nan)
  median = jnp.nanmedian(finite_or_nan)
  mad = jnp.nanmedian(jnp.abs(finite_or_nan - median))
  return median + k * jnp.maximum(mad, mad_floor)
