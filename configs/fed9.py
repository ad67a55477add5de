r"""9 hospitals, synthetic CT phantom, small CNN, client-level DP: the project's main job.

  python -m ccfl_jax.main --config=configs/fed9.py

About 4 minutes on a 2-core CPU (1,440 slices of 180 synthetic patients at 64x64; 9
hospitals x 5 local steps per round). Results: results/fed9/summary.md.
"""
from ccfl_jax.configuration import default_config


def get_config():
  c = default_config()
  c.run_name = "fed9"
  c.num_hospitals = 9
  c.hospitals_per_round = 9
  c.num_rounds = 40
  return c
