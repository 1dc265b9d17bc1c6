"""Inference speed: 6-layer student vs 12-layer teacher (forward only).

Not a test. METHOD.md "Evaluation": examples per second of the student vs
the teacher at equal batch and length (the paper reports about 2x for
12 -> 6 layers). Both are codir_jax `SequenceClassifier`s (BERT-base
teacher with random weights, student = `make_student`: teacher layers
2, 4, .., 12), run through `step.predict_step` (the evaluation forward:
logits only, deterministic) under one `jax.jit` each, compiled ahead of
time. Target (issue 7): student >= 1.9x the teacher. `--frameworks
jax,torch` adds the same pair as transformers `BertForSequenceClassification`
in PyTorch eager (`torch.inference_mode`) for reference. Each framework
runs in its own pinned subprocess (common.py); teacher and student calls
alternate (one of each per round). Models come from setup_models.py. The
printed machine line (CPU, ISA, bf16, XLA dot backend) goes with the table:
the numbers depend on it.

  python benchmarks/inference.py [--batch_size 8 --seq_len 128 --steps 5
      --warmup 2] [--small] [--frameworks jax] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics

import common
import setup_models


def _interleaved(fns, steps, warmup) -> dict:
  """Times {name: (fn, flops)} in rounds -> {name: {times, flops}}.

  Interleaving (common.interleaved) makes load from other processes on the
  shared CPU hit the teacher and the student alike.
  """
  times = common.interleaved(
      {n: fn for n, (fn, _) in fns.items()}, steps=steps, warmup=warmup
  )
  return {n: dict(times=times[n], flops=fl) for n, (_, fl) in fns.items()}


def jax_worker(args) -> dict:
  """Seconds per forward for the teacher and the student (JAX)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from codir_jax.train import forward  # pylint: disable=g-import-not-at-top

  gpu = jax.default_backend() == "gpu"
  teacher, student = setup_models.jax_models(
      args, jnp.bfloat16 if gpu else None
  )
  host = setup_models.host_batch(args, [0] * max(args.batch_size, 8))
  batch = {
      k: jnp.asarray(host[k])
      for k in ("input_ids", "attention_mask", "token_type_ids")
  }
  fns = {}
  for name, model in (("teacher", teacher), ("student", student)):
    graphdef, params = nnx.split(model)
    fwd = jax.jit(functools.partial(forward.predict_step, graphdef=graphdef))
    exe = fwd.lower(params, batch).compile()
    fns[name] = (
        functools.partial(
            lambda e, p: e(p, batch).block_until_ready(), exe, params
        ),
        exe.cost_analysis().get("flops"),
    )
  return _interleaved(fns, args.steps, args.warmup)


def torch_worker(args) -> dict:
  """Seconds per forward for the teacher and the student (PyTorch)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(args.threads)
  torch.set_num_interop_threads(1)
  gpu = torch.cuda.is_available()
  device = torch.device("cuda" if gpu else "cpu")
  teacher, student = setup_models.torch_models(args)
  host = setup_models.host_batch(args, [0] * max(args.batch_size, 8))
  batch = {
      k: torch.as_tensor(np.asarray(host[k])).to(device)
      for k in ("input_ids", "attention_mask", "token_type_ids")
  }
  fns = {}
  for name, model in (("teacher", teacher), ("student", student)):
    model = model.eval().to(device)

    def fwd(model=model):
      with (
          torch.inference_mode(),
          torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu),
      ):
        model(**batch).logits.float()
      if gpu:
        torch.cuda.synchronize()

    fns[name] = (fwd, None)
  return _interleaved(fns, args.steps, args.warmup)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  common.add_common_flags(parser)
  common.add_worker_flags(parser)
  parser.add_argument("--frameworks", default="jax")
  args = parser.parse_args()
  if args.small:
    args.batch_size, args.seq_len = min(args.batch_size, 4), 32
  if common.worker_main(args, {"jax": jax_worker, "torch": torch_worker}):
    return
  argv = common.worker_argv(args)
  machine = common.machine_info()
  results, loads = {}, {}
  for fw in args.frameworks.split(","):
    loads[fw] = common.load_snapshot()
    print(f"[{fw}] before: {loads[fw]}", flush=True)
    results[fw] = common.run_worker(__file__, fw, argv)
  print(
      f"\nForward only, B={args.batch_size} T={args.seq_len}, "
      f"{args.threads} cores, median of {args.steps} after {args.warmup} "
      "warm-up"
  )
  print(common.machine_line(machine) + "\n")
  print(
      "| framework | model | layers | median s/batch | examples/s | "
      "GFLOP/batch | student/teacher |"
  )
  print("|---|---|---|---|---|---|---|")
  layers = setup_models.model_dims(args)["layers"]
  summary = {
      "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
      "load_before": loads,
      "machine": machine,
  }
  for fw, r in results.items():
    med = {n: statistics.median(r[n]["times"]) for n in r}
    ratio = med["teacher"] / med["student"]
    summary[fw] = dict(r, median_s=med, speedup=ratio)
    for name, n_layers in (("teacher", layers), ("student", layers // 2)):
      fl = r[name]["flops"]
      fl = f"{fl / 1e9:.1f}" if fl else "n/a"
      rel = f"{ratio:.2f}x" if name == "student" else ""
      print(
          f"| {fw} | {name} | {n_layers} | {med[name]:.3f} | "
          f"{args.batch_size / med[name]:.2f} | {fl} | {rel} |"
      )
  if "jax" in summary:
    ratio = summary["jax"]["speedup"]
    print(
        f"\nstudent / teacher (jax) = {ratio:.2f}x (target >= 1.9x: "
        f"{'met' if ratio >= 1.9 else 'MISSED'})"
    )
  for fw, r in results.items():
    for n in r:
      print(f"{fw} {n} times: " + ", ".join(f"{t:.3f}" for t in r[n]["times"]))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(summary, f, indent=1)


if __name__ == "__main__":
  main()
