"""Profile of one CoDIR train step: where the time goes (JAX and PyTorch).

Not a test. Explains the numbers of train_step.py and
contrastive_overhead.py. JAX: runs `--steps` steps of the trainer's
compiled step under `jax.profiler.trace` (perfetto trace), sums the
duration of every executed XLA thunk, and attributes each thunk to its HLO
instruction's source (the `source_file` / `op_name` metadata of the
optimized HLO): teacher/student encoder, memory bank, optimizer, ... and to
its kind (matmul = dot / YNNPACK fusion, loop fusion, while loop, scatter,
gather, copy). PyTorch: `torch.profiler` over the same number of reference
steps, top operators by self CPU time. Both run pinned to the same cores
in separate subprocesses (common.py) on the models and step of
setup_models.py. The printed machine line (CPU, ISA, bf16, XLA dot
backend) goes with the tables: what dominates depends on it.

  python benchmarks/profile_step.py [--framework jax|torch] [--crd_weight
      0.1] [--num_negatives 16384 --bank_size 65536] [--steps 2] [--small]
      [--trace_dir DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile

import common
import setup_models

_META = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?\s([a-z\-]+)\(")
_OPNAME = re.compile(r'op_name="([^"]*)"')
_FRAME = re.compile(r"stack_frame_id=(\d+)")


def _stack_tables(text: str) -> dict[int, tuple[str, ...]]:
  """stack_frame_id -> (file:function, ...) call chain, from the HLO footer."""
  tables, section = {
      "FileNames": {},
      "FunctionNames": {},
      "FileLocations": {},
      "StackFrames": {},
  }, None
  for line in text.splitlines():
    if line.strip() in tables:
      section = line.strip()
      continue
    m = re.match(r"^(\d+) (.*)$", line)
    if section and m:
      tables[section][int(m.group(1))] = m.group(2).strip().strip('"')
    elif line.strip() and not m:
      section = None
  field = lambda s, k: int(re.search(rf"{k}=(\d+)", s).group(1))
  chains = {}
  for fid in tables["StackFrames"]:
    chain, cur = [], fid
    for _ in range(64):
      frame = tables["StackFrames"].get(cur)
      if frame is None:
        break
      loc = tables["FileLocations"][field(frame, "file_location_id")]
      chain.append(
          tables["FileNames"][field(loc, "file_name_id")]
          + ":"
          + tables["FunctionNames"][field(loc, "function_name_id")]
      )
      parent = field(frame, "parent_frame_id")
      if parent == cur:
        break
      cur = parent
    chains[fid] = tuple(chain)
  return chains


def _origin(op_name: str, chain: tuple[str, ...]) -> str:
  """Coarse owner of an HLO instruction from its op name and source frame.

  The teacher runs outside `value_and_grad`, the student inside it, so
  `jvp(` / `transpose(jvp(` in the op name separate student forward and
  backward from the teacher forward.
  """
  text = " ".join(chain)
  if "memory_bank.py" in text:
    return "memory bank (sample/score/write)"
  if "optax" in text or "optimizer.py" in text:
    return "optimizer (AdamW, clip, norms)"
  if "transpose(jvp" in op_name:
    return "student backward (all terms)"
  if "jvp(" in op_name:
    return "student forward + losses"
  if "nnx" in text or "codir_jax/models" in text:
    return "teacher forward"
  return "other (step glue, RNG, metrics)" if text else "(no metadata)"


def _kind(name: str, opcode: str) -> str:
  if name.startswith("ynn") or opcode == "dot" or "dot" in name:
    return "matmul"
  for k in (
      "while",
      "scatter",
      "gather",
      "copy",
      "sort",
      "reduce",
      "transpose",
      "fusion",
  ):
    if k in name or k == opcode:
      return k
  return opcode or name.split(".")[0]


def jax_profile(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top

  exe, state, batch, tp, flops = setup_models.build_jax_step(
      args, crd_weight=args.crd_weight
  )
  text = exe.as_text()
  chains, info = _stack_tables(text), {}
  for line in text.splitlines():
    m = _META.match(line)
    if m:
      op, frame = _OPNAME.search(line), _FRAME.search(line)
      info[m.group(1)] = (
          m.group(2),
          op.group(1) if op else "",
          chains.get(int(frame.group(1)), ()) if frame else (),
      )
  for _ in range(2):
    state, _ = exe(state, batch, tp)
  jax.block_until_ready(state)
  trace_dir = args.trace_dir or tempfile.mkdtemp()
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(args.steps):
      state, m = exe(state, batch, tp)
      jax.block_until_ready((state, m))
  path = sorted(
      glob.glob(
          os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True
      )
  )[-1]
  with gzip.open(path) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  by_origin, by_kind, by_op = (collections.Counter() for _ in range(3))
  wall = 0.0
  for e in events:
    if e.get("ph") != "X":
      continue
    name, dur = e["name"], e.get("dur", 0) / 1e3 / args.steps  # ms/step
    if name == "ThunkExecutor::Execute (wait for completion)":
      wall += dur
    if name not in info:
      continue
    opcode, op_name, chain = info[name]
    by_origin[_origin(op_name, chain)] += dur
    by_kind[_kind(name, opcode)] += dur
    where = chain[0].split("/")[-1] if chain else ""
    by_op[f"{name} [{op_name[-60:]}] {where}"] += dur
  total = sum(by_kind.values())
  return dict(
      framework="jax",
      flops=flops,
      thunk_ms=total,
      by_origin=by_origin.most_common(),
      by_kind=by_kind.most_common(),
      top_ops=by_op.most_common(args.top),
      trace=path,
  )


def torch_profile(args) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from torch import profiler  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(args.threads)
  torch.set_num_interop_threads(1)
  model = setup_models.TorchCoDIR(args, torch.device("cpu"))
  batch = {
      k: torch.as_tensor(np.asarray(v))
      for k, v in setup_models.host_batch(
          args, setup_models.bank_label_array(args)
      ).items()
  }
  batch["labels"] = batch["labels"].long()
  batch["example_ids"] = batch["example_ids"].long()
  for _ in range(2):
    model.step(batch)
  with profiler.profile(activities=[profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(args.steps):
      model.step(batch)
  rows = sorted(prof.key_averages(), key=lambda r: -r.self_cpu_time_total)
  top = [
      (r.key, r.self_cpu_time_total / 1e3 / args.steps, r.count)
      for r in rows[: args.top]
  ]
  total = sum(r.self_cpu_time_total for r in rows) / 1e3 / args.steps
  return dict(framework="torch", self_cpu_ms=total, top_ops=top)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  common.add_common_flags(parser)
  common.add_worker_flags(parser)
  parser.add_argument("--framework", default="jax")
  parser.add_argument("--crd_weight", type=float, default=0.1)
  parser.add_argument("--num_negatives", type=int, default=1024)
  parser.add_argument("--bank_size", type=int, default=4096)
  parser.add_argument("--top", type=int, default=15)
  parser.add_argument("--trace_dir", default=None)
  args = parser.parse_args()
  args.steps = min(args.steps, 2) if args.steps == 5 else args.steps
  if args.small:
    args.batch_size, args.seq_len = min(args.batch_size, 4), 32
    args.num_negatives, args.bank_size = 64, 256
  if common.worker_main(args, {"jax": jax_profile, "torch": torch_profile}):
    return
  argv = common.worker_argv(args)
  machine = common.machine_info()
  print(f"before: {common.load_snapshot()}", flush=True)
  r = common.run_worker(__file__, args.framework, argv)
  r["machine"] = machine
  print(
      f"\n{args.framework} step profile, teacher"
      f" {'small' if args.small else args.teacher}, B={args.batch_size} "
      f"T={args.seq_len} K={args.num_negatives} N={args.bank_size} "
      f"crd_weight={args.crd_weight}, ms per step (mean of {args.steps})"
  )
  print(common.machine_line(machine) + "\n")
  if r["framework"] == "jax":
    total = r["thunk_ms"]
    for title, rows in (("source", r["by_origin"]), ("kind", r["by_kind"])):
      print(f"| {title} | ms/step | % of thunk time |\n|---|---|---|")
      for k, v in rows:
        print(f"| {k} | {v:.1f} | {100 * v / total:.1f} |")
      print()
    print("| top XLA thunks [op_name] | ms/step |\n|---|---|")
    for k, v in r["top_ops"]:
      print(f"| `{k}` | {v:.1f} |")
    print(f"\nthunk total {total:.1f} ms/step; trace: {r['trace']}")
  else:
    print("| torch op | self ms/step | calls/step |\n|---|---|---|")
    for k, v, c in r["top_ops"]:
      print(f"| {k} | {v:.1f} | {c / args.steps:.0f} |")
    print(f"\nself CPU total {r['self_cpu_ms']:.1f} ms/step")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(r, f, indent=1)


if __name__ == "__main__":
  main()
