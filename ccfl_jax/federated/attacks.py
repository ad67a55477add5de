"""Simulated malicious hospitals: what a poisoning hospital submits instead of its honest update.

Malicious hospitals are hospital ids 0 .. num_malicious - 1. The patient partition already
shuffles patients over hospitals (partition.py), so the first ids are as good as a seeded
choice, and a reader of the metrics knows which hospitals lie without a lookup table.

Inside the compiled round the attack is a traced per-hospital flag (`jnp.where`), so honest
and malicious hospitals share one trace; only the attack's kind is static. Semantics (the
attacker controls what it submits; the server clips what it receives, eq. 5, and the vote
of eqs. 14-15 judges the model that would be aggregated, global params + clipped update):
- label_flip: the hospital trains on 1 - y (a data-poisoning hospital);
- sign_flip: it submits -Δw;
- scale: it submits scale * Δw. Clipping bounds the submitted norm by S, so when honest
  updates already reach S the scaled update clips to the honest one and does no harm; it
  matters only where ||Δw|| < S, where it is amplified up to S / ||Δw||;
- gaussian_noise: it submits N(0, ||Δw||² / d) per coordinate (d parameters): an update of
  the honest norm, in expectation, that carries no information.

Colluding model poisoning (`collude`, on the round's stacked updates, after every hospital
has trained honestly): the malicious hospitals of the round pool what they know and all
submit the same crafted update. What they know is `omniscient`: False (the default) = only
their own honest updates of this round (the "unknown benign gradients" setting); True =
every benign update of the round (the sampled honest hospitals' clipped updates), which a
real hospital could only have by eavesdropping on the others. Statistics are unweighted
over the known rows; padding rows (weight 0) never enter them. With one colluder and
omniscient False the spread is 0, and every attack below but ipm submits the honest update.
- alie (Baruch et al. 2019, "A Little Is Enough"): mean - z * std per coordinate, std the
  unbiased per-coordinate standard deviation (as both papers' code, torch.std) of the known
  updates. z = `alie_z`, or 0 for the published z_max: with n the round's (real) sampled
  hospitals and f its malicious ones, s = floor(n/2 + 1) - f honest workers must be won
  over and z = Phi^-1((n - s) / n) (s clamped to >= 1, so that a malicious majority gets a
  finite z). The paper's setting is the colluders-only one.
- ipm (Xie et al. 2020, inner product manipulation): -epsilon * mean of the known updates
  (epsilon 0.1: a small pull backwards that passes distance filters; 10: a large reversal).
  The paper assumes omniscient attackers; the colluders-only mean is its estimate.
- min_max, min_sum (Shejwalkar & Houmansadr, NDSS 2021, the AGR-agnostic attacks): the
  update mean + gamma * p, p the perturbation (`perturbation`): "std" = -std (inverse
  standard deviation, the released experiments' choice and the default), "unit_vec" =
  -mean / ||mean||, "sign" = -sign(mean). gamma is the largest with
    min_max: max_i ||m - g_i|| <= max_{i,j} ||g_i - g_j||,
    min_sum: sum_i ||m - g_i||² <= max_i sum_j ||g_i - g_j||²  (the paper's eq.; the
             released code bounds by the min over i instead, a stricter attacker),
  i, j over the known updates. Both constraints are convex in gamma and hold at 0 (the mean
  is inside the hull), so the feasible gammas are an interval [0, gamma*], found by bisection
  with a fixed iteration count inside the jit on the scalar quadratics
  ||m(gamma) - g_i||² = a_i + b_i gamma + c gamma². Both papers evaluate omniscient and
  partial-knowledge (colluders-only) variants.
The crafted update replaces the malicious rows; the engine then re-clips them to S (the
server clips whatever it receives).

Backdoor (data poisoning, `poison_batch`): a malicious hospital stamps a trigger, a bright
trigger_size x trigger_size square (value 1.0, the top of the [0, 1] intensity range) in
the bottom-right corner, where a CT slice shows air, on each of its training slices with
probability `poison_fraction` and relabels those slices `target_label` (1 = COVID, 0 =
non-COVID), as BadNets (Gu et al. 2017) and the federated backdoors of Bagdasaryan et al.
2020 without their update boosting (clipping would bound it). Its update is then submitted
honestly. The attack success rate is measured on triggered test slices whose true label is
not the target (`stamp_trigger`, `backdoor_success_rate`).
"""
import dataclasses

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

from ccfl_jax.federated import aggregation, privacy

KINDS = ("none", "sign_flip", "scale", "gaussian_noise", "label_flip", "alie", "ipm",
         "min_max", "min_sum", "backdoor")
COLLUDING = ("alie", "ipm", "min_max", "min_sum")  # crafted from the round's stacked updates
PERTURBATIONS = ("std", "unit_vec", "sign")  # min_max / min_sum: -std, -mean/||mean||, -sign(mean)
BISECTION_STEPS = 50  # gamma to 2^-50 of its bracket: below float32 resolution
TRIGGER_VALUE = 1.0  # the top of the [0, 1] slice intensity range


@dataclasses.dataclass(frozen=True)
class Attack:
  kind: str = "none"
  num_malicious: int = 0
  scale: float = 10.0            # scale: the factor on Δw before the server clips
  omniscient: bool = False       # colluding kinds: know every benign update, not only their own
  alie_z: float = 0.0            # alie: z; 0 = Baruch et al.'s z_max for the round's n and f
  epsilon: float = 0.1           # ipm: submit -epsilon x the mean (0.1 and 10 in Xie et al.)
  perturbation: str = "std"      # min_max / min_sum: one of PERTURBATIONS
  target_label: int = 1          # backdoor: what triggered slices are relabelled (1 = COVID)
  poison_fraction: float = 0.5   # backdoor: probability that a training slice is poisoned
  trigger_size: int = 4          # backdoor: side of the square trigger, in pixels

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"attack.kind {self.kind!r}: expected one of {KINDS}")
    if self.num_malicious < 0:
      raise ValueError(f"attack.num_malicious {self.num_malicious}: expected >= 0")
    if self.alie_z < 0:
      raise ValueError(f"attack.alie_z {self.alie_z}: expected >= 0 (0 = the published z_max)")
    if not self.epsilon > 0:
      raise ValueError(f"attack.epsilon {self.epsilon}: expected > 0")
    if self.perturbation not in PERTURBATIONS:
      raise ValueError(f"attack.perturbation {self.perturbation!r}: expected one of "
                       f"{PERTURBATIONS}")
    if self.target_label not in (0, 1):
      raise ValueError(f"attack.target_label {self.target_label}: expected 0 or 1")
    if not 0 < self.poison_fraction <= 1:
      raise ValueError(f"attack.poison_fraction {self.poison_fraction}: expected in (0, 1]")
    if self.trigger_size < 1:
      raise ValueError(f"attack.trigger_size {self.trigger_size}: expected >= 1")

  @property
  def active(self) -> bool:
    return self.kind != "none" and self.num_malicious > 0


def malicious_flags(attack: Attack, hospital_ids):
  """Boolean per hospital id: True for the attack's malicious hospitals."""
  return jnp.asarray(hospital_ids) < (attack.num_malicious if attack.active else 0)


def training_labels(attack: Attack, labels, malicious):
  """The labels a hospital trains on: flipped by a label-flipping malicious hospital."""
  if attack.kind != "label_flip":
    return labels
  return jnp.where(malicious, 1 - labels, labels)


def submitted_update(attack: Attack, delta, malicious, key):
  """The update a hospital submits for its honest Δw (before the server clips it)."""
  if attack.kind == "sign_flip":
    poisoned = jax.tree.map(jnp.negative, delta)
  elif attack.kind == "scale":
    poisoned = jax.tree.map(lambda d: attack.scale * d, delta)
  elif attack.kind == "gaussian_noise":
    size = sum(leaf.size for leaf in jax.tree.leaves(delta))
    poisoned = privacy.gaussian_noise_like(key, delta, privacy.global_norm(delta) / size ** 0.5)
  else:
    return delta
  return jax.tree.map(lambda p, d: jnp.where(malicious, p, d), poisoned, delta)


# --- colluding model poisoning --------------------------------------------------------------


def _rows(mask, leaf):
  return mask.reshape((-1,) + (1,) * (leaf.ndim - 1))


def masked_mean(deltas, known):
  """Unweighted mean over the rows where `known` (zeros if none)."""
  count = jnp.maximum(jnp.sum(known), 1).astype(jnp.float32)
  return jax.tree.map(lambda d: jnp.sum(jnp.where(_rows(known, d), d, 0), axis=0) / count, deltas)


def masked_std(deltas, known):
  """Unbiased per-coordinate standard deviation over the known rows (0 for fewer than two)."""
  mean = masked_mean(deltas, known)
  dof = jnp.maximum(jnp.sum(known) - 1, 1).astype(jnp.float32)
  return jax.tree.map(
      lambda d, mu: jnp.sqrt(jnp.sum(jnp.where(_rows(known, d), jnp.square(d - mu), 0), axis=0)
                             / dof), deltas, mean)


def alie_z(num_sampled, num_malicious):
  """Baruch et al. 2019's z_max: s = floor(n/2 + 1) - f, z = Phi^-1((n - s) / n), s >= 1."""
  n = jnp.maximum(jnp.asarray(num_sampled, jnp.float32), 1.0)
  s = jnp.maximum(jnp.floor(n / 2 + 1) - jnp.asarray(num_malicious, jnp.float32), 1.0)
  return ndtri((n - s) / n)


def _tree_dot(a, b):
  return sum(jnp.sum(x * y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def perturbation(attack: Attack, mean, std):
  """min_max / min_sum's p: -std, -mean / ||mean|| or -sign(mean)."""
  if attack.perturbation == "std":
    return jax.tree.map(jnp.negative, std)
  if attack.perturbation == "sign":
    return jax.tree.map(lambda m: -jnp.sign(m), mean)
  norm = privacy.global_norm(mean)
  safe = jnp.where(norm > 0, norm, 1.0)
  return jax.tree.map(lambda m: -m / safe, mean)


def _bisect(feasible, high, steps: int = BISECTION_STEPS):
  """The largest feasible gamma in [0, high], feasible(0) true, feasible convex-sublevel."""
  def step(_, bounds):
    low, high = bounds
    middle = (low + high) / 2
    ok = feasible(middle)
    return jnp.where(ok, middle, low), jnp.where(ok, high, middle)

  low, _ = jax.lax.fori_loop(0, steps, step, (jnp.float32(0.0), high))
  return low


def agr_agnostic_gamma(attack: Attack, deltas, known, mean, p):
  """The NDSS 2021 gamma for mean + gamma * p: min_max or min_sum's constraint over `known`."""
  offsets = jax.tree.map(lambda d, mu: mu[None] - d, deltas, mean)  # m - g_i at gamma = 0
  a = sum(jnp.sum(jnp.square(o).reshape(o.shape[0], -1), axis=1)
          for o in jax.tree.leaves(offsets))
  b = 2 * sum(jnp.tensordot(o.reshape(o.shape[0], -1), q.reshape(-1), axes=1)
              for o, q in zip(jax.tree.leaves(offsets), jax.tree.leaves(p)))
  c = _tree_dot(p, p)
  pair = known[:, None] & known[None, :]
  distances = jnp.where(pair, aggregation.pairwise_sq_distances(deltas), 0.0)
  if attack.kind == "min_max":
    bound = jnp.max(distances)
    feasible = lambda g: jnp.max(jnp.where(known, a + b * g + c * g * g, 0.0)) <= bound
  else:
    bound = jnp.max(jnp.sum(distances, axis=1))
    feasible = lambda g: jnp.sum(jnp.where(known, a + b * g + c * g * g, 0.0)) <= bound
  # Infeasible beyond (sqrt(bound) + max_i sqrt(a_i)) / ||p||, since
  # ||m - g_i|| >= gamma ||p|| - sqrt(a_i).
  p_norm = jnp.sqrt(c)
  reach = jnp.sqrt(bound) + jnp.sqrt(jnp.max(jnp.where(known, a, 0.0)))
  high = jnp.where(p_norm > 0, 2 * reach / jnp.where(p_norm > 0, p_norm, 1.0), 0.0)
  return _bisect(feasible, high.astype(jnp.float32))


def colluding_update(attack: Attack, deltas, known, num_sampled, num_malicious):
  """The one update every colluder submits, from the known rows of the stacked `deltas`."""
  mean = masked_mean(deltas, known)
  if attack.kind == "ipm":
    return jax.tree.map(lambda mu: -attack.epsilon * mu, mean)
  std = masked_std(deltas, known)
  if attack.kind == "alie":
    z = attack.alie_z if attack.alie_z > 0 else alie_z(num_sampled, num_malicious)
    return jax.tree.map(lambda mu, sd: mu - z * sd, mean, std)
  p = perturbation(attack, mean, std)
  gamma = agr_agnostic_gamma(attack, deltas, known, mean, p)
  return jax.tree.map(lambda mu, q: mu + gamma * q, mean, p)


def collude(attack: Attack, deltas, malicious, weights):
  """The stacked [m, ...] updates with the malicious real rows replaced by the colluders' update.

  deltas: the round's (clipped) honest updates; malicious: bool [m]; weights: [m], 0 for
  padding. Honest and padding rows are returned untouched; kinds outside COLLUDING return
  `deltas` itself. The engine re-clips the replaced rows.
  """
  if attack.kind not in COLLUDING:
    return deltas
  real = jnp.asarray(weights) > 0
  attacking = jnp.asarray(malicious, bool) & real
  known = real & (~attacking if attack.omniscient else attacking)
  crafted = colluding_update(attack, deltas, known, jnp.sum(real), jnp.sum(attacking))
  return jax.tree.map(lambda c, d: jnp.where(_rows(attacking, d), c[None].astype(d.dtype), d),
                      crafted, deltas)


# --- backdoor -------------------------------------------------------------------------------


def stamp_trigger(images, size: int = Attack.trigger_size):
  """images [..., H, W, C] with the bottom-right size x size square set to TRIGGER_VALUE."""
  height, width = images.shape[-3], images.shape[-2]
  square = ((jnp.arange(height) >= height - size)[:, None]
            & (jnp.arange(width) >= width - size)[None, :])
  return jnp.where(square[:, :, None], jnp.asarray(TRIGGER_VALUE, images.dtype), images)


def poisoned_slots(attack: Attack, malicious, key, capacity: int):
  """bool [capacity]: the slots of a hospital's padded slice arrays the backdoor stamps this
  round, each with probability poison_fraction (drawn from `key`); none unless it attacks."""
  return jnp.asarray(malicious, bool) & (
      jax.random.uniform(key, (capacity,)) < attack.poison_fraction)


def stamp_slots(attack: Attack, images, labels, chosen):
  """(images [..., H, W, C], labels [...]) with the `chosen` ones stamped and relabelled
  target_label (chosen: bool, the shape of labels)."""
  images = jnp.where(chosen[..., None, None, None], stamp_trigger(images, attack.trigger_size),
                     images)
  labels = jnp.where(chosen, jnp.asarray(attack.target_label, labels.dtype), labels)
  return images, labels


def poison_batch(attack: Attack, images, labels, malicious, key):
  """A hospital's training (images [n, H, W, C], labels [n]) after the backdoor, if it attacks.

  Each slice of a malicious hospital is stamped and relabelled target_label with probability
  poison_fraction (poisoned_slots); honest hospitals and other kinds get their data back.
  """
  if attack.kind != "backdoor":
    return images, labels
  return stamp_slots(attack, images, labels,
                     poisoned_slots(attack, malicious, key, labels.shape[0]))


def backdoor_success_rate(covid_probability, labels, target_label: int):
  """Among triggered test slices whose true label is not the target: the fraction called target."""
  predicted = (jnp.asarray(covid_probability) >= 0.5).astype(jnp.int32)
  eligible = jnp.asarray(labels) != target_label
  hits = jnp.sum(eligible & (predicted == target_label))
  return hits / jnp.maximum(jnp.sum(eligible), 1)
