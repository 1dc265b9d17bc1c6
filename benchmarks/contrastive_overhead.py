"""Cost of the contrastive term: CoDIR step vs the KD-only step, by K.

Not a test. For each K in `--ks` (default 1k, 16k, 64k negatives per
example) builds the trainer's jitted step (`loop.compile_run`, as in
train_step.py) twice on the same models and batch: CoDIR (crd_weight 0.1:
projection heads, two banks of N = max(4K, 65536) slots, K label-aware
negatives per direction, momentum writes) and KD-only (crd_weight 0: no
heads, no bank; CE + KD). Overhead = (t_codir - t_kd) / t_codir, the
share of the CoDIR step spent on the contrastive part. Target (issue 7):
<= 5% at K = 16k. The KD-only step is measured once (it does not depend on
K). Everything runs in one pinned subprocess (common.py); all variants
are compiled first (setup_models.build_jax_step) and then stepped in
interleaved rounds (one step of each per round), so load from other
processes on the shared CPU hits them alike. "paired overhead" is the
median over rounds of the per-round overhead. The printed machine line
(CPU, ISA, bf16, XLA dot backend) goes with the table.

  python benchmarks/contrastive_overhead.py [--ks 1024,16384,65536]
      [--batch_size 8 --seq_len 128 --steps 5 --warmup 2] [--small]
      [--score_all_ratio R] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import common
import setup_models


def worker(args) -> dict:
  """Seconds per step of KD-only and of CoDIR at each K, interleaved.

  All steps are compiled first; then each round runs one step of every
  variant in turn, so load from other processes on the shared CPU hits all
  variants alike.
  """
  import jax  # pylint: disable=g-import-not-at-top

  from codir_jax.losses import bank_losses  # pylint: disable=g-import-not-at-top

  if args.score_all_ratio is not None:
    bank_losses.SCORE_ALL_RATIO = args.score_all_ratio
  ks = [int(k) for k in args.ks.split(",")]
  variants = {"kd_only": (0.0, 1, args.min_bank)}
  for k in ks:
    variants[str(k)] = (0.1, k, max(4 * k, args.min_bank))
  built = {}
  for name, (crd, k, n) in variants.items():
    args.num_negatives, args.bank_size = k, n
    exe, state, batch, tp, flops = setup_models.build_jax_step(
        args, crd_weight=crd
    )
    built[name] = [exe, state, batch, tp]
    variants[name] = dict(crd_weight=crd, k=k, bank_size=n, flops=flops)

  def step(b):
    exe, state, batch, tp = b
    b[1], metrics = exe(state, batch, tp)
    jax.block_until_ready((b[1], metrics))

  times = common.interleaved(
      {name: lambda b=b: step(b) for name, b in built.items()},
      steps=args.steps,
      warmup=args.warmup,
  )
  for name, t in times.items():
    variants[name]["times"] = t
  return variants


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  common.add_common_flags(parser)
  common.add_worker_flags(parser)
  parser.add_argument("--ks", default="1024,16384,65536")
  parser.add_argument(
      "--min_bank", type=int, default=65536, help="N = max(4K, min_bank)"
  )
  parser.add_argument(
      "--score_all_ratio",
      type=float,
      default=None,
      help="override bank_losses.SCORE_ALL_RATIO (0 = "
      "always gather the [B, K, P] negatives, as before "
      "issue 7)",
  )
  args = parser.parse_args()
  if args.small:
    args.batch_size, args.seq_len = min(args.batch_size, 4), 32
    args.ks, args.min_bank = "64,256", 1024
  if common.worker_main(args, {"jax": worker}):
    return
  argv = common.worker_argv(args)
  machine = common.machine_info()
  load = common.load_snapshot()
  print(f"before: {load}", flush=True)
  r = common.run_worker(__file__, "jax", argv)
  kd_run = r.pop("kd_only")
  kd_times, kd_flops = kd_run["times"], kd_run["flops"] or 0
  kd = statistics.median(kd_times)
  print(
      f"\nCoDIR vs KD-only train step (JAX), B={args.batch_size} "
      f"T={args.seq_len} P=128, {args.threads} cores, median of "
      f"{args.steps} interleaved rounds after {args.warmup} warm-up"
  )
  print(common.machine_line(machine) + "\n")
  print(
      "| K | N | KD-only s/step | CoDIR s/step | overhead % of step | "
      "paired overhead % | extra GFLOP |"
  )
  print("|---|---|---|---|---|---|---|")
  rows = []
  for k, c in r.items():
    t = statistics.median(c["times"])
    extra = ((c["flops"] or 0) - kd_flops) / 1e9
    paired = statistics.median(
        100 * (a - b) / a for a, b in zip(c["times"], kd_times)
    )
    over = 100 * (t - kd) / t
    rows.append(
        dict(
            k=int(k),
            n=c["bank_size"],
            kd_s=kd,
            codir_s=t,
            overhead_pct=over,
            paired_overhead_pct=paired,
            codir_flops=c["flops"],
            codir_times=c["times"],
        )
    )
    print(
        f"| {int(k):,} | {c['bank_size']:,} | {kd:.3f} | {t:.3f} | "
        f"{over:.1f} | {paired:.1f} | {extra:.2f} |"
    )
  print("kd-only step times: " + ", ".join(f"{t:.3f}" for t in kd_times))
  for row in rows:
    print(
        f"K={row['k']} step times: "
        + ", ".join(f"{t:.3f}" for t in row["codir_times"])
    )
  k16 = [row for row in rows if row["k"] == 16384]
  if k16:
    ok = k16[0]["overhead_pct"] <= 5.0
    print(
        f"\nK=16k overhead {k16[0]['overhead_pct']:.1f}% (target <= 5%: "
        f"{'met' if ok else 'MISSED'})"
    )
  if args.out:
    with open(args.out, "w") as f:
      json.dump(
          {
              "args": {
                  k: v for k, v in vars(args).items() if not k.startswith("_")
              },
              "load_before": load,
              "machine": machine,
              "kd_only_times": kd_times,
              "rows": rows,
          },
          f,
          indent=1,
      )


if __name__ == "__main__":
  main()
