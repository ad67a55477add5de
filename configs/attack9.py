r"""9 hospitals, 2 of them poisoning their updates, under the ledger's MAE vote (eqs. 14-15).

  python -m ccfl_jax.main --config=configs/attack9.py --config.attack.kind=scale
  python tools/attacks.py    # no attack, sign_flip and scale x10: results/attacks.md

fed9's model, optimizers and privacy at 32x32 and 30 rounds, so that the runs of
tools/attacks.py fit in about 10 minutes on a 2-core CPU. Hospitals 0 and 1 are malicious
(attacks.py). The vote ignores self-reported MAEs (gamma = 0), so every local model is judged
on the same 5 verifier batches and cannot talk its own score down. Measured: it catches few
poisoned updates on this weakly trained model (22-28%, no better than gamma = 0.5 with 3
verifiers at 38%); see results/attacks.md for why.
"""
from ccfl_jax.configuration import default_config


def get_config():
  c = default_config()
  c.run_name = "attack9"
  c.dataset.image_size = 32
  c.num_hospitals = 9
  c.hospitals_per_round = 9
  c.num_rounds = 30
  c.ledger.num_verifiers = 5
  c.ledger.consensus.gamma = 0.0
  c.attack.kind = "sign_flip"
  c.attack.num_malicious = 2
  c.attack.scale = 10.0
  return c
