r"""Rounds per second of the compiled engine vs. the sequential loop, in one process.

  python tools/bench_round.py [--hospitals=9,36] [--rounds=5] [--out=results/bench_round]

For the small CNN and a small MLP at H = 9 and H = 36 (every hospital sampled, K local
steps, batch 32), times the sequential engine (one jitted dispatch per hospital), the
compiled engine with each hospital-axis mapping (vmap, unroll), and the compiled engine
with the backend's default mapping and bfloat16 local training (engine.compute_dtype),
after one warm-up round that compiles. Roofline: each round's FLOPs (XLA cost analysis)
per second against this machine's f32 matmul peak, measured in the same process (a jitted
2048 x 2048 matmul). Writes <out>.md and <out>.json. Ratios are what to read on a shared
CPU; absolute times only on an accelerator. Runs unchanged on a GPU.
"""
import dataclasses
import json
import pathlib
import platform
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from ccfl_jax.data import hospitals, partition, phantom  # noqa: E402
from ccfl_jax.federated import engine, mesh as mesh_lib, server  # noqa: E402
from ccfl_jax.models import get_model, uses_convolutions  # noqa: E402

_HOSPITALS = flags.DEFINE_list("hospitals", ["9", "36"], "Hospital counts H.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds per case (after one warm-up).")
_LOCAL_STEPS = flags.DEFINE_integer("local_steps", 5, "K local steps.")
_MODELS = flags.DEFINE_list("models", ["mlp", "small_cnn"], "Models to time.")
_OUT = flags.DEFINE_string("out", "results/bench_round", "Output path without extension.")

# (constructor kwargs, slice size). The MLP is the dispatch-bound case: small enough (about
# 0.2 MFLOP per local step) that a round's time is launching per-hospital work, not arithmetic.
MODEL_CASES = {"mlp": (dict(hidden=(16,)), 8), "small_cnn": ({}, 32)}


def hospital_data(num_hospitals, image_size):
  slices = phantom.make_phantom(0, 4 * num_hospitals, 8, 0.5, image_size, -600, 1500)
  part = partition.partition(slices, num_hospitals, "iid", seed=0, test_fraction=0.0)
  return hospitals.stack_hospitals(slices, part.hospitals)


def time_rounds(run_round, state, data, sampled, rounds):
  """Seconds of the warm-up (compiling) round and the median of `rounds` timed rounds."""
  tic = time.perf_counter()
  state, _ = run_round(state, data, sampled, jax.random.key(0))
  jax.block_until_ready(state)
  first = time.perf_counter() - tic
  times = []
  for r in range(rounds):
    tic = time.perf_counter()
    state, _ = run_round(state, data, sampled, jax.random.key(r + 1))
    jax.block_until_ready(state)
    times.append(time.perf_counter() - tic)
  return first, statistics.median(times)


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
  """This machine's f32 matmul rate (GFLOP/s): the median of `repeats` jitted size^3 products."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  product = jax.jit(lambda x: x @ x)
  product(a).block_until_ready()
  times = []
  for _ in range(repeats):
    tic = time.perf_counter()
    product(a).block_until_ready()
    times.append(time.perf_counter() - tic)
  return 2 * size ** 3 / statistics.median(times) / 1e9


def bench_case(model_name, num_hospitals, mesh, rounds, peak_gflops):
  model_kwargs, image_size = MODEL_CASES[model_name]
  model = get_model(model_name, **model_kwargs)
  settings = engine.RoundSettings(
      model, optax.sgd(0.05, momentum=0.9), optax.sgd(1.0), _LOCAL_STEPS.value, 32, 1.0, 0.1,
      mesh_lib.default_unroll_local_steps())
  auto = mesh_lib.default_hospital_axis(uses_convolutions(model, image_size))
  bfloat16 = dataclasses.replace(settings, compute_dtype="bfloat16")
  data = hospital_data(num_hospitals, image_size)
  params = model.module.init(jax.random.key(0), jnp.zeros((1,) + data.images.shape[2:]))
  state = server.init_state(params, settings.server_optimizer)
  sampled = np.arange(num_hospitals)
  engines = {"sequential": (engine.sequential_round(settings), "host")}
  for axis in ("unroll", "vmap"):
    engines[f"compiled/{axis}"] = (engine.compiled_round(settings, mesh, axis), "host")
  engines[f"compiled/{auto}, bfloat16"] = (engine.compiled_round(bfloat16, mesh, auto), "host")
  forward = jax.jit(model.module.apply).lower(
      params, jnp.zeros((32,) + data.images.shape[2:])).compile().cost_analysis()
  forward = forward[0] if isinstance(forward, list) else forward
  # forward + backward ~ 3 forwards, per local step, per hospital
  round_gflop = 3 * forward.get("flops", float("nan")) * _LOCAL_STEPS.value * num_hospitals / 1e9
  rows = []
  for name, (run_round, placement) in engines.items():
    device_data = engine.put_hospital_data(data, mesh, placement)
    first, median = time_rounds(run_round, state, device_data, sampled, rounds)
    rows.append(dict(model=model_name, model_kwargs=model_kwargs, image_size=image_size,
                     hospitals=num_hospitals, engine=name, round_gflop=round_gflop,
                     first_round_s=first, round_s=median, rounds_per_s=1.0 / median,
                     gflops=round_gflop / median,
                     percent_of_matmul_peak=100 * round_gflop / median / peak_gflops))
    print(f"{model_name:10s} H={num_hospitals:3d} {name:18s} first {first:7.2f}s  "
          f"round {median:7.3f}s", flush=True)
  sequential = rows[0]["round_s"]
  for row in rows:
    row["speedup_vs_sequential"] = sequential / row["round_s"]
  return rows


def markdown(rows, auto_axis, peak_gflops):
  lines = [
      "# Round throughput: compiled engine vs. sequential loop", "",
      f"Backend `{jax.default_backend()}`, devices: {', '.join(str(d) for d in jax.devices())}; "
      f"{platform.processor() or platform.machine()}. Every hospital sampled (m_t = H), "
      f"K = {_LOCAL_STEPS.value} local steps, batch 32; small_cnn on 32x32 slices, mlp (one "
      f"hidden layer of 16) on 8x8, the dispatch-bound case; GFLOP/round = 3 x forward FLOPs "
      f"(XLA cost analysis) x K x H; "
      f"median of {_ROUNDS.value} rounds after a warm-up round that compiles. Roofline: "
      f"GFLOP/round / round time against the f32 matmul peak measured in the same run, "
      f"{peak_gflops:.0f} GFLOP/s (a jitted 2048 x 2048 matmul; the bfloat16 row counts "
      f"the same FLOPs). "
      f"`engine.hospital_axis=auto` picks, on this backend: "
      f"{', '.join(f'{m}: `{a}`' for m, a in auto_axis.items())}.", "",
      "Command: `python tools/bench_round.py`", "",
      "| model | H | GFLOP/round | engine | first round (s) | round (ms) | rounds/s | "
      "x sequential | GFLOP/s | % of matmul peak |",
      "|---|---|---|---|---|---|---|---|---|---|"]
  lines += [f"| {r['model']} | {r['hospitals']} | {r['round_gflop']:.3g} | {r['engine']} | "
            f"{r['first_round_s']:.2f} | {1e3 * r['round_s']:.1f} | {r['rounds_per_s']:.2f} | "
            f"{r['speedup_vs_sequential']:.2f} | {r['gflops']:.3g} | "
            f"{r['percent_of_matmul_peak']:.2g} |"
            for r in rows]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  mesh = mesh_lib.hospital_mesh(1)
  peak_gflops = matmul_peak_gflops()
  print(f"f32 matmul peak {peak_gflops:.0f} GFLOP/s", flush=True)
  rows = []
  for num_hospitals in map(int, _HOSPITALS.value):
    for model_name in _MODELS.value:
      rows += bench_case(model_name, num_hospitals, mesh, _ROUNDS.value, peak_gflops)
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  auto_axis = {name: mesh_lib.default_hospital_axis(
      uses_convolutions(get_model(name, **MODEL_CASES[name][0]), MODEL_CASES[name][1]))
      for name in _MODELS.value}
  out.with_suffix(".json").write_text(json.dumps(
      dict(backend=jax.default_backend(), devices=[str(d) for d in jax.devices()],
           auto_hospital_axis=auto_axis, matmul_peak_gflops=peak_gflops, rows=rows), indent=2))
  out.with_suffix(".md").write_text(markdown(rows, auto_axis, peak_gflops))
  print(f"wrote {out}.md and {out}.json")


if __name__ == "__main__":
  app.run(main)
