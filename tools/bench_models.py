r"""Forward+backward cost of every registered model: milliseconds per step at batch 32 on
this CPU, parameter count, XLA's FLOP count per step, and the capsule head's share of
IV3*'s step.

  python tools/bench_models.py [--steps=5] [--out=results/bench_models.md]

A step is `jax.value_and_grad` of the model's mean loss (no optimizer update), jitted;
the median of `--steps` runs after one compiling run. Each model at its default (full)
size and a stated input size: small_cnn and mlp at 64x64, capsnet at Sabour's 28x28,
the Inception-V3 models at 75x75 (the smallest input IV3's original 'VALID' padding takes).
The capsule head's share is the time of a forward+backward of `iv3_capsule`'s head alone
(on features of the shape the extractor produces, gradients for its parameters and its
input) over the whole model's step.
"""
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from ccfl_jax.models import get_model, model_names, parameter_count
from ccfl_jax.models.iv3_capsule import CapsuleHead
from ccfl_jax.models.layers.inception import InceptionV3Features

BATCH = 32
IMAGE_SIZE = {"capsnet": 28, "iv3_capsule": 75, "iv3_mlp": 75}
DEFAULT_IMAGE_SIZE = 64

flags.DEFINE_integer("steps", 5, "Timed steps per model (median reported), after one compiling run.")
flags.DEFINE_string("out", "results/bench_models.md", "Markdown report to write.")


def flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis.get("flops", float("nan")))


def time_step(step, *args, steps: int):
  """Compile seconds, median milliseconds per step, FLOPs per step."""
  start = time.time()
  compiled = jax.jit(step).lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  compile_seconds = time.time() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(1000 * (time.perf_counter() - start))
  return compile_seconds, statistics.median(times), flops(compiled)


def bench_model(name: str, steps: int):
  spec = get_model(name)
  size = IMAGE_SIZE.get(name, DEFAULT_IMAGE_SIZE)
  images = jax.random.uniform(jax.random.key(0), (BATCH, size, size, 1))
  labels = jnp.arange(BATCH) % 2
  params = jax.jit(spec.module.init)(jax.random.key(1), images[:1])

  def step(params, images, labels):
    return jax.value_and_grad(
        lambda p: jnp.mean(spec.loss(spec.module.apply(p, images, train=True), images, labels))
    )(params)
  return (size, parameter_count(params), *time_step(step, params, images, labels, steps=steps))


def bench_capsule_head(steps: int):
  """Forward+backward of iv3_capsule's head alone, on IV3 features at 75x75."""
  defaults = get_model("iv3_capsule").module
  images = jnp.zeros((BATCH, IMAGE_SIZE["iv3_capsule"], IMAGE_SIZE["iv3_capsule"], 1))
  feature_shape = jax.eval_shape(
      lambda x: InceptionV3Features(defaults.width_multiplier, defaults.blocks).init_with_output(
          jax.random.key(0), x)[0], images).shape
  features = jax.random.normal(jax.random.key(0), feature_shape)
  head = CapsuleHead(defaults.num_classes, defaults.hidden_capsules, defaults.hidden_capsule_dim,
                     defaults.primary_capsules, defaults.primary_capsule_dim,
                     defaults.class_capsule_dim, defaults.routing_iterations, defaults.variant)
  params = jax.jit(head.init)(jax.random.key(1), features)

  def step(params, features):
    return jax.value_and_grad(lambda p, f: jnp.sum(jnp.square(head.apply(p, f))),
                              argnums=(0, 1))(params, features)
  return feature_shape, parameter_count(params), *time_step(step, params, features, steps=steps)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  args = flags.FLAGS
  rows, step_ms = [], {}
  for name in model_names():
    size, count, compile_seconds, ms, step_flops = bench_model(name, args.steps)
    step_ms[name] = (ms, step_flops)
    print(name, size, count, f"{compile_seconds:.1f} s compile", f"{ms:.1f} ms",
          f"{step_flops:.3g} flops", flush=True)
    rows.append(f"| {name} | {size}x{size}x1 | {count:,} | {ms:,.1f} | {step_flops / 1e9:,.2f} | "
                f"{step_flops / ms / 1e6:,.1f} | {compile_seconds:.1f} |")
  feature_shape, head_count, _, head_ms, head_flops = bench_capsule_head(args.steps)
  full_ms, full_flops = step_ms["iv3_capsule"]
  print("iv3_capsule head", feature_shape, head_count, f"{head_ms:.1f} ms",
        f"{head_ms / full_ms:.1%} of the step", flush=True)
  report = "\n".join([
      "# Forward+backward cost per model (batch 32, CPU)",
      "",
      f"`python tools/bench_models.py --steps {args.steps}`; {jax.devices()[0].device_kind}, "
      f"2 cores shared with other engineers' jobs (expect +-30% noise). A step is jitted "
      "`value_and_grad` of the mean loss at the model's default (full-size) constructor; "
      "median of the timed steps after a compiling one. FLOPs: XLA's `cost_analysis()` of "
      "the compiled step.",
      "",
      "| model | input | parameters | ms / step | GFLOPs / step | GFLOP/s | compile s |",
      "|---|---|---|---|---|---|---|",
      *rows,
      "",
      "## Capsule head share of `iv3_capsule` (IV3*, 'paper' variant)",
      "",
      f"Head alone (two routed capsule layers, 32 x 32D then 2 x 16D, 3 routings each; "
      f"{head_count:,} parameters) on features {tuple(feature_shape)}, forward+backward with "
      "gradients for its parameters and its input:",
      "",
      "| head ms / step | whole model ms / step | head share of time | head GFLOPs | "
      "head share of FLOPs |",
      "|---|---|---|---|---|",
      f"| {head_ms:,.1f} | {full_ms:,.1f} | {head_ms / full_ms:.1%} | {head_flops / 1e9:.3f} | "
      f"{head_flops / full_flops:.1%} |",
      ""])
  with open(args.out, "w") as f:
    f.write(report)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  app.run(main)
