r"""Evidence that the capsule layers learn: a small CapsNet on scikit-learn's digits.

scikit-learn's bundled handwritten digits (1,797 real 8x8 images, no download), upsampled
to 20x20, fixed stratified split (80% train / 20% test, seed 0). A small Sabour CapsNet
(conv 64 5x5 -> 8 x 8D primary capsules 5x5/2 -> 10 x 16D class capsules, decoder
256-512) trained with Adam and random shifts of up to 2 pixels (Sabour's augmentation), for
the routing-iteration ablation r = 1 and r = 3, and the 'paper' variant at r = 3.

  python tools/capsule_digits.py [--epochs=30] [--out=results/capsule_digits.md]

About 1-3 minutes per run on a shared 2-core CPU.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ccfl_jax.models import get_model, parameter_count
from train_centralized import make_train_step  # tools/ is on sys.path when run as a script

IMAGE_SIZE = 20
SMALL_CAPSNET = dict(num_classes=10, conv_features=64, conv_kernel=5, primary_capsules=8,
                     primary_capsule_dim=8, primary_kernel=5, class_capsule_dim=16,
                     decoder_widths=(256, 512))

flags.DEFINE_integer("epochs", 30, "Training epochs of each run.")
flags.DEFINE_integer("batch_size", 64, "Images per Adam step.")
flags.DEFINE_integer("seed", 0, "Seed of the model init, the batch order and the shifts.")
flags.DEFINE_string("out", "results/capsule_digits.md", "Markdown report to write.")
flags.DEFINE_string("runs", "sabour:1:3e-3,sabour:3:3e-3,paper:3:3e-3",
                    "Comma-separated runs, each variant:routing_iterations:peak_learning_rate "
                    "(variant 'sabour' or 'paper').")


def digit_images():
  """(N, 20, 20, 1) float32 in [0, 1] and labels, bilinearly upsampled from 8x8."""
  digits = load_digits()
  images = jnp.asarray(digits.images, jnp.float32)[..., None] / 16.0
  images = jax.image.resize(images, (len(images), IMAGE_SIZE, IMAGE_SIZE, 1), "bilinear")
  return np.asarray(images), digits.target.astype(np.int32)


def random_shifts(rng: np.random.Generator, images: np.ndarray, max_shift: int = 2):
  """Each image translated by up to max_shift pixels, zero fill."""
  padded = np.pad(images, ((0, 0), (max_shift,) * 2, (max_shift,) * 2, (0, 0)))
  offsets = rng.integers(0, 2 * max_shift + 1, size=(len(images), 2))
  return np.stack([p[y:y + IMAGE_SIZE, x:x + IMAGE_SIZE] for p, (y, x) in zip(padded, offsets)])


def train_and_test(kwargs, data, epochs, batch_size, seed, learning_rate=3e-3):
  (train_x, train_y), (test_x, test_y) = data
  spec = get_model("capsnet", **kwargs)
  params = spec.module.init(jax.random.key(seed), train_x[:1])
  steps_per_epoch = len(train_x) // batch_size
  schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch, 0.05)
  optimizer = optax.adam(schedule)
  opt_state = optimizer.init(params)
  train_step = make_train_step(spec, optimizer)
  predict = jax.jit(lambda p, x: jnp.argmax(spec.probabilities(spec.module.apply(p, x)), -1))
  rng = np.random.default_rng(seed)
  start = time.time()
  for _ in range(epochs):
    order = rng.permutation(len(train_x))
    for step in range(steps_per_epoch):
      batch = order[step * batch_size:(step + 1) * batch_size]
      params, opt_state, loss = train_step(params, opt_state,
                                           random_shifts(rng, train_x[batch]), train_y[batch])
  seconds = time.time() - start
  predictions = np.concatenate([predict(params, test_x[i:i + 120])
                                for i in range(0, len(test_x), 120)])
  return dict(accuracy=float(np.mean(predictions == test_y)), final_loss=float(loss),
              seconds=seconds, parameters=parameter_count(params))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  args = flags.FLAGS
  images, labels = digit_images()
  train_x, test_x, train_y, test_y = train_test_split(images, labels, test_size=0.2,
                                                      random_state=0, stratify=labels)
  data = ((train_x, train_y), (test_x, test_y))
  rows = []
  for run in args.runs.split(","):
    variant, iterations, learning_rate = run.split(":")
    iterations, learning_rate = int(iterations), float(learning_rate)
    kwargs = dict(SMALL_CAPSNET, variant=variant, routing_iterations=iterations)
    result = train_and_test(kwargs, data, args.epochs, args.batch_size, args.seed, learning_rate)
    print(variant, iterations, learning_rate, result, flush=True)
    rows.append(f"| {variant} | {iterations} | {learning_rate:g} | {result['accuracy']:.4f} | "
                f"{result['final_loss']:.4f} | {result['parameters']:,} | {result['seconds']:.0f} |")
  report = "\n".join([
      "# CapsNet on scikit-learn's handwritten digits",
      "",
      f"`python tools/capsule_digits.py --epochs {args.epochs} --runs {args.runs}` "
      f"(seed {args.seed}). "
      f"{len(train_x)} train / {len(test_x)} test images (stratified split, random_state=0), "
      f"8x8 upsampled bilinearly to {IMAGE_SIZE}x{IMAGE_SIZE}; random shifts of up to 2 pixels "
      "while training; Adam, cosine-decayed from the run's peak learning rate, batch "
      f"{args.batch_size}, "
      f"{args.epochs} epochs. Model: `capsnet` with {SMALL_CAPSNET}. Variant 'sabour': margin "
      "loss + 0.0005 x reconstruction; 'paper': the Keras-code rules (squash 0.5, logits reset, "
      "shared W) and cross-entropy on lengths + the same reconstruction term. Test accuracy is "
      "argmax of capsule length on the held-out test images, after the last epoch (no model "
      "selection on the test set). Timing on a 2-core CPU shared with other jobs.",
      "",
      "| variant | routing iterations r | peak lr | test accuracy | last batch loss | "
      "parameters | train seconds |",
      "|---|---|---|---|---|---|---|",
      *rows, ""])
  with open(args.out, "w") as f:
    f.write(report)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  app.run(main)
