r"""9 hospitals on the real UCSD COVID-CT images, small CNN, client-level DP, evaluated on the
dataset's official val split (train images -> hospitals, by patient; val -> held-out test).

  python -m ccfl_jax.main --config=configs/ucsd_fed9.py \
      [--config.dataset.path=../shared/data/ucsd_covid_ct]

About 4-7 minutes on a 2-core CPU (6 min 53 s measured with the CPU shared; 425 train / 118 val
images from 289 patients, 64x64; 9 hospitals x 10 local Adam steps per round). Decoding the 543 images
takes ~3-4 s the first time and is cached after that. Results: results/ucsd_fed9/summary.md. Then, for per-patient metrics:

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
  c.partition.kind = "iid"
  c.partition.use_official_split = True  # train -> 9 hospitals, val -> evaluation
  c.num_hospitals = 9
  c.hospitals_per_round = 9
  c.num_rounds = 40
  c.local_steps = 10
  c.local_optimizer.name = "adam"  # as fed9: reset every round
  c.local_optimizer.learning_rate = 0.003
  c.privacy.clip_norm = 2.0
  return c
