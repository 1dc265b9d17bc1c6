"""Sharded memory bank: bytes per device and step time, 1 vs 8 devices.

Not a test. Runs its measurements in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (8 fake CPU devices
sharing the machine's cores, so times compare layouts, not hardware). For
each (K, N) it jits one "bank step" on a 1-device and on an 8-device
`data` mesh: the symmetric bank loss (two `bank_losses.bank_info_nce`
calls, student anchors vs M_t and teacher anchors vs M_s), its gradient
w.r.t. both anchor sets, and the two momentum `memory_bank.write`s, with
both banks donated. It reports the bank bytes each device holds (read from
the arrays' addressable shards, expected N*P*4/n per bank), XLA's
per-device temporary bytes, the collectives in the compiled HLO with their
largest payload, and the median step time. The bank is confirmed not
all-gathered when every shard holds N*P*4/n bytes and no collective in the
HLO moves an [N, P]-sized (or [N/n, P]-sized) array. The printed machine
line (CPU, ISA, bf16, XLA dot backend; common.py) goes with the table.

  python benchmarks/bank_devices.py [--grid 1024:65536,16384:65536,...]
      [--batch_size 8 --steps 3 --warmup 1] [--small] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics

import common

_PROJ = 128
_COLLECTIVES = (
    "all-gather",
    "all-reduce",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
)
_SHAPE = re.compile(r"([a-z]+[0-9]*)\[([0-9,]*)\]")


def _hlo_collectives(text: str) -> list[dict]:
  """Collective ops in optimized HLO text: kind and result element counts."""
  out = []
  for line in text.splitlines():
    kind = next(
        (c for c in _COLLECTIVES if re.search(rf"\s{c}(-start)?\(", line)), None
    )
    if kind is None or "=" not in line:
      continue
    result = line.split("=", 1)[1].split(kind, 1)[0]
    sizes = []
    for _, dims in _SHAPE.findall(result):
      n = 1
      for d in filter(None, dims.split(",")):
        n *= int(d)
      sizes.append(n)
    out.append(dict(kind=kind, elements=max(sizes or [0])))
  return out


def measure(k: int, n: int, devices: int, args) -> dict:
  """Compiles and times the bank step on the first `devices` devices."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from codir_jax import sharding  # pylint: disable=g-import-not-at-top
  from codir_jax.losses import bank_losses  # pylint: disable=g-import-not-at-top
  from codir_jax.losses import memory_bank  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh([("data", -1)], devices=jax.devices()[:devices])
  b = args.batch_size
  key = jax.random.PRNGKey(0)
  labels = jax.random.randint(jax.random.fold_in(key, 1), (n,), 0, 2)
  bank_sh = memory_bank.shardings(mesh)
  rep = sharding.replicated(mesh)

  def init(key):
    return tuple(
        memory_bank.init(
            jax.random.fold_in(key, i),
            num_slots=n,
            dim=_PROJ,
            labels=labels,
            all_valid=True,
            pad_to_multiple=devices,
        )
        for i in range(2)
    )

  banks = jax.jit(init, out_shardings=(bank_sh, bank_sh))(key)
  z = jax.random.normal(jax.random.fold_in(key, 2), (2, b, _PROJ))
  z = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
  ids = jnp.arange(b, dtype=jnp.int32) * (n // b)
  q_labels = labels[ids]

  def bank_step(bank_s, bank_t, z_s, z_t, rng, ids, q_labels):
    k1, k2 = jax.random.split(rng)
    common = dict(
        query_ids=ids, query_labels=q_labels, num_negatives=k, mesh=mesh
    )

    def loss_fn(z_s, z_t):
      l_s = bank_losses.bank_info_nce(
          queries=z_s, positives=z_t, bank=bank_t, rng=k1, **common
      )
      l_t = bank_losses.bank_info_nce(
          queries=z_t, positives=z_s, bank=bank_s, rng=k2, **common
      )
      return jnp.mean(0.5 * (l_s + l_t))

    loss, grads = jax.value_and_grad(loss_fn, argnums=(0, 1))(z_s, z_t)
    bank_s = memory_bank.write(bank_s, ids=ids, vectors=z_s, mesh=mesh)
    bank_t = memory_bank.write(bank_t, ids=ids, vectors=z_t, mesh=mesh)
    return bank_s, bank_t, loss, grads

  step = jax.jit(
      bank_step,
      in_shardings=(bank_sh, bank_sh) + (rep,) * 5,
      out_shardings=(bank_sh, bank_sh, rep, rep),
      donate_argnums=(0, 1),
  )
  call_args = (*banks, z[0], z[1], key, ids, q_labels)
  exe = step.lower(*call_args).compile()
  colls = _hlo_collectives(exe.as_text())
  mem = exe.memory_analysis()
  shard_bytes = sorted(
      {s.data.nbytes for s in banks[0].vectors.addressable_shards}
  )
  rngs = iter(
      [
          jax.random.fold_in(key, 100 + i)
          for i in range(args.warmup + args.steps)
      ]
  )
  carry = list(banks)  # [bank_s, bank_t], donated and replaced each step.

  def one_step():
    bank_s, bank_t, loss, grads = exe(
        *carry, z[0], z[1], next(rngs), ids, q_labels
    )
    carry[:] = [bank_s, bank_t]
    jax.block_until_ready((carry, loss, grads))
    return loss

  times, loss = common.time_calls(
      one_step, steps=args.steps, warmup=args.warmup
  )
  largest = max((c["elements"] for c in colls), default=0)
  return dict(
      k=k,
      n=n,
      devices=devices,
      times=times,
      median_s=statistics.median(times),
      bank_bytes_per_device=shard_bytes,
      expected_bytes_per_device=n * _PROJ * 4 // devices,
      temp_bytes_per_device=getattr(mem, "temp_size_in_bytes", None),
      collectives=sorted({c["kind"] for c in colls}),
      num_collectives=len(colls),
      largest_collective_elements=largest,
      bank_gathered=largest >= (n // devices) * _PROJ,
      loss=float(loss),
  )


def worker(args) -> list[dict]:
  import jax  # pylint: disable=g-import-not-at-top

  if jax.device_count() < 8:
    raise RuntimeError(f"need 8 devices, got {jax.devices()}")
  rows = []
  for pair in args.grid.split(","):
    k, n = (int(x) for x in pair.split(":"))
    for d in (1, 8):
      rows.append(measure(k, n, d, args))
      print(
          f"  K={k} N={n} devices={d}: {rows[-1]['median_s']:.3f} s", flush=True
      )
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
      "--grid",
      default="1024:65536,16384:65536,16384:262144,"
      "65536:262144,1024:1048576",
      help="comma-separated K:N pairs",
  )
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--small", action="store_true")
  common.add_worker_flags(parser)
  args = parser.parse_args()
  if args.small:
    args.grid = "64:1024,256:4096"
  if common.worker_main(args, {"cpu8": worker}, pin=False):
    return
  load = common.load_snapshot()
  print(f"before: {load}", flush=True)
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      XLA_FLAGS=(
          os.environ.get("XLA_FLAGS", "")
          + " --xla_force_host_platform_device_count=8"
      ).strip(),
  )
  machine = common.machine_info(env=env)
  rows = common.run_worker(__file__, "cpu8", common.worker_argv(args), env=env)
  print(
      f"\nSharded bank step (2 x bank_info_nce + grad + 2 x write), "
      f"B={args.batch_size} P={_PROJ}, 8 fake CPU devices on the shared "
      f"cores, median of {args.steps} after {args.warmup} warm-up"
  )
  print(common.machine_line(machine) + "\n")
  print(
      "| K | N | devices | bank MB/device (one bank) | expected N*P*4/n "
      "MB | temp MB/device | largest collective (elements) | "
      "bank gathered? | s/step |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    got = "/".join(f"{x / 2**20:.2f}" for x in r["bank_bytes_per_device"])
    temp = r["temp_bytes_per_device"]
    temp = "n/a" if temp is None else f"{temp / 2**20:.1f}"
    print(
        f"| {r['k']:,} | {r['n']:,} | {r['devices']} | {got} | "
        f"{r['expected_bytes_per_device'] / 2**20:.2f} | {temp} | "
        f"{r['largest_collective_elements']:,} "
        f"({', '.join(r['collectives']) or 'none'}) | "
        f"{'YES' if r['bank_gathered'] else 'no'} | {r['median_s']:.3f} |"
    )
  ok = all(
      r["bank_bytes_per_device"] == [r["expected_bytes_per_device"]]
      and not r["bank_gathered"]
      for r in rows
  )
  print(
      f"\nbank never all-gathered, N*P*4/n bytes per device: "
      f"{'confirmed' if ok else 'NOT confirmed'}"
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
              "rows": rows,
              "confirmed": ok,
          },
          f,
          indent=1,
      )


if __name__ == "__main__":
  main()
