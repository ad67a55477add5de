"""How the server combines a round's clipped updates: the mean of eq. 5 and robust rules.

Every rule reads the round's updates stacked on a leading axis (`deltas`, a pytree of
[m, ...] leaves, each row clipped to S by the server, eq. 5) with `weights` [m]: 0 for a
padding row or a rejected update, which never influences the result. `aggregate` returns
(total, denominator): the server's update is total / denominator, and the Gaussian noise of
eq. 5 is added to `total` before the division (privacy.noisy_mean(total, denominator, ...)).
Rules (`aggregation.rule`):
- mean: sum of w_i Δ_i over sum of w_i (today's rule; the only one that uses weight values,
  the robust rules read weights > 0 as a mask, which is all the engine passes: 0 or 1);
- median: coordinate-wise median (Yin et al. 2018);
- trimmed_mean: coordinate-wise mean after removing the b = floor(beta * n) largest and b
  smallest values of each coordinate, n the number of updates (Yin et al. 2018);
- krum: the update with the lowest score, the sum of squared distances to its n - f - 2
  nearest other updates (Blanchard et al. 2017; k = n - f - 2 clamped to [1, n - 1], Krum's
  guarantee needs n > 2f + 2);
- multi_krum: the mean of the n - f updates with the lowest Krum scores (Blanchard et al.
  2017, scores computed once, as in the paper's definition);
- norm_bound: each update clipped to L2 norm `norm_bound`, then the mean (Sun et al. 2019,
  "Can you really backdoor federated learning?").

Differential privacy (privacy.py). The accountant assumes the noised quantity has
REPLACE_ONE L2 sensitivity <= 2S: replacing one hospital's data (hence its clipped update)
moves it by at most 2S, and it carries noise of std sigma * S. Each rule's `total` is chosen
so that this holds; `denominator` only rescales after the noise. The bounds:
- mean: total = sum of clipped updates: one replaced update moves it by ||Δ' - Δ|| <= 2S
  (eq. 5). Noise on the update: sigma * S / n.
- norm_bound: the sum of updates clipped to min(norm_bound, S): sensitivity 2 min(B, S)
  <= 2S (over-noised when B < S). Noise on the update: sigma * S / n.
- trimmed_mean and median: total = the coordinate-wise TRIMMED SUM (sum of the sorted
  positions b .. n - b - 1 of each coordinate; the median is the trimmed sum with
  b = floor((n - 1) / 2), one middle value for odd n, two for even), denominator n - 2b.
  Claim: |ΔT_k| <= |x'_k - x_k| for every coordinate k. Proof: each order statistic of
  a coordinate is non-decreasing in each input value, so replacing x_k by x'_k > x_k moves
  every order statistic by some Δ_j >= 0, and the Δ_j sum to x'_k - x_k (the sum of all
  order statistics is the sum of the values); any subset of them, the trimmed positions
  included, sums to a value in [0, x'_k - x_k] (symmetrically for x'_k < x_k). Summing
  squares over coordinates, ||ΔT||_2 <= ||x' - x||_2 <= 2S. So the trimmed sum is exactly
  as private as the sum, and the noise on the update is sigma * S / (n - 2b): for the
  median of an odd number of updates, sigma * S itself, n times the mean's.
- krum and multi_krum: the selection can change when one update is replaced, and a
  replacement can swap several updates in or out of Multi-Krum's set, so the SUM of the
  selected updates has sensitivity up to 2(n - f)S. But the output (Krum: one input update;
  Multi-Krum: the mean of selected inputs) always lies in the ball of radius S, so any two
  outputs differ by <= 2S whatever the data: total = the output itself, denominator 1, and
  the noise on the update is sigma * S, n times the mean's at the same epsilon.
No rule is refused: each has a bound that the accountant's 2S covers. `noise_on_update`
gives the resulting noise std so that a report can show the utility price. What epsilon does
not cover, as for the vote (privacy.py): the accepted set is taken as given, and WHICH
updates Krum or Multi-Krum select is an un-noised function of the updates. The run records
it (metrics.jsonl `aggregated`, whose line each ledger block hashes), so that an auditor
knows which accepted updates the global model is made of; like the vote's published MAEs
and scores, that record is outside epsilon. The ledger's accept decisions stay the vote's.

In the round (federated/engine.py) a rule reads the vote's accepted updates only: a
rejected update has weight 0, exactly like padding. With the default rule, mean, the
engine keeps its own sharded sum (engine._weighted_sum under shard_map), so its numbers are
those of the round before the rules existed.

Under the local Laplace mechanism (privacy.mechanism = laplace_local) the rows are the
hospitals' noised submissions and no noise is added here: every rule is post-processing of
pure-DP releases, and the sensitivity bounds above are not needed (privacy.py, "In the
round", says which rules suit noised rows; norm_bound is refused there).

All functions are jax.numpy with no Python control flow on values (the rule is static): they
trace inside the compiled round.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp

from ccfl_jax.federated import privacy

RULES = ("mean", "median", "trimmed_mean", "krum", "multi_krum", "norm_bound")

# aggregation.rule -> why its `total` has REPLACE_ONE sensitivity <= 2S (module docstring).
SENSITIVITY = {
    "mean": "sum of updates clipped to S: one replaced update moves it by <= 2S",
    "norm_bound": "sum of updates clipped to min(norm_bound, S): sensitivity <= 2 min(B, S)",
    "median": "coordinate-wise trimmed sum of the middle value(s): per coordinate it moves by "
              "no more than the replaced value, so by <= 2S in L2",
    "trimmed_mean": "coordinate-wise trimmed sum: per coordinate it moves by no more than the "
                    "replaced value, so by <= 2S in L2",
    "krum": "the output is one clipped input update (norm <= S): any two outputs differ by <= 2S",
    "multi_krum": "the output is a mean of clipped input updates (norm <= S): any two outputs "
                  "differ by <= 2S; noise is added to the mean, not to the selected sum",
}


@dataclasses.dataclass(frozen=True)
class AggregationRule:
  name: str = "mean"
  beta: float = 0.1        # trimmed_mean: fraction of each coordinate trimmed at each end
  f: int = 0               # krum / multi_krum: the number of Byzantine updates tolerated
  norm_bound: float = 0.0  # norm_bound: the L2 bound on each update (> 0)

  def __post_init__(self):
    if self.name not in RULES:
      raise ValueError(f"aggregation.rule {self.name!r}: expected one of {RULES}")
    if not 0.0 <= self.beta < 0.5:
      raise ValueError(f"aggregation.beta {self.beta}: expected 0 <= beta < 0.5")
    if self.f < 0:
      raise ValueError(f"aggregation.f {self.f}: expected >= 0")
    if self.name == "norm_bound" and not self.norm_bound > 0:
      raise ValueError(f"aggregation.norm_bound {self.norm_bound}: the norm_bound rule needs "
                       "a bound > 0")

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def check_privacy_compatible(rule: AggregationRule, noise_multiplier: float) -> str:
  """Why the accountant's epsilon holds for `rule`; a ValueError naming aggregation.rule if not.

  With noise_multiplier 0 there is nothing to account for and every rule is accepted.
  """
  if noise_multiplier < 0:
    raise ValueError(f"privacy.noise_multiplier {noise_multiplier}: expected >= 0")
  if noise_multiplier > 0 and rule.name not in SENSITIVITY:
    raise ValueError(f"aggregation.rule {rule.name!r} has no sensitivity bound under eq. 5's "
                     f"accounting: run it with privacy.noise_multiplier = 0 or use one of "
                     f"{tuple(SENSITIVITY)}")
  return SENSITIVITY.get(rule.name, "no noise: nothing to account")


def noise_on_update(rule: AggregationRule, num_updates: int, noise_multiplier: float,
                    clip_norm: float) -> float:
  """Per-coordinate std of the DP noise on the server's update for n = num_updates aggregated."""
  n = num_updates
  if rule.name in ("krum", "multi_krum"):
    denominator = 1
  elif rule.name == "median":
    denominator = n - 2 * ((n - 1) // 2)
  elif rule.name == "trimmed_mean":
    denominator = n - 2 * trim_count(rule.beta, n)
  else:
    denominator = n
  return noise_multiplier * clip_norm / max(denominator, 1)


def trim_count(beta: float, n: int) -> int:
  """b = floor(beta * n) in float64, as scipy.stats.trim_mean (float32 floors 0.35 x 20 to 6)."""
  return int(math.floor(beta * n))


def _trim_table(beta: float, size: int):
  """trim_count for every n in 0 .. size, to index with the traced n."""
  return jnp.asarray([trim_count(beta, n) for n in range(size + 1)], jnp.int32)


def _rows(mask, leaf):
  """A [m] mask broadcast against a [m, ...] leaf."""
  return mask.reshape((-1,) + (1,) * (leaf.ndim - 1))


def weighted_sum(deltas, weights):
  """sum_i w_i Δ_i per leaf (eq. 5's sum); rows of weight 0 are left out, so a non-finite
  rejected update (0 x NaN = NaN) cannot poison the sum."""
  def leaf_sum(d):
    kept = (weights > 0).reshape((-1,) + (1,) * (d.ndim - 1))
    return jnp.tensordot(weights, jnp.where(kept, d, 0), axes=1)
  return jax.tree.map(leaf_sum, deltas)


def pairwise_sq_distances(deltas):
  """[m, m] squared L2 distances between the stacked updates (over all leaves), exact.

  One row at a time (lax.map) rather than through a Gram matrix, whose |a|² + |b|² - 2ab
  loses the small distances between similar updates to float32 cancellation; memory m x d.
  """
  leaves = jax.tree.leaves(deltas)

  def row(one):
    return sum(jnp.sum(jnp.square(leaf - r).reshape(leaf.shape[0], -1).astype(jnp.float32),
                       axis=1) for leaf, r in zip(leaves, jax.tree.leaves(one)))

  return jax.lax.map(row, deltas)


def trimmed_sum(deltas, real, trim):
  """Per coordinate, the sum of the sorted real values at positions trim .. n - trim - 1.

  real: bool [m] (padding False); trim: int, traced. Padding sorts last (+inf) and is never
  inside the window.
  """
  n = jnp.sum(real)

  def leaf_fn(d):
    ordered = jnp.sort(jnp.where(_rows(real, d), d, jnp.inf), axis=0)
    position = _rows(jnp.arange(d.shape[0]), d)
    window = (position >= trim) & (position < n - trim)
    return jnp.sum(jnp.where(window, ordered, 0), axis=0)

  return jax.tree.map(leaf_fn, deltas)


def krum_scores(deltas, real, f: int):
  """Blanchard et al. 2017: the sum of squared distances to the n - f - 2 nearest (padding: inf)."""
  real = jnp.asarray(real, bool)
  m = real.shape[0]
  n = jnp.sum(real)
  k = jnp.clip(n - f - 2, 1, n - 1)
  pair = real[:, None] & real[None, :] & ~jnp.eye(m, dtype=bool)
  nearest = jnp.sort(jnp.where(pair, pairwise_sq_distances(deltas), jnp.inf), axis=1)
  scores = jnp.sum(jnp.where(jnp.arange(m)[None, :] < k, nearest, 0), axis=1)
  return jnp.where(real, scores, jnp.inf)


def multi_krum_selection(deltas, real, f: int):
  """Bool [m]: the n - f real updates with the lowest Krum scores (ties to the lower index)."""
  real = jnp.asarray(real, bool)
  scores = krum_scores(deltas, real, f)
  rank = jnp.argsort(jnp.argsort(scores, stable=True), stable=True)
  keep = jnp.clip(jnp.sum(real) - f, 1, None)
  return real & (rank < keep)


def _mean_of(deltas, selected):
  count = jnp.maximum(jnp.sum(selected), 1).astype(jnp.float32)
  return jax.tree.map(lambda d: jnp.sum(jnp.where(_rows(selected, d), d, 0), axis=0) / count,
                      deltas)


def aggregate_with_selection(rule: AggregationRule, deltas, weights):
  """(total, denominator, used): `aggregate`'s pair and bool [m], the rows the result is
  computed from (krum: the one chosen; multi_krum: its n - f; the other rules: every row of
  weight > 0, since each enters every coordinate's order statistics or the sum)."""
  weights = jnp.asarray(weights, jnp.float32)
  real = weights > 0
  n = jnp.sum(real)
  if rule.name == "mean":
    return weighted_sum(deltas, weights), jnp.sum(weights), real
  if rule.name == "norm_bound":
    bounded = jax.vmap(lambda d: privacy.clip_update(d, rule.norm_bound)[0])(deltas)
    return weighted_sum(bounded, weights), jnp.sum(weights), real
  if rule.name in ("median", "trimmed_mean"):
    trim = (n - 1) // 2 if rule.name == "median" else _trim_table(rule.beta, real.shape[0])[n]
    denominator = jnp.maximum(n - 2 * trim, 1).astype(jnp.float32)
    return trimmed_sum(deltas, real, trim), denominator, real
  if rule.name == "krum":
    chosen = jnp.argmin(krum_scores(deltas, real, rule.f))
    used = real & (jnp.arange(real.shape[0]) == chosen)
    return jax.tree.map(lambda d: d[chosen], deltas), jnp.float32(1.0), used
  used = multi_krum_selection(deltas, real, rule.f)
  return _mean_of(deltas, used), jnp.float32(1.0), used


def aggregate(rule: AggregationRule, deltas, weights):
  """(total, denominator): the update is total / denominator, eq. 5's noise goes on total.

  `total` has REPLACE_ONE L2 sensitivity <= 2S for updates clipped to S (module docstring),
  so privacy.noisy_mean(total, denominator, key, sigma, S) is the accounted mechanism.
  """
  total, denominator, _ = aggregate_with_selection(rule, deltas, weights)
  return total, denominator


def aggregate_mean(rule: AggregationRule, deltas, weights):
  """The server's update without noise: total / denominator."""
  total, denominator = aggregate(rule, deltas, weights)
  return jax.tree.map(lambda t: t / denominator, total)
