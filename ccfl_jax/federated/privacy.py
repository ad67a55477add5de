"""Client-level differential privacy: clipping, Gaussian noise, and the privacy accountant.

Mechanism (the paper's eq. 5 = Geyer et al. 2017): each sampled hospital's update is
clipped to L2 norm S, Δw <- Δw / max(1, ||Δw||_2 / S); the server adds N(0, σ²S²) to the
sum of the m_t clipped updates and divides by m_t.

Accounting: the unit of privacy is one hospital's whole dataset (client-level DP). Each
round samples m_t of H hospitals without replacement, so the neighbouring relation is
REPLACE_ONE (one hospital's data replaced by arbitrary other data): replacing one clipped
update moves the sum by up to 2S. With noise std σS on the sum, the Gaussian mechanism's
noise multiplier relative to that sensitivity is σ/2. Rounds compose in dp_accounting's
RDP accountant; ε is reported at the configured δ. σ may differ per round (a run resumed
with another σ): each round is charged at its own σ_t.

RDP orders: RDP_ORDERS covers (1, 2) finely (100 log-spaced orders from 1.011; dp_accounting's
RDP->(ε, δ) conversion, Canonne-Kamath-Steinke 2020 Prop. 12, discards orders <= 1.01). With
few hospitals and small σ the best order lies there: fed9 (m_t = H = 9, σ 0.1, 40 rounds,
δ 1e-5) is charged 8,603 at α ≈ 1.04, where orders from 2 gave 16,010. For a sampled round
(m_t < H) dp_accounting's without-replacement bound (Wang-Balle-Kasiviswanathan 2019) exists at
integer orders; at α in (1, 2) it interpolates the cumulant between α = 1 (zero) and α = 2, so
RDP(α) = RDP(2) there: valid, never the optimum, and harmless to include. It does not call
`_compute_log_a_frac` (that routine serves Poisson sampling only: 0 calls measured, no
warnings), and costs ~35 ms once for the 100 small orders. The sampled bound at all orders
costs ~0.4 s per (H, m_t, σ_t) (orders 128 and 256 dominate), so round_rdp caches it.

PLD: where every round has m_t = H the rounds are plain Gaussian mechanisms; T of them with
shift/std ratios μ_t compose exactly into one Gaussian with μ = sqrt(Σ μ_t²) (the log-likelihood
ratio is a sufficient statistic; adaptively chosen rounds too: Dong-Roth-Su's Gaussian DP).
Our neighbours are 2S apart under noise std σ_t S: μ_t = 2/σ_t, μ = 2 (Σ σ_t^-2)^1/2. The
privacy loss distribution of that one Gaussian is exactly N(μ²/2, μ²), so its hockey-stick
divergence has a closed form (Balle-Wang 2018's analytic Gaussian mechanism),
    δ(ε) = Φ(μ/2 - ε/μ) - e^ε Φ(-μ/2 - ε/μ),
and pld_epsilon reports the smallest ε with δ(ε) <= δ: the exact ε of the composed mechanism,
evaluated in log space (log Φ by scipy's log_ndtr) and rounded UP (after the root finder, a
step up until log δ(ε) <= log δ - 1e-10 holds as computed), so a valid upper bound within
1e-9 relative of the exact value (gaussian_epsilon; measured within 1e-11 of dp_accounting's
get_epsilon_gaussian, and checked at 50 digits in the tests). epsilon_report gives it and RDP
and reports the smaller (both valid upper bounds); it is the tighter one for m_t = H (fed9:
8,538.49 vs RDP's 8,602.79; dp_accounting's PLD accountant gave 8,542.57).

Why not dp_accounting's PLD accountant (used here before): (1) dp_accounting 0.6.0 returns
ε = inf where the true ε exceeds log(DBL_MAX) = 709.78, whatever the discretisation interval:
pld_pmf._get_epsilon_for_delta divides by Σ p_j e^-loss_j ~ e^-ε, a subnormal, and the quotient
overflows, until ε is large enough that each p_j e^-loss_j underflows to exactly 0 and another
branch answers (at ~730-748 here, later for a finer interval). epsilon_report fell back to RDP,
~2% looser, in between, and where PLD came back the reported ε DROPPED: m_t = H = 9, σ 1,
δ 1e-5 gave inf from PLD for rounds 284-292, so 744.98 (RDP) at round 292, then 732.31 (PLD) at
293, which the ledger refuses. (2) Its pessimistic discretisation is an upper bound, but with an
interval that has to grow with ε (1e-3 ε kept a call at 7-60 ms) its error (up to 1.7e-3 of
ε, measured) changes from round to round, comparable with what one more round adds to a long
run (between ε/(2T) and ε/T): nothing kept it monotone. The closed form has neither problem
and needs no interval: it depends on the rounds only through μ, which the fsum of
non-negative σ_t^-2 makes non-decreasing in the rounds, and the exact ε is increasing in μ; a
round changes ε by far more than the ~1e-13 numerical error, so the reported ε is
non-decreasing in the rounds (tested over r = 1..400; measured over 2,000 rounds at σ 0.1, 1,
5, 100). A running maximum over prefixes instead would make epsilon(...) cost O(T) accountant
calls (the ledger's verifier recomputes every round's ε from the recorded rounds: O(T²)) and
would hide a non-monotone bound, not remove its cause. min(RDP, PLD) stays monotone: both are
non-decreasing, and once a round samples m_t < H the RDP bound applies, and it is >= the exact
ε of the all-H prefix before it.

PLD has no sampling-without-replacement event, so once any round samples m_t < H only RDP
applies. CAUTION, dp_accounting's two accountants read a Gaussian's multiplier differently
under REPLACE_ONE: RDP's GaussianDpEvent(z) charges α/(2z²), neighbours 1 apart; PLD's places
them at ±1, i.e. 2 apart (privacy_loss_mechanism.GaussianPrivacyLoss: "REPLACE adjacency
corresponds to the same privacy loss distribution with twice the sensitivity"). Our
neighbours are 2S apart under noise std σS, ratio 2/σ: RDP gets z = σ/2, PLD's accountant
would get z = σ, dp_accounting.gaussian_mechanism.get_epsilon_gaussian (sensitivity 1) σ/2.
Passing σ/2 to PLD's accountant would charge a shift of 4S and overstate ε 2-4x (measured).

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

Local Laplace mechanism (privacy.mechanism = laplace_local; the paper's eqs. 12-13): each
sampled hospital clips its update in L1, Δw / max(1, ||Δw||_1 / B), and adds Laplace(b)
noise to every coordinate BEFORE submitting, b = s / ε_round. The L1 sensitivity (eq. 13,
s = max over neighbouring datasets of ||f(H) - f(H')||_1) follows from the L1 clip: replacing
a hospital's data replaces its clipped update u by u', ||u||_1, ||u'||_1 <= B, so
||u - u'||_1 <= 2B: s = 2B (replace-one, as for the Gaussian). Clipping in L1 rather than
deriving s from the L2 bound: ||u||_1 <= sqrt(d) ||u||_2 would give s = 2S sqrt(d), and with
d ~ 10^5-10^7 parameters the noise would drown any update. Each release is then ε_round-DP
(pure DP, δ = 0) for that hospital against everyone who sees it, the server and the ledger
included: no trusted aggregator, unlike the Gaussian mechanism, whose (ε, δ) holds only for
the published noised aggregate, i.e. assumes the server that sums the clean updates is
trusted. The price: the sum carries m_t independent noises, one per update, and
each must hide a whole update on its own. Over rounds
the pure ε_round compose (laplace_epsilon): basic composition Σ ε_t (δ = 0) and advanced
composition (Dwork-Rothblum-Vadhan 2010; Dwork-Roth 2014, Thm 3.20) at δ':
sqrt(2 ln(1/δ') Σ ε_t²) + Σ ε_t (e^ε_t - 1); the smaller is reported with its δ. No
amplification by sampling is claimed: the server sees which hospital submitted which update,
so the subsample hides nothing from it. Pass the rounds a hospital took part in (at most T;
T bounds every hospital): laplace_run_epsilon composes each hospital's own rounds and reports
the worst hospital.

In the round (config privacy.mechanism = laplace_local, privacy.laplace_epsilon = ε_round,
privacy.clip_norm = B; client.hospital_update, engine.py): each sampled hospital clips its
trainable update in L1 and adds its own Laplace noise, key fold_in(hospital key, 4), inside
the compiled round; what the server, the vote and the ledger (its update digest) receive is
that noised submission, and the server averages the accepted ones with NO noise of its own
(privacy.noise_multiplier must be 0: configuration.validate refuses anything else rather
than silently ignore σ). Every rejected update is still a release: the accountant charges
each SAMPLED hospital one ε_round per round, accepted or not. The training loop records ε
(laplace_run_epsilon) and ε_round per round; `ledger verify` recomputes ε from each block's
epsilon_round and round_start's sampled hospitals (ledger/audit.py). A run cannot switch
mechanism on resume (recorder.check_compatible): no accountant here composes the two.

What else reads the noised submissions, and so what goes with laplace_local:
- the MAE vote (eqs. 14-15) scores the local model global + noised submission on the
  verifiers' batches: post-processing of the release, inside ε_round; the author's MAE on
  its own validation batch is published too and, as under the Gaussian mechanism, is NOT
  covered. The direction check's cosines with the median submission are post-processing
  (allowed), but at small ε_round the noise dominates every submission (its L2 norm is about
  sqrt(2P) b against at most B for the clipped update), cosines cluster near 0 and the
  check rejects at random: it filters little;
- the magnitude check (ledger.consensus.max_norm_ratio > 0) reads and publishes each
  hospital's UN-noised update norm, which a local-DP hospital never reveals, and a noised
  submission's norm is the noise's, the same for every hospital: refused;
- the aggregation rules (aggregation.py) are all post-processing of ε_round-DP releases, so
  ε holds whatever the rule; no sensitivity argument is needed. median and trimmed_mean
  suit Laplace noise (the coordinate-wise median is its location estimator); krum and
  multi_krum select by distances that the noise dominates at small ε_round (close to a
  random pick, and the one picked keeps its whole noise: m_t times the mean's variance);
  norm_bound is refused: every honest submission's norm is the noise's, so the bound
  rescales them all alike and bounds nothing;
- the colluding attacks (attacks.COLLUDING) craft from clipped un-noised updates and are
  re-clipped in L2 by the server, a model of the central mechanism: refused. The
  per-hospital attacks run as before the L1 clip and the noise (a malicious hospital is
  simulated as following the noise protocol);
- V_c and U_s (update_stats.py, engine.py step 4) are computed on the accepted noised
  submissions, so V_c includes the noise's variance 2b² per coordinate.
"""
import collections
import functools
import math
from typing import Sequence, Union

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.special

from ccfl_jax import tree_util

MECHANISMS = ("gaussian_central", "laplace_local")
RDP_SMALL_ORDERS = tuple(1 + 0.011 * (1 / 0.011) ** (i / 100) for i in range(100))
RDP_ORDERS = RDP_SMALL_ORDERS + tuple(
    [2 + x / 10 for x in range(80)] + list(range(10, 65)) + [128, 256, 512])
REPLACE_ONE = dp_accounting.NeighboringRelation.REPLACE_ONE
NoiseMultiplier = Union[float, Sequence[float]]


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


def noisy_mean(clipped_sum, num_accepted, key, noise_multiplier, clip_norm, trainable=None):
  """(Σ clipped Δw + N(0, σ²S²)) / m_t — eq. 5; no noise on frozen parameters (`trainable`
  False: every update is zero there, so the mean is exactly zero)."""
  noise = tree_util.keep(gaussian_noise_like(key, clipped_sum, noise_multiplier * clip_norm),
                         trainable)
  return jax.tree.map(lambda s, n: (s + n) / num_accepted, clipped_sum, noise)


def round_event(num_hospitals: int, per_round: int, noise_multiplier: float):
  """One round as a dp_accounting RDP event (noise multiplier σ/2: sensitivity 2S, see above)."""
  gaussian = dp_accounting.GaussianDpEvent(noise_multiplier / 2.0)
  if per_round == num_hospitals:
    return gaussian
  return dp_accounting.SampledWithoutReplacementDpEvent(num_hospitals, per_round, gaussian)


def per_round_pairs(hospitals_per_round, noise_multiplier: NoiseMultiplier):
  """[(m_t, σ_t)] per round; one float σ applies to every round."""
  counts = [int(m) for m in hospitals_per_round]
  if np.ndim(noise_multiplier) == 0:
    return [(m, float(noise_multiplier)) for m in counts]
  sigmas = [float(s) for s in noise_multiplier]
  if len(sigmas) != len(counts):
    raise ValueError(f"{len(sigmas)} noise multipliers for {len(counts)} rounds")
  return list(zip(counts, sigmas))


@functools.lru_cache(maxsize=4096)
def round_rdp(num_hospitals: int, per_round: int, noise_multiplier: float) -> np.ndarray:
  """RDP of one round at RDP_ORDERS (cached, read-only: the sampled bound costs ~0.4 s)."""
  accountant = dp_accounting.rdp.RdpAccountant(orders=list(RDP_ORDERS),
                                               neighboring_relation=REPLACE_ONE)
  accountant.compose(round_event(num_hospitals, per_round, noise_multiplier))
  rdp = np.array(accountant.rdp, dtype=np.float64)
  rdp.setflags(write=False)
  return rdp


def rdp_epsilon(num_hospitals: int, rounds, delta: float) -> float:
  """ε from RDP over RDP_ORDERS for rounds [(m_t, σ_t)] (each σ_t > 0, 0 < m_t <= H)."""
  tally = collections.Counter(rounds)
  total = sum(count * round_rdp(num_hospitals, m, sigma)
              for (m, sigma), count in sorted(tally.items()))
  return float(dp_accounting.rdp.compute_epsilon(RDP_ORDERS, total, delta)[0])


def composed_gaussian_multiplier(sigmas) -> float:
  """σ of the one Gaussian equal to rounds of σ_t on the same 2S shift: (Σ σ_t^-2)^-1/2."""
  return math.fsum(s ** -2.0 for s in sigmas) ** -0.5


def gaussian_log_delta(mu: float, eps: float) -> float:
  """log δ(ε) of a Gaussian mechanism with shift/std μ > 0 (Balle-Wang 2018, Thm 8), in log
  space: log[Φ(μ/2 - ε/μ) - e^ε Φ(-μ/2 - ε/μ)]; -inf where the difference is not positive."""
  upper = float(scipy.special.log_ndtr(mu / 2 - eps / mu))
  lower = eps + float(scipy.special.log_ndtr(-mu / 2 - eps / mu))
  return upper + math.log1p(-math.exp(lower - upper)) if lower < upper else -math.inf


# gaussian_epsilon's margin in log δ: it returns an ε with log δ(ε) <= log δ - 1e-10 as
# computed, far above the evaluation's rounding (~1e-13 measured, two formulas compared).
LOG_DELTA_MARGIN = 1e-10


def gaussian_epsilon(mu: float, delta: float) -> float:
  """The smallest ε >= 0 with δ(ε) <= δ for a Gaussian of shift/std μ, rounded up: the root
  of log δ(ε) = log δ - LOG_DELTA_MARGIN, then stepped up until that holds as computed, so
  rounding in the evaluation cannot make it an underestimate (cost: ~1e-10 relative in δ,
  below 1e-9 relative in ε)."""
  if mu <= 0:
    return 0.0
  if math.isinf(mu):
    return math.inf
  target = math.log(delta) - LOG_DELTA_MARGIN
  gap = lambda eps: gaussian_log_delta(mu, eps) - target
  if gap(0.0) <= 0:
    return 0.0
  # δ(ε) < Φ(μ/2 - ε/μ) = δ at ε = μ²/2 + μ Φ^-1(1 - δ): a bracket, widened if rounding says not.
  high = (mu * mu / 2 - mu * float(scipy.special.ndtri(delta))) * (1 + 1e-6) + 1e-6
  while gap(high) > 0:
    high *= 2
  eps = scipy.optimize.brentq(gap, 0.0, high, xtol=1e-13, rtol=4 * np.finfo(float).eps,
                              maxiter=500)
  step = 1e-13 * max(1.0, eps)
  while gap(eps) > 0:
    eps, step = eps + step, 2 * step
  return float(eps)


def composed_shift(sigmas) -> float:
  """μ of the one Gaussian equal to rounds of σ_t on the same 2S shift: 2 (Σ σ_t^-2)^1/2."""
  return 2.0 * math.sqrt(math.fsum(s ** -2.0 for s in sigmas))


def pld_epsilon(num_hospitals: int, rounds, delta: float):
  """The exact ε (rounded up) of rounds [(m_t, σ_t)], or None unless every round has m_t = H.

  The rounds compose into one Gaussian of shift/std μ = 2 (Σ σ_t^-2)^1/2, whose privacy loss
  distribution's ε is evaluated in closed form (gaussian_epsilon; module docstring: why not
  dp_accounting's discretised PLD accountant).
  """
  if any(m != num_hospitals for m, _ in rounds):
    return None
  return gaussian_epsilon(composed_shift([s for _, s in rounds]), delta)


def epsilon_report(num_hospitals: int, hospitals_per_round, noise_multiplier: NoiseMultiplier,
                   delta: float) -> dict:
  """ε after the rounds with sampled counts m_t and noise multipliers σ_t, at δ.

  Returns dict(epsilon=the smaller valid bound, accountant='rdp'|'pld', rdp=, pld=); pld is
  None where some round samples m_t < H (PLD has no without-replacement event). Rounds with
  m_t = 0 touch no hospital's data and cost nothing.
  """
  pairs = per_round_pairs(hospitals_per_round, noise_multiplier)
  if any(not 0 <= m <= num_hospitals for m, _ in pairs):
    raise ValueError(f"sampled counts must lie in [0, {num_hospitals}]")
  rounds = [(m, sigma) for m, sigma in pairs if m > 0]
  if not rounds:
    return dict(epsilon=0.0, accountant="rdp", rdp=0.0, pld=None)
  if any(sigma <= 0 for _, sigma in rounds):
    return dict(epsilon=math.inf, accountant="rdp", rdp=math.inf, pld=None)
  rdp = rdp_epsilon(num_hospitals, rounds, delta)
  pld = pld_epsilon(num_hospitals, rounds, delta)
  if pld is not None and pld < rdp:
    return dict(epsilon=pld, accountant="pld", rdp=rdp, pld=pld)
  return dict(epsilon=rdp, accountant="rdp", rdp=rdp, pld=pld)


def epsilon(num_hospitals: int, hospitals_per_round, noise_multiplier: NoiseMultiplier,
            delta: float) -> float:
  """ε after the rounds whose sampled counts m_t are `hospitals_per_round`, at δ.

  `noise_multiplier` is one σ for every round or a sequence of per-round σ_t.
  """
  return epsilon_report(num_hospitals, hospitals_per_round, noise_multiplier, delta)["epsilon"]


# --- Local Laplace mechanism (eqs. 12-13) -------------------------------------------------


def l1_norm(tree) -> jax.Array:
  """||·||_1 over all leaves, on rescaled values so huge updates do not overflow."""
  leaves = jax.tree.leaves(tree)
  scale = jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in leaves]))
  scale = jnp.where(scale > 0, scale, 1.0)
  return scale * sum(jnp.sum(jnp.abs(leaf / scale)) for leaf in leaves)


def clip_update_l1(delta, bound: float):
  """Δw / max(1, ||Δw||_1 / B) and ||Δw||_1 before clipping."""
  norm = l1_norm(delta)
  factor = jnp.minimum(1.0, bound / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny))
  return jax.tree.map(lambda leaf: leaf * factor.astype(leaf.dtype), delta), norm


def laplace_sensitivity(bound: float) -> float:
  """Eq. 13's L1 sensitivity of an L1-clipped update under replace-one: s = 2B."""
  return 2.0 * bound


def laplace_scale(bound: float, epsilon_round: float) -> float:
  """Eq. 12's b = s / ε_round: each release is ε_round-DP."""
  return laplace_sensitivity(bound) / epsilon_round


def laplace_noise_like(key, tree, scale):
  """Independent Laplace(0, b = scale) (variance 2b²) for every parameter of `tree`."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  noise = [scale * jax.random.laplace(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, noise)


def laplace_local_update(key, delta, bound: float, epsilon_round: float):
  """What a hospital submits under laplace_local: L1-clipped Δw + Laplace(2B/ε_round) (eq. 12),
  and ||Δw||_1 before clipping."""
  clipped, norm = clip_update_l1(delta, bound)
  noise = laplace_noise_like(key, clipped, laplace_scale(bound, epsilon_round))
  return jax.tree.map(jnp.add, clipped, noise), norm


def laplace_epsilon(epsilon_round, rounds: int, delta: float) -> dict:
  """Composition of `rounds` pure ε_round-DP releases (one float, or a sequence per round).

  Returns dict(basic=Σ ε_t (δ = 0), advanced=sqrt(2 ln(1/δ) Σ ε_t²) + Σ ε_t (e^ε_t - 1) (at
  δ; Dwork-Rothblum-Vadhan), epsilon=the smaller, delta=0.0 or δ, whichever it holds at).
  """
  eps = ([float(epsilon_round)] * int(rounds) if np.ndim(epsilon_round) == 0
         else [float(e) for e in epsilon_round])
  if len(eps) != int(rounds):
    raise ValueError(f"{len(eps)} per-round epsilons for {rounds} rounds")
  basic = math.fsum(eps)
  # e^ε_t overflows a float from ε_t ~ 709: the advanced bound is then unbounded (inf).
  advanced = (math.sqrt(2 * math.log(1 / delta) * math.fsum(e * e for e in eps))
              + math.fsum(e * (math.expm1(e) if e < 700 else math.inf) for e in eps)
              ) if 0 < delta < 1 else math.inf
  if basic <= advanced:
    return dict(basic=basic, advanced=advanced, epsilon=basic, delta=0.0)
  return dict(basic=basic, advanced=advanced, epsilon=advanced, delta=float(delta))


def laplace_run_epsilon(sampled_per_round, epsilon_per_round, delta: float) -> dict:
  """The local mechanism's ε over a run, for the hospital that is worst off.

  sampled_per_round: per round, the hospitals (any hashable ids) that submitted; each
  submission is one pure ε_t-DP release of that hospital, with ε_t = epsilon_per_round[t].
  Hospital h composes only the rounds it took part in (laplace_epsilon over its n_h <= T
  releases); unsampled rounds release nothing of h's data. Returns dict(epsilon=max_h of h's
  bound, delta=δ if some hospital's bound is the advanced composition's, else 0.0 (every
  hospital is then (epsilon, delta)-DP), basic=max_h Σ ε_t, advanced=max_h of the advanced
  bound, hospital_rounds=max_h n_h, composition='basic'|'advanced' (the bound `epsilon`
  comes from)).
  """
  sampled_per_round = [list(s) for s in sampled_per_round]
  eps = [float(e) for e in epsilon_per_round]
  if len(eps) != len(sampled_per_round):
    raise ValueError(f"{len(eps)} per-round epsilons for {len(sampled_per_round)} rounds")
  if any(not 0 < e < math.inf for e in eps):
    raise ValueError("every per-round Laplace epsilon must be finite and > 0")
  by_hospital = collections.defaultdict(list)
  for hospitals, e in zip(sampled_per_round, eps):
    for h in hospitals:
      by_hospital[h].append(e)
  report = dict(epsilon=0.0, delta=0.0, basic=0.0, advanced=0.0, hospital_rounds=0,
                composition="basic")
  for released in by_hospital.values():
    one = laplace_epsilon(released, len(released), delta)
    report["basic"] = max(report["basic"], one["basic"])
    report["advanced"] = max(report["advanced"], one["advanced"])
    report["hospital_rounds"] = max(report["hospital_rounds"], len(released))
    if one["delta"] > 0:
      report["delta"] = one["delta"]
    if one["epsilon"] > report["epsilon"]:
      report["epsilon"] = one["epsilon"]
      report["composition"] = "basic" if one["delta"] == 0 else "advanced"
  return report
