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
"""
import dataclasses

import jax
import jax.numpy as jnp

from ccfl_jax.federated import privacy

KINDS = ("none", "sign_flip", "scale", "gaussian_noise", "label_flip")


@dataclasses.dataclass(frozen=True)
class Attack:
  kind: str = "none"
  num_malicious: int = 0
  scale: float = 10.0

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
