r"""9 hospitals, synthetic CT phantom, small CNN, client-level DP: the project's main job.

  python -m ccfl_jax.main --config=configs/fed9.py

About 3-4 minutes on a 2-core CPU: 1,440 slices of 180 synthetic patients at 32x32, 36 of
them held out; 40 rounds of 9 hospitals x 10 local Adam steps, clip norm S = 2, noise
multiplier sigma = 0.1. Results: results/fed9/summary.md (sensitivity and specificity >= 0.9;
epsilon is large -- with 9 hospitals client-level DP buys little, and it is reported as is).
"""
from ccfl_jax.configuration import default_config


def get_config():
  c = default_config()
  c.run_name = "fed9"
  c.dataset.num_patients = 180
  c.dataset.slices_per_patient = 8
  c.dataset.image_size = 32
  c.num_hospitals = 9
  c.hospitals_per_round = 9
  c.num_rounds = 40
  c.local_steps = 10
  c.batch_size = 32
  c.local_optimizer.name = "adam"  # reset every round; SGD needs ~5x the rounds here
  c.local_optimizer.learning_rate = 0.003
  c.privacy.clip_norm = 2.0
  c.privacy.noise_multiplier = 0.1
  c.privacy.delta = 1e-5
  return c
