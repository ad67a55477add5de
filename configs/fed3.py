r"""3 hospitals, synthetic CT phantom, small CNN, client-level DP.

  python -m ccfl_jax.main --config=configs/fed3.py

About 2 minutes on a 2-core CPU (60 synthetic patients, 3 hospitals x 5 local steps).
"""
from ccfl_jax.configuration import default_config


def get_config():
  c = default_config()
  c.run_name = "fed3"
  c.dataset.num_patients = 60
  c.num_hospitals = 3
  c.hospitals_per_round = 3
  c.num_rounds = 40
  return c
