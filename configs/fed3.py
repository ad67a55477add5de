r"""3 hospitals, synthetic CT phantom, small CNN, client-level DP.

  python -m ccfl_jax.main --config=configs/fed3.py

About 1-2 minutes on a 2-core CPU: 60 synthetic patients at 32x32, 40 rounds of 3 hospitals x
10 local Adam steps, S = 2, sigma = 0.1.
"""
from ccfl_jax.configuration import default_config


def get_config():
  c = default_config()
  c.run_name = "fed3"
  c.dataset.num_patients = 60
  c.dataset.slices_per_patient = 8
  c.dataset.image_size = 32
  c.num_hospitals = 3
  c.hospitals_per_round = 3
  c.num_rounds = 40
  c.local_steps = 10
  c.batch_size = 32
  c.local_optimizer.name = "adam"  # reset every round; SGD needs ~5x the rounds here
  c.local_optimizer.learning_rate = 0.003
  c.privacy.clip_norm = 2.0
  c.privacy.noise_multiplier = 0.1
  c.privacy.delta = 1e-5
  return c
