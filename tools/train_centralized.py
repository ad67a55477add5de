r"""Centralized (one-site) training of a registered model on a real image-folder dataset,
evaluated on its official val split: the non-federated baseline of the paper's Table III.

  python tools/train_centralized.py --model=iv3_capsule --image_size=96 --epochs=30 \
      --model_kwargs='{"width_multiplier": 0.25}' --out=results/iv3_capsule_ucsd.md

Trains on the `train` split of labels.csv, reports precision, sensitivity, specificity,
accuracy and AUC (`ccfl_jax.metrics`) on the `val` split after the last epoch; no model
selection on val. Random horizontal flips and shifts of up to 1/16 of the image while
training; AdamW, learning rate warmed up linearly then cosine-decayed.

The learning rate is what decides whether the GroupNorm Inception-V3 trains from scratch.
At 1e-3 Adam's first, sign-like steps move every weight of the extractor and the head by
the same 1e-3 in a correlated direction; the head's inputs are all-positive pooled ReLU
features, so that common-mode shift swamps the small image-to-image differences and the
model's output becomes the same for every image (it then fits only the batch's label
mean: loss stuck at 0.688, it cannot even overfit 64 images). At 1e-4 the same models
overfit 64 images in 40 steps. Hence the default 1e-4 with a short warm-up.
"""
import dataclasses
import json
import time
from typing import Callable

import jax
import numpy as np
import optax
from absl import app, flags, logging

from ccfl_jax import inference
from ccfl_jax.configuration import default_config
from ccfl_jax.data.datasets import load_dataset
from ccfl_jax.federated import client
from ccfl_jax.metrics import classification_metrics
from ccfl_jax.models import get_model, parameter_count


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """What one centralized training run does, alike for every model it trains."""
  image_size: int = 96
  epochs: int = 30
  batch_size: int = 32
  learning_rate: float = 1e-4
  warmup_epochs: float = 1.0
  weight_decay: float = 1e-4


def load_splits(data: str, image_size: int):
  """(train, val) CTSlices of an image folder's official split (grey, resized and padded)."""
  dataset = default_config().dataset
  dataset.name, dataset.path, dataset.image_size = "image_folder", data, image_size
  slices = load_dataset(dataset, 0)  # reading is deterministic: the seed is unused
  return slices.take(slices.split == "train"), slices.take(slices.split == "val")


def augment(rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
  """Random horizontal flips and translations of up to size/16 pixels, zero (air) fill."""
  size, shift = images.shape[1], max(1, images.shape[1] // 16)
  flipped = np.where(rng.random(len(images))[:, None, None, None] < 0.5, images[:, :, ::-1], images)
  padded = np.pad(flipped, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
  offsets = rng.integers(0, 2 * shift + 1, size=(len(images), 2))
  return np.stack([p[y:y + size, x:x + size] for p, (y, x) in zip(padded, offsets)])


def steps_per_epoch(num_images: int, batch_size: int) -> int:
  """Full batches per epoch (the remainder of each shuffled epoch is left out)."""
  return num_images // batch_size


def make_optimizer(settings: TrainSettings, num_images: int) -> optax.GradientTransformation:
  """AdamW, learning rate warmed up linearly from 0 to the peak, then cosine-decayed to 5%."""
  per_epoch = steps_per_epoch(num_images, settings.batch_size)
  total_steps = settings.epochs * per_epoch
  warmup_steps = min(int(settings.warmup_epochs * per_epoch), total_steps - 1)
  schedule = optax.warmup_cosine_decay_schedule(0.0, settings.learning_rate, warmup_steps,
                                                total_steps, settings.learning_rate * 0.05)
  return optax.adamw(schedule, weight_decay=settings.weight_decay)


def make_train_step(spec, optimizer):
  """The federated client's optimizer step (client.train_step), jitted."""
  return jax.jit(client.train_step(spec, optimizer))


def train(train_step, optimizer, params, split, settings: TrainSettings, seed: int,
          on_epoch: Callable[[int, float, object], None] = lambda epoch, loss, params: None):
  """`settings.epochs` shuffled, augmented epochs of `train_step` over `split` from `params`.

  Batch order and augmentation draw from default_rng(seed); `on_epoch(epoch, mean train
  loss, params)` is called after each epoch. Returns the trained params.
  """
  opt_state = optimizer.init(params)
  rng = np.random.default_rng(seed)
  batch_size = settings.batch_size
  for epoch in range(settings.epochs):
    order, losses = rng.permutation(len(split)), []
    for step in range(steps_per_epoch(len(split), batch_size)):
      batch = order[step * batch_size:(step + 1) * batch_size]
      params, opt_state, loss = train_step(params, opt_state, augment(rng, split.images[batch]),
                                           split.labels[batch])
      losses.append(float(loss))
    on_epoch(epoch + 1, float(np.mean(losses)), params)
  return params


def evaluate(spec, params, split) -> dict:
  """classification_metrics of the model's P(COVID) (threshold 0.5) on every image of split."""
  return classification_metrics(split.labels,
                                inference.covid_probabilities(spec, params, split.images))


def define_flags():
  """The CLI's flags; defined only when run as a script (capsule_digits imports this module)."""
  flags.DEFINE_string("model", "iv3_capsule", "Registered model name (ccfl_jax.models).")
  flags.DEFINE_string("model_kwargs", "{}",
                      "JSON object of the model's constructor kwargs, e.g. "
                      "'{\"width_multiplier\": 0.25}'.")
  flags.DEFINE_string("data", "../shared/data/ucsd_covid_ct",
                      "Image folder with labels.csv and an official train/val split.")
  flags.DEFINE_integer("image_size", 96, "Images are resized (aspect kept, padded) to this size.")
  flags.DEFINE_integer("epochs", 30, "Training epochs over the train split.")
  flags.DEFINE_integer("batch_size", 32, "Images per optimizer step.")
  flags.DEFINE_float("learning_rate", 1e-4,
                     "Peak AdamW learning rate (1e-3 collapses IV3 from scratch).")
  flags.DEFINE_float("warmup_epochs", 1.0,
                     "Epochs of linear warm-up from 0 to the peak, then cosine decay.")
  flags.DEFINE_float("weight_decay", 1e-4, "AdamW weight decay.")
  flags.DEFINE_integer("seed", 0, "Seed of the model init, the batch order and augmentation.")
  flags.DEFINE_string("out", "results/iv3_capsule_ucsd.md", "Markdown report to write.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  args = flags.FLAGS
  settings = TrainSettings(args.image_size, args.epochs, args.batch_size, args.learning_rate,
                           args.warmup_epochs, args.weight_decay)
  train_split, val = load_splits(args.data, settings.image_size)
  print(f"train {len(train_split)} ({train_split.labels.sum()} COVID), val {len(val)} "
        f"({val.labels.sum()} COVID)", flush=True)

  kwargs = json.loads(args.model_kwargs)
  spec = get_model(args.model, **kwargs)
  params = spec.module.init(jax.random.key(args.seed), train_split.images[:1])
  optimizer = make_optimizer(settings, len(train_split))
  history, start = [], time.time()

  def report_epoch(epoch, loss, epoch_params):
    if epoch % 5 == 0 or epoch == settings.epochs:
      auc = evaluate(spec, epoch_params, val)["auc"]
      history.append((epoch, loss, auc, time.time() - start))
      print(f"epoch {epoch}: train loss {loss:.4f}, val AUC {auc:.3f}, "
            f"{time.time() - start:.0f} s", flush=True)

  params = train(make_train_step(spec, optimizer), optimizer, params, train_split, settings,
                 args.seed, report_epoch)
  metrics = evaluate(spec, params, val)
  print(metrics)

  names = ("precision", "sensitivity", "specificity", "accuracy", "f1", "auc")
  report = "\n".join([
      f"# `{args.model}` trained centrally on UCSD COVID-CT, evaluated on its val split",
      "",
      f"`python tools/train_centralized.py --model {args.model} --image_size {args.image_size} "
      f"--epochs {args.epochs} --learning_rate {args.learning_rate} --warmup_epochs "
      f"{args.warmup_epochs} --weight_decay {args.weight_decay} --model_kwargs "
      f"'{args.model_kwargs}'` (seed {args.seed}).",
      "",
      f"- Data: {args.data} via `ccfl_jax.data.image_folder` (grayscale, aspect-preserving "
      f"resize to {args.image_size} and pad); official split: {len(train_split)} train images "
      f"({int(train_split.labels.sum())} COVID), {len(val)} val images "
      f"({int(val.labels.sum())} COVID).",
      f"- Model: `{args.model}` {kwargs or ''}, {parameter_count(params):,} parameters, from "
      f"scratch. Batch {args.batch_size}, AdamW (peak lr {args.learning_rate} after "
      f"{args.warmup_epochs} warm-up epochs, cosine decay, weight decay {args.weight_decay}), "
      f"random flips and shifts, {args.epochs} epochs, "
      f"{time.time() - start:.0f} s on a 2-core CPU shared with other jobs.",
      "- Metrics (`ccfl_jax.metrics.classification_metrics`, threshold 0.5 on P(COVID) = "
      "normalized capsule length for capsule models) after the last epoch, per image; no "
      "model selection on val.",
      "",
      "| " + " | ".join(names) + " | confusion [[tn, fp], [fn, tp]] |",
      "|" + "---|" * (len(names) + 1),
      "| " + " | ".join(f"{metrics[n]:.3f}" for n in names) + f" | {metrics['confusion_matrix']} |",
      "",
      "Training curve (val AUC every 5 epochs, for information only):",
      "",
      "| epoch | mean train loss | val AUC | seconds |",
      "|---|---|---|---|",
      *[f"| {e} | {l:.4f} | {a:.3f} | {s:.0f} |" for e, l, a, s in history], ""])
  with open(args.out, "w") as f:
    f.write(report)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
