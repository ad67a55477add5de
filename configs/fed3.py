r"""fed9's recipe (configs/fed9.py) with 3 hospitals and 60 synthetic patients.

  python -m ccfl_jax.main --config=configs/fed3.py

About 1-2 minutes on a 2-core CPU: 40 rounds of 3 hospitals x 10 local Adam steps at 32x32,
S = 2, sigma = 0.1. With 3 hospitals each round's noise on the average is 3x fed9's.
"""
import pathlib

from ccfl_jax.configuration import load_config_file


def get_config():
  c = load_config_file(pathlib.Path(__file__).with_name("fed9.py"))
  c.run_name = "fed3"
  c.dataset.num_patients = 60
  c.num_hospitals = 3
  c.hospitals_per_round = 3
  return c
