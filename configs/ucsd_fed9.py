r"""9 hospitals on the real UCSD COVID-CT images, small CNN, client-level DP, evaluated on the
dataset's official val split (train images -> hospitals, by patient; val -> held-out test).

  python -m ccfl_jax.main --config=configs/ucsd_fed9.py \
      [--config.dataset.path=../shared/data/ucsd_covid_ct]

About 4-7 minutes on a 2-core CPU (425 train / 118 val images from 289 patients, 64x64;
9 hospitals x 10 local Adam steps per round; the measured wall time is in the summary).
Decoding the 543 images takes a few seconds the first time and is cached after that.
Results: results/ucsd_fed9/summary.md. Then, for per-patient metrics:

  python -m ccfl_jax.evaluate --run=results/ucsd_fed9 \
      --data=image_folder:../shared/data/ucsd_covid_ct --split=val
"""
from ccfl_jax.configuration import default_config


def get_config():
  c = default_config()
  c.run_name = "ucsd_fed9"
  c.dataset.name = "image_folder"
  c.dataset.path = "../shared/data/ucsd_covid_ct"
  c.dataset.image_size = 64
  # Otherwise the defaults = fed9's recipe: iid by patient over 9 hospitals, the official
  # split respected (train -> hospitals, val -> evaluation), 40 rounds of 10 local Adam steps.
  return c
