r"""How a round's cost and memory grow with the number of hospitals H (issue #12, "Growth").

  python tools/bench_scale.py [--hospitals=9,100,1000] [--models=mlp,small_cnn]
                              [--out=results/bench_scale]

For each model, H and cohort m_t (every hospital, and 10% of them), one child process per
case builds H hospitals of synthetic slices in host memory (engine.data_placement = host,
federated/round_data.py), runs a warm-up round that compiles, then times --rounds rounds of
the compiled engine (hospital axis vmap: the one whose compile does not grow with m_t; on
CPU the default for convolutions, unroll, compiles in time proportional to m_t) and of the
sequential loop. Reported per case: seconds per hospital-step (round / (m_t x K)), the first
round (compile included), the bytes one round moves to the devices (its RoundData), the
hospitals' bytes in host memory, and the child's peak host RSS; device memory statistics
where the backend has them (GPU), else '-'. Writes <out>.md and <out>.json. Ratios are
what to read on a shared CPU; absolute times only on an accelerator. Runs unchanged on a GPU.
"""
import json
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

_HOSPITALS = flags.DEFINE_list("hospitals", ["9", "100", "1000"], "Hospital counts H.")
_MODELS = flags.DEFINE_list("models", ["mlp", "small_cnn"], "Models to time.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed rounds per case (after one warm-up).")
_LOCAL_STEPS = flags.DEFINE_integer("local_steps", 2, "K local steps.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Local batch size B.")
_SLICES = flags.DEFINE_integer("slices_per_hospital", 16, "Slices each hospital holds.")
_ENGINES = flags.DEFINE_list("engines", ["compiled", "sequential"], "Engines to time.")
_CASE = flags.DEFINE_string("case", "", "Internal: run one case (JSON) and print its row.")
_OUT = flags.DEFINE_string("out", "results/bench_scale", "Output path without extension.")

# (constructor kwargs, slice size), as tools/bench_round.py.
MODEL_CASES = {"mlp": (dict(hidden=(16,)), 8), "small_cnn": ({}, 32)}


def cohorts(num_hospitals: int) -> list[int]:
  return sorted({num_hospitals, max(1, num_hospitals // 10)}, reverse=True)


def _bytes(tree) -> int:
  import jax
  return int(sum(leaf.nbytes for leaf in jax.tree.leaves(tree)))


def run_case(case: dict) -> dict:
  """One (model, H, m_t, engine) in this process: the row of the table."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from ccfl_jax.data import hospitals
  from ccfl_jax.federated import engine, mesh as mesh_lib, round_data, sampling, server
  from ccfl_jax.models import get_model

  kwargs, size = MODEL_CASES[case["model"]]
  model = get_model(case["model"], **kwargs)
  settings = engine.RoundSettings(model, optax.sgd(0.05, momentum=0.9), optax.sgd(1.0),
                                  case["local_steps"], case["batch_size"], 1.0, 1.0,
                                  mesh_lib.default_unroll_local_steps())
  h, n = case["hospitals"], case["slices_per_hospital"]
  rng = np.random.default_rng(0)
  data = hospitals.HospitalData(rng.random((h, n, size, size, 1), np.float32),
                                rng.integers(0, 2, (h, n)).astype(np.int32),
                                np.full(h, n, np.int32))
  mesh = mesh_lib.hospital_mesh(1)
  run_round = (engine.compiled_round(settings, mesh, "vmap") if case["engine"] == "compiled"
               else engine.sequential_round(settings))
  params = model.module.init(jax.random.key(0), jnp.zeros((1, size, size, 1)))
  state = server.init_state(params, settings.server_optimizer)
  times = []
  for r in range(case["rounds"] + 1):
    sampled = sampling.sample_hospitals(0, r, h, case["per_round"])
    tic = time.perf_counter()
    state, _ = run_round(state, data, sampled, jax.random.key(r), round_index=r)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - tic)
  moved = engine.host_round_data(settings)(data, mesh_lib.pad_sampled(sampled, 1)[0],
                                           np.zeros(0, np.int32), jax.random.key(0))
  stats = jax.devices()[0].memory_stats() or {}
  round_s = statistics.median(times[1:])
  return dict(case, first_round_s=times[0], round_s=round_s,
              per_hospital_step_ms=1e3 * round_s / (case["per_round"] * case["local_steps"]),
              round_data_bytes=_bytes(moved), host_data_bytes=_bytes(data),
              params_bytes=_bytes(params),
              peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              device_peak_bytes=stats.get("peak_bytes_in_use"),
              backend=jax.default_backend(), device=str(jax.devices()[0]))


def _child(case: dict) -> dict:
  done = subprocess.run([sys.executable, __file__, f"--case={json.dumps(case)}"],
                        capture_output=True, text=True)
  if done.returncode != 0:
    raise RuntimeError(f"case {case} failed:\n{done.stderr[-3000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def _mib(value) -> str:
  return "-" if value is None else f"{value / 2**20:.3g}"


def markdown(rows: list[dict]) -> str:
  first = rows[0]
  lines = [
      "# Growth with the number of hospitals (tools/bench_scale.py)", "",
      f"Backend `{first['backend']}`, device {first['device']}; "
      f"{platform.processor() or platform.machine()}. Synthetic slices "
      f"({first['slices_per_hospital']} per hospital, in host memory: "
      "engine.data_placement = host), K = "
      f"{first['local_steps']} local steps of batch {first['batch_size']}; small_cnn on 32x32, "
      "mlp (hidden 16) on 8x8; compiled engine with hospital axis `vmap` (its compile does not "
      "grow with m_t), sequential loop; median of "
      f"{first['rounds']} rounds after a warm-up round. One child process per case (peak RSS "
      "is the child's). 'moved/round' is the RoundData a round sends to the devices; "
      "device peak only where the backend reports it.", "",
      "Command: `python tools/bench_scale.py`", "",
      "| model | H | m_t | engine | first round (s) | round (s) | ms per hospital-step | "
      "x H=9 (same m_t share) | moved/round (MiB) | host data (MiB) | peak RSS (MiB) | "
      "device peak (MiB) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    base = next((b for b in rows if b["model"] == r["model"] and b["engine"] == r["engine"]
                 and b["hospitals"] == min(x["hospitals"] for x in rows)
                 and (b["per_round"] == b["hospitals"]) == (r["per_round"] == r["hospitals"])),
                None)
    ratio = r["per_hospital_step_ms"] / base["per_hospital_step_ms"] if base else float("nan")
    lines.append(
        f"| {r['model']} | {r['hospitals']} | {r['per_round']} | {r['engine']} | "
        f"{r['first_round_s']:.2f} | {r['round_s']:.3f} | {r['per_hospital_step_ms']:.3f} | "
        f"{ratio:.2f} | {_mib(r['round_data_bytes'])} | {_mib(r['host_data_bytes'])} | "
        f"{r['peak_rss_mib']:.0f} | {_mib(r['device_peak_bytes'])} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if _CASE.value:
    print(json.dumps(run_case(json.loads(_CASE.value))))
    return
  rows = []
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  for model in _MODELS.value:
    for num_hospitals in map(int, _HOSPITALS.value):
      for per_round in cohorts(num_hospitals):
        for engine_kind in _ENGINES.value:
          case = dict(model=model, hospitals=num_hospitals, per_round=per_round,
                      engine=engine_kind, rounds=_ROUNDS.value,
                      local_steps=_LOCAL_STEPS.value, batch_size=_BATCH.value,
                      slices_per_hospital=_SLICES.value)
          rows.append(_child(case))
          r = rows[-1]
          print(f"{model:9s} H={num_hospitals:4d} m={per_round:4d} {engine_kind:10s} first "
                f"{r['first_round_s']:6.2f}s round {r['round_s']:7.3f}s "
                f"{r['per_hospital_step_ms']:7.3f} ms/hospital-step", flush=True)
          out.with_suffix(".json").write_text(json.dumps(dict(rows=rows), indent=1) + "\n")
          out.with_suffix(".md").write_text(markdown(rows))
  print(f"wrote {out}.md and {out}.json")


if __name__ == "__main__":
  app.run(main)
