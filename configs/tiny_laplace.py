r"""configs/tiny.py under the local Laplace mechanism (eqs. 12-13): a seconds-long smoke run.

  python -m ccfl_jax.main --config=configs/tiny_laplace.py

About 20 seconds on a 2-core CPU. Each sampled hospital clips its update to L1 norm
B = clip_norm = 2 and adds Laplace noise of scale 2B / laplace_epsilon itself; the server adds
none (noise_multiplier 0). Used by the tests.
"""
import pathlib

from ccfl_jax.configuration import load_config_file


def get_config():
  c = load_config_file(pathlib.Path(__file__).with_name("tiny.py"))
  c.run_name = "tiny_laplace"
  c.privacy.mechanism = "laplace_local"
  c.privacy.noise_multiplier = 0.0
  c.privacy.laplace_epsilon = 50.0
  return c
