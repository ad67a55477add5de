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
(a diverged model) are always rejected. At least one update with a finite score is always
kept (the lowest score), so a round aggregates nothing only when no score is finite (every
local model diverged): the training loop then stops with an error.

Privacy consequence (eq. 11): the aggregate then sums only the m' accepted clipped
updates, adds noise of std sigma * S to that sum and averages over m'; the per-coordinate
noise on the average is sigma * S / m' and grows when updates are rejected. The
accountant still charges each round as a subsampled Gaussian with m_t sampled, which holds
for the sum over any fixed subset; but the accept decision is an un-noised function of the
hospitals' updates and validation data, published on the ledger with the scores, and under
median+MAD one hospital's update can move the threshold and so change which *other*
updates are summed (sensitivity then exceeds 2S). The reported epsilon therefore covers the
noised aggregate given the accepted set, not the vote itself: an honest, stated gap.

Update checks (an extension, off by default; configs/attack9.py turns them on). Eq. 15
judges what a local model predicts, and a sign-flipped update often predicts no worse than
an honest one (at the start, while every model is near chance, and whenever undoing one
hospital's local fit costs the others little): results/attacks.md measures the vote alone
at 33% of sign-flipped updates rejected. Two checks on the updates themselves, which every
verifier holds because it evaluates the local models, close that gap:
- direction (`direction_k` > 0): the cosine of each update with the coordinate-wise median
  of the round's updates; an update whose cosine is below both median - direction_k * MAD
  of the round's cosines and `direction_cosine` is rejected. The coordinate-wise median
  follows the honest majority (it breaks down only at half the updates), so a flipped
  update points away from it. The second bound spares an honest hospital whose data pull
  its update off the others' median but still along it: in the diagnostic behind
  configs/attack9.py one honest hospital of nine sat at cosine 0.17-0.45 while the others
  were at 0.3-0.9, and median - 2.5 MAD alone rejected it in 7 of 30 rounds; flipped
  updates were at -0.87 to 0.11;
- magnitude (`max_norm_ratio` > 0): an update submitted with a norm above max_norm_ratio
  times the round's median norm is rejected. Clipping already bounds what it can do to the
  aggregate (eq. 5); the check names the hospital on the ledger instead of silently
  shrinking its update.
An update is accepted when its eq. 15 score passes the rule AND it passes the enabled checks.
Both checks are, like the scores, un-noised functions of the updates published on the
ledger; the privacy caveat above covers them too.

Why a hospital was rejected (`rejection_reasons`, one of REASONS per hospital, recorded in
every vote and rechecked by verify): `non_finite_update` when its submitted update holds a
NaN or Inf (its local training diverged or its data hold NaN/Inf: the round never scores,
measures or sums such an update), else the first check it fails in the order `vote_score`
(eq. 15), `direction`, `norm`. A rejection that no check explains on the host (the jitted
vote decided a float32 borderline the other way) is put down to the check whose value lies
nearest its limit.

All functions use jax.numpy only, with no Python control flow on values, so they trace
inside the compiled round and also run eagerly on numpy arrays (verify recomputes them).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

RULES = ("median_mad", "absolute")
ACCEPTED = "accepted"
# A hospital's verdict: accepted, or why it was rejected, in the order rejection_reasons
# picks the reason when several apply.
REJECTIONS = ("non_finite_update", "vote_score", "direction", "norm")
REASONS = (ACCEPTED,) + REJECTIONS


@dataclasses.dataclass(frozen=True)
class ConsensusRule:
  """The vote's parameters, recorded by each round's leader so that verify can recheck it."""
  gamma: float = 0.5
  rule: str = "median_mad"
  k: float = 3.0
  absolute_threshold: float = 0.5
  mad_floor: float = 1e-3
  direction_k: float = 0.0     # > 0: the direction check (module docstring); 0: off
  direction_cosine: float = 0.2  # the direction check rejects only cosines below this too
  max_norm_ratio: float = 0.0  # > 0: the magnitude check; 0: off

  @property
  def checks_updates(self) -> bool:
    return self.direction_k > 0 or self.max_norm_ratio > 0

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
                absolute_threshold: float = 0.5, mad_floor: float = 1e-3, passes_checks=None):
  """Boolean [num_sampled]: True where the update enters the aggregate (see module docstring).

  `rule` is static (a Python string); everything that depends on the scores is traced.
  passes_checks: boolean [num_sampled] from `update_checks`, or None (no checks). When
  nothing is accepted, the lowest score among the updates that pass the checks is kept (or
  the lowest overall if none passes them); with no finite score, nothing is.
  """
  scores = jnp.asarray(scores, jnp.float32)
  finite = jnp.isfinite(scores)
  checked = finite if passes_checks is None else finite & jnp.asarray(passes_checks, bool)
  accepted = checked & (scores <= rejection_threshold(scores, rule, k, absolute_threshold,
                                                      mad_floor))
  fallback = jnp.where(jnp.any(checked), checked, finite)
  best = jnp.argmin(jnp.where(fallback, scores, jnp.inf))
  keep_best = (jnp.arange(scores.shape[0]) == best) & jnp.any(finite)  # never a diverged one
  return accepted | (~jnp.any(accepted) & keep_best)


def decide(scores, norms, cosines, rule: ConsensusRule):
  """The round's accept mask under `rule`: eq. 15 scores and, if enabled, the update checks.

  norms: the submitted updates' norms (before clipping); cosines: `median_cosines`; either
  may be None when its check is off. NaN entries (padding) never pass a check and are
  ignored by its median.
  """
  passes = update_checks(norms, cosines, rule) if rule.checks_updates else None
  return accept_mask(scores, rule.rule, rule.k, rule.absolute_threshold, rule.mad_floor, passes)


def median_cosines(updates, real):
  """Cosine of each update with the coordinate-wise median of the real ones.

  updates: a pytree whose leaves have a leading update axis [n, ...]; real: boolean [n],
  False for padding (NaN cosine). jax.numpy only: it traces inside the compiled round.
  """
  real = jnp.asarray(real, bool)
  flat = jnp.concatenate([leaf.reshape(leaf.shape[0], -1).astype(jnp.float32)
                          for leaf in jax.tree.leaves(updates)], axis=1)
  reference = jnp.nanmedian(jnp.where(real[:, None], flat, jnp.nan), axis=0)
  norms = jnp.linalg.norm(flat, axis=1) * jnp.linalg.norm(reference)
  cosines = flat @ reference / jnp.maximum(norms, jnp.finfo(jnp.float32).tiny)
  return jnp.where(real, cosines, jnp.nan)


def check_thresholds(norms, cosines, rule: ConsensusRule):
  """(largest norm that passes, smallest cosine that passes); inf and -inf for a check that is off."""
  max_norm, min_cosine = jnp.float32(jnp.inf), jnp.float32(-jnp.inf)
  if rule.max_norm_ratio > 0:
    max_norm = rule.max_norm_ratio * jnp.nanmedian(jnp.asarray(norms, jnp.float32))
  if rule.direction_k > 0:
    cosines = jnp.asarray(cosines, jnp.float32)
    median = jnp.nanmedian(cosines)
    mad = jnp.nanmedian(jnp.abs(cosines - median))
    min_cosine = jnp.minimum(median - rule.direction_k * jnp.maximum(mad, rule.mad_floor),
                             jnp.float32(rule.direction_cosine))
  return max_norm, min_cosine


def update_checks(norms, cosines, rule: ConsensusRule):
  """Boolean [n]: True where an update passes the direction and magnitude checks `rule` enables."""
  max_norm, min_cosine = check_thresholds(norms, cosines, rule)
  passes = jnp.ones(jnp.shape(norms if norms is not None else cosines), bool)
  if rule.max_norm_ratio > 0:
    norms = jnp.asarray(norms, jnp.float32)
    passes &= jnp.isfinite(norms) & (norms <= max_norm)
  if rule.direction_k > 0:
    cosines = jnp.asarray(cosines, jnp.float32)
    passes &= jnp.isfinite(cosines) & (cosines >= min_cosine)
  return passes


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


def rejection_reasons(scores, norms, cosines, finite, rule: ConsensusRule | None,
                      accepted) -> list[str]:
  """Each hospital's verdict, one of REASONS (module docstring): host side, numpy in, strings out.

  scores, norms, cosines: what `decide` read (norms, cosines may be None, or NaN where not
  measured, when their check is off); finite: boolean [n], False where the submitted update
  holds a NaN or Inf; accepted: the round's decision. Entries of a non-finite update are
  ignored, as the round ignores them. rule None (a round without a vote, every finite update
  accepted): `non_finite_update` is the only reason.
  """
  accepted = np.asarray(accepted, bool)
  finite = np.asarray(finite, bool)
  n = accepted.shape[0]
  if rule is None:
    return [ACCEPTED if keep else REJECTIONS[0] if not ok else "vote_score"
            for keep, ok in zip(accepted, finite)]

  def masked(values):
    values = np.full(n, np.nan) if values is None else np.asarray(values, np.float64)
    return np.where(finite, values, np.nan).astype(np.float32)

  scores, norms, cosines = masked(scores), masked(norms), masked(cosines)
  threshold = float(rejection_threshold(scores, rule.rule, rule.k, rule.absolute_threshold,
                                        rule.mad_floor))
  max_norm, min_cosine = (float(t) for t in check_thresholds(norms, cosines, rule))

  def margin(excess, limit):  # > 0: the check fails; NaN (not finite) fails outright
    return np.where(np.isfinite(excess), excess / (1 + abs(limit)), np.inf)

  margins = {"vote_score": margin(scores.astype(np.float64) - threshold, threshold)}
  if rule.direction_k > 0:
    margins["direction"] = margin(min_cosine - cosines.astype(np.float64), min_cosine)
  if rule.max_norm_ratio > 0:
    margins["norm"] = margin(norms.astype(np.float64) - max_norm, max_norm)
  reasons = []
  for i in range(n):
    if accepted[i]:
      reasons.append(ACCEPTED)
    elif not finite[i]:
      reasons.append(REJECTIONS[0])
    else:
      failing = [name for name, m in margins.items() if m[i] > 0]
      reasons.append(failing[0] if failing else max(margins, key=lambda name: margins[name][i]))
  return reasons
