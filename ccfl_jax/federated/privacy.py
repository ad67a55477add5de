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
shift/std ratios r_t compose exactly into one Gaussian with r = sqrt(Σ r_t²) (the log-likelihood
ratio is a sufficient statistic), whose privacy loss distribution dp_accounting's PLD
accountant evaluates (pessimistic discretisation: an upper bound, here within 1e-3 of the
analytic Gaussian's exact ε, Balle-Wang 2018). epsilon_report gives both and reports the
smaller (both are valid upper bounds); PLD is the tighter one for m_t = H (fed9: 8,543 vs
8,603). PLD has no sampling-without-replacement event, so once any round samples m_t < H only
RDP applies. CAUTION, the two accountants read a Gaussian's multiplier differently under
REPLACE_ONE: RDP's GaussianDpEvent(z) charges α/(2z²), neighbours 1 apart; PLD's places them
at ±1, i.e. 2 apart (privacy_loss_mechanism.GaussianPrivacyLoss: "REPLACE adjacency
corresponds to the same privacy loss distribution with twice the sensitivity"). Our
neighbours are 2S apart under noise std σS, ratio 2/σ: RDP gets z = σ/2, PLD gets z = σ.
Passing σ/2 to PLD as well would charge a shift of 4S and overstate ε 2-4x (measured).

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

from ccfl_jax import tree_util

MECHANISMS = ("gaussian_central", "laplace_local")
RDP_SMALL_ORDERS = tuple(1 + 0.011 * (1 / 0.011) ** (i / 100) for i in range(100))
RDP_ORDERS = RDP_SMALL_ORDERS + tuple(
    [2 + x / 10 for x in range(80)] + list(range(10, 65)) + [128, 256, 512])
# PLD discretisation relative to ε (RDP's ε as the scale): 1e-3 keeps a call at 7-60 ms and
# the error far below it (measured: 1e-4 moves ε by < 1e-6 relative, at 10x the time).
PLD_RELATIVE_INTERVAL = 1e-3
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


def pld_epsilon(num_hospitals: int, rounds, delta: float, scale: float = 1.0):
  """ε from dp_accounting's PLD accountant, or None unless every round has m_t = H.

  The rounds compose into one Gaussian; PLD's GaussianDpEvent(z) under REPLACE_ONE puts the
  neighbours 2/z std apart, so z = σ here (module docstring). `scale` (about the expected ε)
  sets the discretisation interval.
  """
  if any(m != num_hospitals for m, _ in rounds):
    return None
  sigma = composed_gaussian_multiplier([s for _, s in rounds])
  interval = max(1e-4, PLD_RELATIVE_INTERVAL * scale)
  accountant = dp_accounting.pld.PLDAccountant(REPLACE_ONE, value_discretization_interval=interval)
  accountant.compose(dp_accounting.GaussianDpEvent(sigma))
  return float(accountant.get_epsilon(delta))


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
  pld = pld_epsilon(num_hospitals, rounds, delta, scale=rdp)
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
