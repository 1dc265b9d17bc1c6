"""Train-step throughput: codir_jax CoDIR step vs the same step in PyTorch.

Not a test. Both sides run the full CoDIR fine-tuning step on random
weights and random tokens: frozen 12-layer BERT-base teacher forward (no
gradient), 6-layer student forward/backward (teacher layers 2, 4, .., 12
copied, dropout 0.1), masked-mean pooling of all student layers and of the
teacher's even layers, concat + linear projection to P = 128 + L2
normalisation on both sides, CE + KD (beta 0.5, rho 2) + lambda * symmetric
InfoNCE (tau 0.07) against K label-aware negatives per example from two
memory banks of N slots, AdamW (0.9, 0.98, eps 1e-6, wd 0.1, no decay on
1-D params) with global-norm clipping 1.0 and a linear schedule, and
momentum-0.5 bank writes.

- JAX: exactly what the trainer runs, `codir_jax.train.loop.compile_run`
  (one jit, donated state, sharded over a 1-device mesh), compiled once
  ahead of time with `.lower().compile()`.
- PyTorch: eager `transformers.BertForSequenceClassification` (default
  `sdpa` attention), `torch.optim.AdamW`, and a hand-written bank (negatives
  drawn from per-label index pools, the idiomatic PyTorch way; the JAX bank
  builds a [B, N] eligibility mask each step, which is more general).

Each framework runs in its own subprocess, one after the other, pinned to
the same CPU cores (`os.sched_setaffinity`) with one intra-op thread per
core (`torch.set_num_threads`; XLA sizes its Eigen pool from the affinity
mask), so neither threadpool competes with the other. Warm-up steps (and
compilation) are excluded; the median over `--steps` timed steps is
reported.

On a GPU (not available on the dev machine: that path is written but was
never run) both sides use bf16 compute (JAX: `EncoderConfig.dtype`,
PyTorch: `torch.autocast`) and MFU is reported against `--peak_tflops`.
On CPU the table gives achieved GFLOP/s instead (no reliable peak: a
plain-matmul "peak" measured earlier was exceeded by these steps), and the
ratio depends on the CPU's ISA (AVX-512 vs AVX2): the machine line printed
with the table names the CPU, its ISA, bf16 support and XLA's dot backend.
FLOPs per step are XLA's cost analysis of the compiled JAX step; the
PyTorch step does the same math, so the same count is used for both.
Models, batches and both steps are built in setup_models.py; workers,
pinning and timing are common.py.

  python benchmarks/train_step.py [--batch_size 8 --seq_len 128
      --num_negatives 1024 --bank_size 4096 --steps 5 --warmup 2]
      [--small] [--frameworks jax,torch] [--out FILE.json]
      [--jax_xla_flags '--xla_cpu_experimental_ynn_fusion_type=;...']
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import common
import setup_models

# Dense bf16 peak per GPU kind (vendor datasheets, no sparsity).
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0}


def jax_worker(args) -> dict[str, Any]:
  """Measures the JAX step (run in a pinned subprocess)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  gpu = jax.default_backend() == "gpu"
  t0 = time.perf_counter()
  exe, state, batch, tp, flops = setup_models.build_jax_step(
      args, dtype=jnp.bfloat16 if gpu else None
  )
  compile_s = time.perf_counter() - t0
  carry = {"state": state}

  def one_step():
    carry["state"], metrics = exe(carry["state"], batch, tp)
    jax.block_until_ready((carry["state"], metrics))
    return metrics

  times, metrics = common.time_calls(
      one_step, steps=args.steps, warmup=args.warmup
  )
  return dict(
      framework="jax",
      backend=jax.default_backend(),
      device=str(jax.devices()[0].device_kind),
      dtype="bfloat16" if gpu else "float32",
      times=times,
      flops=flops,
      setup_compile_s=compile_s,
      final_loss=float(metrics["loss"][0]),
      jax_version=jax.__version__,
  )


def torch_worker(args) -> dict[str, Any]:
  """Measures the PyTorch eager step (run in a pinned subprocess)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(args.threads)
  torch.set_num_interop_threads(1)
  gpu = torch.cuda.is_available()
  device = torch.device("cuda" if gpu else "cpu")
  t0 = time.perf_counter()
  model = setup_models.TorchCoDIR(args, device)
  batch = {
      k: torch.as_tensor(np.asarray(v)).to(device)
      for k, v in setup_models.host_batch(
          args, setup_models.bank_label_array(args)
      ).items()
  }
  batch["labels"] = batch["labels"].long()
  batch["example_ids"] = batch["example_ids"].long()
  setup_s = time.perf_counter() - t0

  def one_step():
    loss = model.step(batch)
    if gpu:
      torch.cuda.synchronize()
    return loss

  times, loss = common.time_calls(
      one_step, steps=args.steps, warmup=args.warmup
  )
  return dict(
      framework="torch",
      backend=device.type,
      device=torch.cuda.get_device_name() if gpu else "cpu",
      dtype="bfloat16" if gpu else "float32",
      times=times,
      setup_compile_s=setup_s,
      final_loss=float(loss),
      torch_threads=torch.get_num_threads(),
      torch_version=torch.__version__,
      transformers_version=transformers.__version__,
  )


def peak_flops(result: dict[str, Any], peak_tflops: float | None):
  if result["backend"] == "cpu":
    return None
  if peak_tflops:
    return peak_tflops * 1e12
  for name, tf in GPU_PEAK_TFLOPS.items():
    if name in result["device"]:
      return tf * 1e12
  return None


def summarise(r: dict[str, Any], batch_size: int, flops, peak) -> dict:
  med = statistics.median(r["times"])
  row = dict(
      r, median_s=med, min_s=min(r["times"]), examples_per_s=batch_size / med
  )
  if flops:
    row["gflops_per_s"] = flops / med / 1e9
  if flops and peak:
    row["mfu"] = flops / med / peak
  return row


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  common.add_common_flags(parser)
  common.add_worker_flags(parser)
  parser.add_argument("--num_negatives", type=int, default=1024, help="K")
  parser.add_argument("--bank_size", type=int, default=4096, help="N")
  parser.add_argument("--frameworks", default="jax,torch")
  parser.add_argument(
      "--jax_xla_flags",
      default="",
      help=(
          "';'-separated XLA_FLAGS settings: the JAX step runs once more per"
          " setting, each a row of the same table (e.g."
          " '--xla_cpu_experimental_ynn_fusion_type=' turns YNNPACK off)"
      ),
  )
  parser.add_argument(
      "--peak_tflops",
      type=float,
      default=None,
      help="GPU peak for MFU (default: by device name)",
  )
  args = parser.parse_args(argv)
  if args.small:
    args.batch_size, args.seq_len = min(args.batch_size, 4), 32
    args.num_negatives, args.bank_size = 64, 256
  return args


def main() -> None:
  args = parse_args()
  if common.worker_main(args, {"jax": jax_worker, "torch": torch_worker}):
    return
  argv = common.worker_argv(args)
  machine = common.machine_info()
  results, loads, dots = {}, {}, {}
  runs = [(fw, fw, None) for fw in args.frameworks.split(",")]
  for flags in filter(None, args.jax_xla_flags.split(";")):
    env = dict(os.environ, XLA_FLAGS=flags.strip())
    runs.append((f"jax [{flags.strip()}]", "jax", env))
    dots[runs[-1][0]] = common.probe_dot_backend(env)["dot"]
  for name, fw, env in runs:
    loads[name] = common.load_snapshot()
    print(f"[{name}] before: {loads[name]}", flush=True)
    results[name] = common.run_worker(__file__, fw, argv, env)
  flops = results.get("jax", {}).get("flops")
  rows = {
      fw: summarise(r, args.batch_size, flops, peak_flops(r, args.peak_tflops))
      for fw, r in results.items()
  }
  print(
      f"\nCoDIR train step, teacher {'small' if args.small else args.teacher},"
      f" B={args.batch_size} T={args.seq_len} "
      f"K={args.num_negatives} N={args.bank_size} P=128, "
      f"{args.threads} cores, {args.steps} timed steps after "
      f"{args.warmup} warm-up"
  )
  print(common.machine_line(machine))
  for name, dot in dots.items():
    print(f"{name}: XLA dot backend {dot}")
  print()
  print(
      "| framework | device | dtype | median s/step | min s/step | "
      "examples/s | GFLOP/s | MFU | setup+compile s |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for fw, r in rows.items():
    mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a (CPU)"
    gfs = f"{r['gflops_per_s']:.0f}" if "gflops_per_s" in r else "n/a"
    print(
        f"| {fw} | {r['backend']}:{r['device']} | {r['dtype']} | "
        f"{r['median_s']:.3f} | {r['min_s']:.3f} | "
        f"{r['examples_per_s']:.2f} | {gfs} | {mfu} | "
        f"{r['setup_compile_s']:.1f} |"
    )
  summary = {
      "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
      "results": rows,
      "load_before": loads,
      "machine": machine,
      "flops_per_step": flops,
  }
  if "jax" in rows and "torch" in rows:
    ratio = rows["jax"]["examples_per_s"] / rows["torch"]["examples_per_s"]
    summary["jax_over_torch"] = ratio
    best = rows["torch"]["min_s"] / rows["jax"]["min_s"]
    summary["jax_over_torch_min"] = best
    print(
        f"\nthroughput ratio jax / torch = {ratio:.2f}x from medians, "
        f"{best:.2f}x from the fastest steps "
        f"(target >= 1.2x: {'met' if ratio >= 1.2 else 'MISSED'})"
    )
    for name in (n for n in rows if n.startswith("jax [")):
      r = rows[name]["examples_per_s"] / rows["torch"]["examples_per_s"]
      summary.setdefault("variants_over_torch", {})[name] = r
      print(f"throughput ratio {name} / torch = {r:.2f}x from medians")
  if flops:
    print(f"FLOPs per step (XLA cost analysis): {flops / 1e9:.1f} GFLOP")
  print(
      f"step times: "
      + "; ".join(
          f"{fw}: " + ", ".join(f"{t:.3f}" for t in r["times"])
          for fw, r in rows.items()
      )
  )
  if args.out:
    with open(args.out, "w") as f:
      json.dump(summary, f, indent=1)


if __name__ == "__main__":
  main()
