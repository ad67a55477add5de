"""Synthetic rounds for tests and benchmarks: the ledger's inputs without training a model.

`synthetic_round` produces what the compiled round would hand to record_round: a random
sample of hospitals, per-hospital update pytrees of the small CNN's size, a cross-evaluation
MAE matrix in which hospitals listed in `poisoned` score badly, the eq. 15 scores, the
updates' norms and cosines with their coordinate-wise median, and the consensus decision.
Everything is drawn from numpy Generators seeded by (seed, round).
"""
import dataclasses

import jax
import numpy as np
import optax

from ccfl_jax.ledger import audit
from ccfl_jax.ledger import consensus
from ccfl_jax.ledger import run_ledger as run_lib
from ccfl_jax.ledger.digests import update_digest

SMALL_CNN_SHAPES = {"conv0": (3, 3, 1, 16), "conv1": (3, 3, 16, 32), "conv2": (3, 3, 32, 64),
                    "conv3": (3, 3, 64, 64), "head": (64, 2)}  # ~60k float32 parameters


@dataclasses.dataclass(frozen=True)
class SyntheticRound:
  sampled: tuple[int, ...]
  updates: tuple[dict, ...]
  local_maes: np.ndarray
  mae_matrix: np.ndarray
  vote_scores: np.ndarray
  update_norms: np.ndarray
  cosines: np.ndarray
  accepted: np.ndarray


def small_cnn_tree(rng: np.random.Generator) -> dict:
  return {name: {"kernel": rng.normal(0, 0.01, shape).astype(np.float32),
                 "bias": np.zeros(shape[-1], np.float32)}
          for name, shape in SMALL_CNN_SHAPES.items()}


def synthetic_round(run: run_lib.RunLedger, round_index: int, hospitals_per_round: int,
                    seed: int = 0, poisoned=()) -> SyntheticRound:
  rng = np.random.default_rng([seed, round_index])
  num_hospitals = len(run.hospitals)
  sampled = tuple(sorted(rng.choice(num_hospitals, hospitals_per_round, replace=False).tolist()))
  verifiers = run_lib.round_roles(run, round_index).verifiers
  bad = np.array([h in poisoned for h in sampled])
  mae_matrix = (rng.uniform(0.15, 0.25, (len(sampled), len(verifiers)))
                + 0.5 * bad[:, None]).astype(np.float32)
  local_maes = rng.uniform(0.1, 0.2, len(sampled)).astype(np.float32)
  rule = run.consensus
  scores = np.asarray(consensus.vote_scores(mae_matrix, local_maes, rule.gamma))
  updates = tuple(small_cnn_tree(rng) for _ in sampled)
  stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *updates)
  norms = np.array([optax.global_norm(u) for u in updates], np.float32)
  cosines = np.asarray(consensus.median_cosines(stacked, np.ones(len(sampled), bool)))
  accepted = np.asarray(consensus.decide(scores, norms, cosines, rule))
  return SyntheticRound(sampled, updates, local_maes, mae_matrix, scores, norms, cosines,
                        accepted)


def evidence(r: SyntheticRound) -> run_lib.RoundEvidence:
  """What record_round records of a synthetic round."""
  return run_lib.RoundEvidence(
      r.sampled, tuple(update_digest(u) for u in r.updates), r.local_maes, r.mae_matrix,
      r.vote_scores, r.accepted, r.update_norms, r.cosines)


SIGMA, CLIP_NORM, DELTA = 1.0, 1.0, 1e-5


def round_epsilon(run: run_lib.RunLedger, r: SyntheticRound) -> float:
  """The accountant's epsilon after the run's recorded rounds and `r` (sigma SIGMA, DELTA)."""
  rounds = [(b.transactions[-1].body["num_sampled"], b.transactions[-1].body["sigma"])
            for b in run.ledger.blocks if b.round >= 0]
  return audit.accountant_epsilon(len(run.hospitals), rounds + [(len(r.sampled), SIGMA)], DELTA)


def model_record(r: SyntheticRound, epsilon: float,
                 checkpoint_dir=None) -> run_lib.GlobalModelRecord:
  """A synthetic round's global-model record (sigma = S = 1, delta = 1e-5)."""
  return run_lib.GlobalModelRecord(epsilon, DELTA, SIGMA, CLIP_NORM, checkpoint_dir,
                                   update_digest(r.updates[0]))


def round_records(r: SyntheticRound, epsilon: float, checkpoint_dir=None, **changes):
  """(evidence, model record) of a synthetic round, with fields of either replaced by `changes`."""
  evidence_fields = {f.name for f in dataclasses.fields(run_lib.RoundEvidence)}
  unknown = set(changes) - evidence_fields - {
      f.name for f in dataclasses.fields(run_lib.GlobalModelRecord)}
  if unknown:
    raise TypeError(f"no such round record field(s): {sorted(unknown)}")
  return (dataclasses.replace(evidence(r), **{k: v for k, v in changes.items()
                                              if k in evidence_fields}),
          dataclasses.replace(model_record(r, epsilon, checkpoint_dir),
                              **{k: v for k, v in changes.items() if k not in evidence_fields}))


def record_synthetic_round(run: run_lib.RunLedger, round_index: int, r: SyntheticRound,
                           epsilon: float | None = None, checkpoint_dir=None,
                           **changes) -> run_lib.RunLedger:
  """Record `r`; epsilon None: the accountant's (round_epsilon), as a real run records it."""
  epsilon = round_epsilon(run, r) if epsilon is None else epsilon
  return run_lib.record_round(run, round_index, run_lib.round_roles(run, round_index),
                              *round_records(r, epsilon, checkpoint_dir, **changes))
