"""GEMM ceiling: how fast this CPU multiplies the train step's matrices.

Not a test. The CoDIR train step (train_step.py) spends ~77% of its time in
matmuls (profile_step.py). This script times the step's own GEMM shapes
alone in every backend the step could use, so the step's GFLOP/s can be
read against what the matmul libraries reach here: if PyTorch's step
already runs near the fastest GEMM, no JAX change can make the step much
faster than PyTorch on this machine.

Shapes (default B=8, T=128: M = B*T = 1024 rows; BERT-base width 768,
FFN 3072, 12 heads of 64; `--width 384 --batch_size 16 --seq_len 64` gives
the evidence runs' MiniLM students), each `[m, k] x [k, n]`:
  qkv/out    [1024, 768] x [768, 768]    (forward, and input gradient)
  ffn up     [1024, 768] x [768, 3072]
  ffn down   [1024, 3072] x [3072, 768]
  weight grad [768, 1024] x [1024, 3072] (the backward's dW = x^T dy)
  attention  96 x [128, 64] x [64, 128]   (batched scores)
The "step mix" row weighs them by their share of the step's matmul FLOPs
(per layer: 4 qkv/out, 1 up, 1 down; backward doubles each, attention
scores and values 2 batched GEMMs).

Backends, each in its own subprocess pinned to the same cores: NumPy
(its BLAS), PyTorch (float32 and bfloat16), JAX with XLA's default dot
(YNNPACK on jaxlib 0.10.2 CPU), JAX with YNNPACK off (Eigen DotThunk,
`--xla_cpu_experimental_ynn_fusion_type=`), JAX bfloat16. Without native
bf16 instructions (AVX2) PyTorch's bf16 GEMM runs at ~0.5 GFLOP/s: the
bf16 rows are timed once after one warm-up call (`--bf16_reps`).

  python benchmarks/gemm_ceiling.py [--reps 10 --bf16_reps 1] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

import common


def shapes(batch: int, seq: int, width: int) -> dict[str, tuple]:
  """{name: (batch, m, k, n, weight in the step's matmul FLOPs)}.

  A BERT layer of `width` (FFN 4x, heads of 64) on `batch` x `seq` tokens;
  the weights count each GEMM's uses per layer (forward + 2 backward).
  """
  rows, ffn, heads = batch * seq, 4 * width, width // 64
  return {
      "qkv/out": (1, rows, width, width, 4 * 3),
      "ffn up": (1, rows, width, ffn, 3),
      "ffn down": (1, rows, ffn, width, 3),
      "weight grad": (1, width, rows, ffn, 0),  # Timed; FLOPs are in up.
      "attention": (batch * heads, seq, 64, seq, 2 * 3),
  }


_EIGEN = "--xla_cpu_experimental_ynn_fusion_type="
BACKENDS = {  # name: (worker, dtype, extra XLA_FLAGS)
    "numpy f32": ("numpy", "float32", ""),
    "torch f32": ("torch", "float32", ""),
    "torch bf16": ("torch", "bfloat16", ""),
    "jax f32 (default dot)": ("jax", "float32", ""),
    "jax f32 (Eigen)": ("jax", "float32", _EIGEN),
    "jax bf16 (default dot)": ("jax", "bfloat16", ""),
}


def _shapes(args: argparse.Namespace) -> dict[str, tuple]:
  return shapes(args.batch_size, args.seq_len, args.width)


def _flops(shape: tuple) -> float:
  b, m, k, n, _ = shape
  return 2.0 * b * m * k * n


def _best(fn: Callable[[], Any], reps: int) -> float:
  """Fastest of `reps` calls after min(reps, 2) warm-up calls."""
  times, _ = common.time_calls(fn, steps=reps, warmup=min(reps, 2))
  return min(times)


def _numpy(args: argparse.Namespace) -> dict[str, float]:
  import numpy as np  # pylint: disable=g-import-not-at-top

  rng, out = np.random.default_rng(0), {}
  for name, (b, m, k, n, _) in _shapes(args).items():
    x = rng.standard_normal((b, m, k), dtype=np.float32)
    y = rng.standard_normal((b, k, n), dtype=np.float32)
    out[name] = _best(lambda x=x, y=y: np.matmul(x, y), args.reps)
  return out


def _torch(args: argparse.Namespace) -> dict[str, float]:
  import torch  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(args.threads)
  dtype, out = getattr(torch, args.dtype), {}
  for name, (b, m, k, n, _) in _shapes(args).items():
    x = torch.randn(b, m, k).to(dtype)
    y = torch.randn(b, k, n).to(dtype)
    out[name] = _best(lambda x=x, y=y: torch.matmul(x, y), args.reps)
  return out


def _jax(args: argparse.Namespace) -> dict[str, float]:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  dtype, out = getattr(jnp, args.dtype), {}
  matmul = jax.jit(jnp.matmul)
  for name, (b, m, k, n, _) in _shapes(args).items():
    keys = jax.random.split(jax.random.key(0))
    x = jax.random.normal(keys[0], (b, m, k)).astype(dtype)
    y = jax.random.normal(keys[1], (b, k, n)).astype(dtype)
    out[name] = _best(
        lambda x=x, y=y: matmul(x, y).block_until_ready(), args.reps
    )
  return out


WORKERS = {"numpy": _numpy, "torch": _torch, "jax": _jax}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reps", type=int, default=10, help="timed calls")
  parser.add_argument(
      "--bf16_reps", type=int, default=1, help="timed calls, bf16 rows"
  )
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--seq_len", type=int, default=128)
  parser.add_argument("--width", type=int, default=768, help="hidden size")
  parser.add_argument("--threads", type=int, default=common.DEFAULT_THREADS)
  parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
  common.add_worker_flags(parser)
  args = parser.parse_args()
  if common.worker_main(args, WORKERS):
    return
  results: dict[str, Any] = {}
  table = _shapes(args)
  for label, (worker, dtype, flags) in BACKENDS.items():
    env = dict(os.environ)
    if flags:
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
    print(f"[{label}] before: {common.load_snapshot()}", flush=True)
    reps = args.bf16_reps if dtype == "bfloat16" else args.reps
    argv = ["--reps", str(reps), "--threads", str(args.threads)]
    argv += [
        "--batch_size",
        str(args.batch_size),
        "--seq_len",
        str(args.seq_len),
    ]
    argv += ["--width", str(args.width)]
    secs = common.run_worker(
        __file__, worker, argv + ["--dtype", dtype], env=env
    )
    results[label] = {n: _flops(table[n]) / s / 1e9 for n, s in secs.items()}
    weights = {n: s[-1] * _flops(s) for n, s in table.items() if s[-1]}
    mix_s = sum(w / (results[label][n] * 1e9) for n, w in weights.items())
    results[label]["step mix"] = sum(weights.values()) / mix_s / 1e9
  info = common.machine_info()
  names = [*table, "step mix"]
  print(
      f"\nGEMM GFLOP/s (best of {args.reps} calls; bf16 rows: of"
      f" {args.bf16_reps}), B={args.batch_size} T={args.seq_len}"
      f" width {args.width}, {args.threads} cores"
  )
  print(common.machine_line(info))
  print("\n| backend | " + " | ".join(names) + " |")
  print("|---" * (len(names) + 1) + "|")
  for label, row in results.items():
    cells = " | ".join(f"{row[n]:.0f}" for n in names)
    print(f"| {label} | {cells} |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(dict(machine=info, gflops=results, reps=args.reps), f, indent=1)


if __name__ == "__main__":
  main()
