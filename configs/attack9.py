r"""fed9 with 2 of its 9 hospitals poisoning their updates, under the ledger's vote.

  python -m ccfl_jax.main --config=configs/attack9.py --config.attack.kind=scale
  python tools/attacks.py    # no attack, sign_flip, scale x10, sign_flip without the vote
  python -m ccfl_jax.main --config=configs/attack9.py --config.attack.kind=min_max \
      --config.aggregation.rule=multi_krum --config.aggregation.f=2
  python tools/robustness.py   # attacks (alie, ipm, min_max, min_sum, backdoor, ...) x defences

fed9's data, model, optimizers, privacy and 40 rounds (configs/fed9.py): about 2 minutes per
run on an idle 2-core CPU. Hospitals 0 and 1 are malicious (federated/attacks.py). The vote ignores
self-reported MAEs (gamma = 0), so every local model is judged on the same 5 verifiers'
validation batches and cannot talk its own score down; eq. 15 rejects above median + 4 MAD
(k = 3 rejected more honest updates: results/attacks.md). The eq. 15 MAE alone misses most
sign-flipped updates (results/attacks.md), so the update checks of ledger/consensus.py are
on: direction (cosine with the coordinate-wise median update below median - 2.5 MAD and
below 0.2) and magnitude (submitted norm above 3x the round's median). Results:
results/attacks.md. The colluding attacks (config.attack.kind alie | ipm | min_max | min_sum),
the backdoor and the robust aggregation rules (config.aggregation.rule) run on this config
too; tools/robustness.py runs it small (16 px, 15 rounds) against each: results/robustness.md.
"""
import pathlib

from ccfl_jax.configuration import load_config_file


def get_config():
  c = load_config_file(pathlib.Path(__file__).with_name("fed9.py"))
  c.run_name = "attack9"
  c.ledger.num_verifiers = 5
  c.ledger.validation_size = 64
  c.ledger.consensus.gamma = 0.0
  c.ledger.consensus.k = 4.0
  c.ledger.consensus.direction_k = 2.5
  c.ledger.consensus.direction_cosine = 0.2
  c.ledger.consensus.max_norm_ratio = 3.0
  c.attack.kind = "sign_flip"
  c.attack.num_malicious = 2
  return c
